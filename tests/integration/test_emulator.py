"""The MEMS firmware emulator on a real pty, driven through pyserial with the wire protocol."""
from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import serial

from controller.protocol import common, framing, mems
from firmware_sim.mems.emulator import MemsEmulator
from firmware_sim.mems.physics import MemsParams, MemsStand
from proc_util import pty_server


class Link:
    """A minimal edge side: numbered commands, replies matched by seq, frames collected."""

    def __init__(self, path: str) -> None:
        self.port = serial.Serial(path, timeout=0.02)
        self.dec = framing.FrameDecoder(mems.MEMS)
        self.seq = 0
        self.frames: list[mems.Frame] = []
        self.replies: list[framing.Message] = []
        self.log: list[framing.Message] = []  # everything received, in order

    def send(self, msg: framing.Message) -> int:
        seq, self.seq = self.seq, self.seq + 1
        self.port.write(framing.encode(msg, seq))
        return seq

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._read()

    def _read(self) -> None:
        for _, m in self.dec.feed(self.port.read(max(1, self.port.in_waiting))):
            self.log.append(m)
            (self.frames if isinstance(m, mems.Frame) else self.replies).append(m)

    def cmd(self, msg: framing.Message, timeout: float = 2.0) -> framing.Message:
        seq = self.send(msg)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self._read()
            for i, r in enumerate(self.replies):
                if getattr(r, "seq_acked", seq) == seq:
                    return self.replies.pop(i)
        raise TimeoutError(f"no reply to {msg}")


@pytest.fixture
def emu_factory() -> Iterator:
    running: list[tuple[MemsEmulator, threading.Event, threading.Thread, Link]] = []

    def start(**kw) -> tuple[MemsEmulator, Link]:
        emu = MemsEmulator(MemsStand(kw.pop("params", MemsParams())), **kw)
        path, stop = emu.open(), threading.Event()
        th = threading.Thread(target=emu.run, args=(stop,), daemon=True)
        th.start()
        link = Link(path)
        running.append((emu, stop, th, link))
        return emu, link

    yield start
    for emu, stop, th, link in running:
        stop.set()
        th.join(2)
        link.port.close()
        emu.close()


def test_identify_and_status(emu_factory) -> None:
    _, link = emu_factory(seed=1)
    assert link.cmd(common.Identify()) == common.IdentifyReply(MemsEmulator.DEVICE, MemsEmulator.FW_VERSION,
                                                               framing.PROTOCOL_VERSION)
    st = link.cmd(common.StatusRequest())
    assert isinstance(st, common.Status) and not st.streaming and st.rx_ok == 2 and st.frames_dropped == 0


def test_stream_runs_at_the_frame_rate(emu_factory) -> None:
    _, link = emu_factory(seed=1)
    assert link.cmd(common.StreamStart()) == common.Ack(0)
    link.frames.clear()
    t0 = time.monotonic()
    link.pump(0.5)
    elapsed = time.monotonic() - t0
    n = len(link.frames)
    assert 0.8 * 120 * elapsed <= n <= 1.2 * 120 * elapsed + 2, n
    idx = [f.frame_index for f in link.frames]
    assert idx == list(range(idx[0], idx[0] + n))
    assert np.allclose(np.diff([f.t_us for f in link.frames]), 1e6 / 120, atol=1)
    assert link.cmd(common.StreamStop()) == common.Ack(1)
    link.pump(0.05)
    link.frames.clear()
    link.pump(0.1)
    assert link.frames == []


def test_faster_than_real_time(emu_factory) -> None:
    _, link = emu_factory(seed=1, speed=3.0)
    link.cmd(common.StreamStart())
    link.frames.clear()
    t0 = time.monotonic()
    link.pump(0.3)
    rate = len(link.frames) / (time.monotonic() - t0)
    assert 0.6 * 360 <= rate <= 1.15 * 360, rate  # loose below (a loaded CI box); never bursts above


def _settled(link: Link, seconds: float = 0.3) -> np.ndarray:
    link.frames.clear()
    link.pump(seconds)
    return np.array([[f.x_px, f.y_px] for f in link.frames[-10:]]).mean(axis=0)


def test_voltages_move_the_spot_and_out_of_range_is_refused(emu_factory) -> None:
    emu, link = emu_factory(seed=2)
    params = emu.stand.params
    link.cmd(common.StreamStart())
    assert np.all(np.abs(_settled(link)) < 1.0)
    assert link.cmd(mems.SetVoltages(1000.0, -500.0)) == common.Ack(1)
    g, c = np.array(params.gain_px_per_v), params.coupling
    want = (np.array([1000.0, -500.0]) @ np.array([[1, c], [c, 1]])) * g
    moved = _settled(link)
    assert np.allclose(moved, want, atol=0.5), (moved, want)
    # refused as the device would: Nak with a reason, counter up, mirror keeps its command
    assert link.cmd(mems.SetVoltages(params.v_limit * 1.01, 0.0)) == common.Nak(2, common.ErrorCode.OUT_OF_RANGE)
    assert link.cmd(mems.SetVoltages(math.nan, 0.0)) == common.Nak(3, common.ErrorCode.NOT_FINITE)
    assert link.cmd(mems.Frame(0, 0, 0.0, 0.0)) == common.Nak(4, common.ErrorCode.UNSUPPORTED)
    assert np.allclose(_settled(link), want, atol=0.5)
    assert link.cmd(common.StatusRequest()).cmd_rejected == 3


def test_disturbance_program_and_its_validation(emu_factory) -> None:
    _, link = emu_factory(seed=3, speed=4.0)
    link.cmd(common.StreamStart())
    D = mems.Disturbance
    assert link.cmd(mems.SetDisturbance(D.STEPS, 1, 0.0, 100, 1, 300)) == common.Nak(1, common.ErrorCode.OUT_OF_RANGE)
    assert link.cmd(mems.SetDisturbance(D.STEPS, 1, 5.0, 100, 1, 50)) == common.Nak(2, common.ErrorCode.BAD_PARAM)
    assert link.cmd(mems.SetDisturbance(9, 1, 5.0)) == common.Nak(3, common.ErrorCode.BAD_PARAM)
    assert link.cmd(mems.SetDisturbance(D.SINE, 1, 5.0, 10, math.inf, 2)) == common.Nak(4, common.ErrorCode.NOT_FINITE)
    # steps of exactly 100 px every 0.25 s (device time): the spot lands on multiples of 100 px
    assert link.cmd(mems.SetDisturbance(D.STEPS, 1, 5.0, 100, 0.25, 300)) == common.Ack(5)
    link.frames.clear()
    link.pump(0.4)
    xy = np.array([[f.x_px, f.y_px] for f in link.frames])
    assert np.max(np.abs(xy)) > 90
    assert np.abs(xy[-1] - 100 * np.round(xy[-1] / 100)).max() < 2
    assert link.cmd(mems.SetDisturbance(D.NONE, 0)) == common.Ack(6)
    assert np.all(np.abs(_settled(link, 0.1)) < 1.5)


def test_reset_is_reproducible(emu_factory) -> None:
    _, link = emu_factory(seed=0, speed=2.0)
    link.cmd(common.StreamStart())

    def run(seed: int) -> list[tuple[float, float]]:
        ack = link.cmd(common.Reset(seed))
        link.pump(0.1)
        after = link.log[len(link.log) - link.log[::-1].index(ack):]  # frames after the Ack: the new run
        assert [f.frame_index for f in after[:8]] == list(range(8))
        return [(f.x_px, f.y_px) for f in after[:8]]

    first = run(5)
    assert run(5) == first and run(6) != first


def test_overflow_when_the_edge_stops_reading(emu_factory) -> None:
    emu, link = emu_factory(seed=4, speed=2.0, tx_buffer=1024, rx_buffer=1024)
    link.cmd(common.StreamStart())
    link.pump(0.1)
    time.sleep(0.8)  # the edge stalls: ~190 frames (~6 KB) produced, 2 KiB of buffers
    stale = link.port.read(link.port.in_waiting)
    assert len(stale) <= 1024 + 64  # what waited in the pty is bounded by the modelled RX buffer
    link.dec.feed(stale)
    link.pump(0.2)
    assert link.dec.seq_gaps > 50
    live = link.frames[-20:]  # resynchronised: consecutive frames again
    assert [f.frame_index for f in live] == list(range(live[0].frame_index, live[0].frame_index + 20))
    link.cmd(common.StreamStop())
    link.pump(0.05)
    st = link.cmd(common.StatusRequest())
    assert st.frames_dropped == link.dec.seq_gaps  # every gap the edge saw is a frame the device dropped
    assert link.dec.rejected == 0  # frames are dropped whole: the stream never tears


def test_garbage_from_the_edge_is_counted_and_commands_still_work(emu_factory) -> None:
    _, link = emu_factory(seed=5)
    bad = bytearray(framing.encode(mems.SetVoltages(1.0, 1.0), 50))
    bad[5] ^= 0xFF
    link.port.write(b"\xde\xad\xbe\xef" * 20 + b"\x00" + bytes(bad) + framing.encode(common.StatusRequest(), 51)[:-3] + b"\x00")
    link.seq = 60
    assert link.cmd(common.Identify()).device == MemsEmulator.DEVICE
    st = link.cmd(common.StatusRequest())
    assert st.rx_garbage + st.rx_bad_crc + st.rx_truncated >= 3 and st.rx_ok == 2
    assert st.rx_seq_gaps == 0 and st.cmd_rejected == 0


def test_fault_hooks_inject_and_reboot(emu_factory) -> None:
    emu, link = emu_factory(seed=6, speed=2.0)
    link.cmd(common.StreamStart())
    link.pump(0.1)
    emu.inject(b"\x07garbage")  # a torn frame: merges with the next one, both rejected
    link.pump(0.1)
    assert link.dec.rejected == 1 and link.dec.seq_gaps == 1
    emu.stall(0.3)  # firmware hangs: no frames, then it resumes without a burst and counts the periods
    link.pump(0.1)
    link.frames.clear()
    link.pump(0.15)
    assert link.frames == []
    link.pump(0.3)
    assert 0 < len(link.frames) < 0.4 * 240
    assert link.cmd(common.StatusRequest()).overruns >= 0.2 * 240
    emu.reboot()
    link.pump(0.1)
    link.dec.reset_sequence()
    reply = link.cmd(common.StatusRequest())
    assert reply.streaming is False and reply.rx_ok == 1 and reply.frames_sent == 0


def test_cli_prints_path_serves_and_stops_on_sigterm() -> None:
    with pty_server([sys.executable, "-m", "firmware_sim.cli", "--seed", "1", "--speed", "2"]) as path:
        link = Link(path)
        assert link.cmd(common.Identify()).device == MemsEmulator.DEVICE
        link.cmd(common.StreamStart())
        link.pump(0.2)
        assert len(link.frames) > 20
        link.port.close()


def test_cli_rejects_bad_options() -> None:
    r = subprocess.run([sys.executable, "-m", "firmware_sim.cli", "--speed", "0"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0 and "speed" in r.stderr
