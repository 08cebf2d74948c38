"""Host-link codec: round trips, authentication, replay window, freshness, persisted state, keyfile."""
from __future__ import annotations

import hashlib
import hmac
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.link.auth import (
    HEADER, TAG_LEN, Ack, AxisGains, BadTag, BadVersion, Gains, HostLinkError, Keyring, KeyringError,
    Malformed, Ping, Pong, Replayed, ReplayGuard, SetGains, SetTarget, Signer, Stale, Telemetry, UnknownKey,
    UnknownType, decode, encode, load_keyring, write_keyfile,
)

KEY = bytes(range(32))
RING = Keyring({1: KEY, 2: bytes(32 - i for i in range(32))})
T0 = 1_700_000_000_000_000  # µs


class FakeClock:
    def __init__(self, t: int = T0) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


GAINS = Gains(AxisGains(10.0, 5.0, 0.0), AxisGains(16.0, 6.8, 2.5))
MESSAGES = [
    SetGains(GAINS), SetTarget(12.5, -3.0), Ping(7), Pong(7), Ack(99, GAINS, True), Ack(3),
    Telemetry(41, 123_456_789, 1.5, -2.5, 0.0, 0.0, 0.3, -0.1, GAINS),
]


def dgram(msg, seq=1, ts=T0, key_id=1, key=KEY):
    return encode(msg, key_id, key, seq, ts)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    env = decode(dgram(msg, seq=5), RING, ReplayGuard(clock=FakeClock()))
    assert (env.msg, env.seq, env.key_id, env.timestamp_us) == (msg, 5, 1, T0)


def test_gains_rows_match_pid_layout():
    assert GAINS.rows() == ((10.0, 5.0, 0.0), (16.0, 6.8, 2.5))
    assert Gains.from_rows(GAINS.rows()) == GAINS


def test_tampering_any_byte_is_detected():
    d = dgram(SetGains(GAINS))
    for i in range(len(d)):
        bad = bytearray(d)
        bad[i] ^= 0x01
        with pytest.raises(HostLinkError) as e:
            decode(bytes(bad), RING)
        # header fields that route the datagram fail first; everything else fails authentication
        assert e.value.kind in ("bad_tag", "malformed", "bad_version", "unknown_key"), i
        if i >= HEADER.size:
            assert e.value.kind == "bad_tag", i


def test_wrong_key_and_unknown_key():
    with pytest.raises(BadTag):
        decode(dgram(Ping(1), key=bytes(32)), RING)
    with pytest.raises(UnknownKey):
        decode(dgram(Ping(1), key_id=9), RING)
    assert decode(dgram(Ping(1), key_id=2, key=RING.keys[2]), RING).msg == Ping(1)


def test_header_checks():
    d = bytearray(dgram(Ping(1)))
    d[2] = 2  # version
    with pytest.raises(BadVersion):
        decode(bytes(d), RING)
    with pytest.raises(Malformed):
        decode(b"\x00" * 10, RING)
    with pytest.raises(Malformed):
        decode(dgram(Ping(1))[:-1], RING)


def test_direction_and_unknown_type_are_refused_after_authentication():
    g = ReplayGuard(clock=FakeClock())
    with pytest.raises(UnknownType):
        decode(dgram(Pong(1), seq=10_000), RING, g, expect="to_edge")  # reflected edge→host message
    decode(dgram(Ping(1), seq=5), RING, g, expect="to_edge")  # its seq (the other end's) moved no window
    head = HEADER.pack(b"ET", 1, 0x7E, 1, 1, T0, 2)
    with pytest.raises(UnknownType):
        decode(head + b"{}" + hmac.digest(KEY, head + b"{}", hashlib.sha256), RING)


@pytest.mark.parametrize("body", [b"{}", b'{"x_px":1}', b'{"x_px":"1","y_px":2}', b'{"x_px":NaN,"y_px":2}',
                                  b'{"x_px":1,"y_px":2,"z":3}', b"[" * 1000, b"\xff\xfe", b"not json"])
def test_malformed_authenticated_body(body):
    head = HEADER.pack(b"ET", 1, 0x02, 1, 1, T0, len(body))  # SetTarget
    with pytest.raises(Malformed):
        decode(head + body + hmac.digest(KEY, head + body, hashlib.sha256), RING)


def test_duplicate_is_replayed_and_refused_packets_do_not_advance_the_window():
    g = ReplayGuard(clock=FakeClock())
    d = dgram(Ping(1), seq=10)
    decode(d, RING, g)
    with pytest.raises(Replayed):
        decode(d, RING, g)
    with pytest.raises(BadTag):
        decode(dgram(Ping(1), seq=11)[:-TAG_LEN] + b"x" * TAG_LEN, RING, g)
    decode(dgram(Ping(1), seq=11), RING, g)


def test_reordering_inside_window_accepted_outside_replayed():
    g = ReplayGuard(window=64, clock=FakeClock())
    for seq in (1000, 1003, 1001, 1002, 1063):  # out of order, all within 64 of the newest
        decode(dgram(Ping(seq), seq=seq), RING, g)
    decode(dgram(Ping(0), seq=1004), RING, g)  # never seen, offset 59
    with pytest.raises(Replayed):
        decode(dgram(Ping(0), seq=1001), RING, g)  # seen
    with pytest.raises(Replayed):
        decode(dgram(Ping(0), seq=999), RING, g)  # 64 behind 1063: outside the window
    decode(dgram(Ping(0), seq=1063 + 200), RING, g)  # a big jump forward is fine
    with pytest.raises(Replayed):
        decode(dgram(Ping(0), seq=1063), RING, g)


def test_links_are_separate_per_key_id():
    g = ReplayGuard(clock=FakeClock())
    decode(dgram(Ping(1), seq=500), RING, g)
    decode(dgram(Ping(1), seq=5, key_id=2, key=RING.keys[2]), RING, g)


def test_stale_timestamps():
    clock = FakeClock()
    g = ReplayGuard(max_skew_s=5.0, clock=clock)
    clock.t = T0 + 10_000_000
    with pytest.raises(Stale):
        decode(dgram(Ping(1), ts=T0 + 4_000_000), RING, g)  # 6 s old
    with pytest.raises(Stale):
        decode(dgram(Ping(1), ts=clock.t + 6_000_000), RING, g)  # 6 s in the future
    decode(dgram(Ping(1), ts=clock.t - 4_000_000), RING, g)
    with pytest.raises(Stale):  # within skew but stamped before the guard existed (before a restart)
        decode(dgram(Ping(1), seq=2, ts=T0 - 1), RING, g)


def test_restart_with_persisted_state_rejects_old_packets(tmp_path):
    state = tmp_path / "state.json"
    clock = FakeClock()
    g = ReplayGuard(clock=clock)
    old = [dgram(Ping(i), seq=100 + i, ts=T0 + i) for i in range(5)]
    for d in old[:3]:
        decode(d, RING, g)
    g.save(state)
    assert not g.dirty
    clock.t += 1_000_000  # restart one second later
    g2 = ReplayGuard(clock=clock)
    g2.load(state)
    for d in old:  # accepted ones and ones never delivered: all from before the restart
        with pytest.raises((Replayed, Stale)):
            decode(d, RING, g2)
    with pytest.raises(Replayed):  # even if the clock were wrong, the seq floor holds
        g2.check(1, 101, clock.t)
    decode(dgram(Ping(9), seq=103, ts=clock.t), RING, g2)  # new packets with higher seqs pass


def test_corrupt_state_is_a_clear_error(tmp_path):
    p = tmp_path / "state.json"
    p.write_text("{nope")
    with pytest.raises(ValueError, match="corrupt host-link replay state"):
        ReplayGuard().load(p)
    ReplayGuard().load(tmp_path / "missing.json")  # first start


def test_signer_seqs_survive_restart():
    a = Signer(RING, 1, clock=FakeClock(T0))
    a.seal(Ping(1))
    b = Signer(RING, 1, clock=FakeClock(T0 + 1))  # a restart a microsecond later still counts up
    b.seal(Ping(1))
    assert b.last_seq > a.last_seq
    with pytest.raises(KeyringError):
        Signer(RING, 5)


def test_keyfile_permissions_and_format(tmp_path):
    p = tmp_path / "keys"
    ring = write_keyfile(p, (1, 3))
    assert oct(p.stat().st_mode & 0o777) == "0o600"
    assert load_keyring(p) == ring and ring.newest == 3
    for mode in (0o644, 0o640, 0o604):
        os.chmod(p, mode)
        with pytest.raises(KeyringError, match="chmod 600"):
            load_keyring(p)
    bad = tmp_path / "bad"
    for text, match in [("1:zz\n", "expected `id:hexkey`"), ("1:" + "00" * 8, "at least 16 bytes"),
                        ("# only comments\n", "empty"), (f"1:{KEY.hex()}\n1:{KEY.hex()}", "duplicate")]:
        bad.write_text(text)
        os.chmod(bad, 0o600)
        with pytest.raises(KeyringError, match=match):
            load_keyring(bad)
    with pytest.raises(KeyringError, match="cannot read"):
        load_keyring(tmp_path / "missing")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.integers(0, 400), st.binary(min_size=1, max_size=8))
def test_fuzz_decode_raises_only_hostlink_errors(junk, pos, patch):
    g = ReplayGuard(clock=FakeClock())
    for d in (junk, dgram(SetGains(GAINS))[:pos] + patch + dgram(SetGains(GAINS))[pos + len(patch):]):
        try:
            decode(d, RING, g, expect="to_edge")
        except HostLinkError as e:
            assert e.kind in ("malformed", "bad_version", "unknown_type", "bad_tag", "unknown_key", "replayed", "stale")
