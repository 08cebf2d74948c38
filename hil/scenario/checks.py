"""Scenario assertions, evaluated after the run from what the edge recorded (every tick, every event),
what the host saw, the fault log and the daemon's metrics. Edge, host and harness share one
monotonic clock (same machine), so fault times and tick times compare directly.

Each check is ``fn(data, check) -> (ok, detail)``; register with ``@check("name")``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from controller.link.auth import DROP_KINDS
from hil.scenario.model import CHECKS, STALE, Check, RunData, check


def evaluate(data: RunData) -> list[dict[str, Any]]:
    out = []
    for c in data.scenario.checks:
        try:
            ok, detail = CHECKS[c.check](data, c)
        except (KeyError, IndexError, ValueError) as e:  # missing data is a failed check, not a crash
            ok, detail = False, f"could not evaluate: {type(e).__name__}: {e}"
        out.append({"check": c.check, "ok": bool(ok), "detail": detail})
    return out


def _s(ns: float) -> str:
    return f"{ns / 1e9:.3f} s"


@check("loop_alive")
def loop_alive(d: RunData, c: Check) -> tuple[bool, str]:
    """The daemon is running at the end and no session ever paused longer than ``max_gap_s``."""
    t, s = d.ticks["t_ns"], d.ticks["session"]
    gaps = np.diff(t)[np.diff(s) == 0]
    worst = float(gaps.max()) if gaps.size else float("inf")
    return d.daemon_alive and worst <= c.max_gap_s * 1e9, \
        f"alive={d.daemon_alive}, {t.size} ticks, longest pause {_s(worst)}"


@check("commands_within_limits")
def commands_within_limits(d: RunData, c: Check) -> tuple[bool, str]:
    lim = d.cfg.device.voltage_limits_v
    cx, cy = d.ticks["cmd_x"], d.ticks["cmd_y"]
    ok = np.isfinite(cx) & np.isfinite(cy) & (cx >= lim.x.min) & (cx <= lim.x.max) & (cy >= lim.y.min) & (cy <= lim.y.max)
    ratio = max(float(np.max(np.abs(cx))) / max(abs(lim.x.min), lim.x.max),
                float(np.max(np.abs(cy))) / max(abs(lim.y.min), lim.y.max)) if cx.size else 0.0
    return bool(ok.all()) and cx.size > 0, f"{int((~ok).sum())} of {cx.size} ticks outside; max |cmd|/limit {ratio:.3f}"


@check("overruns_bounded")
def overruns_bounded(d: RunData, c: Check) -> tuple[bool, str]:
    """Overruns are rare, short (never more than ``max_missed_run`` periods skipped at once) and reported
    by the daemon's metrics (scraped up to a second before the end, so it may lag the recorder a little)."""
    n, ticks = d.overruns(), d.ticks["t_ns"].size
    same = np.diff(d.ticks["session"]) == 0
    longest = int(np.max(np.diff(d.ticks["idx"])[same], initial=1)) - 1
    reported = d.edge.get("overruns", -1.0)
    frac = n / max(ticks, 1)
    ok = frac <= c.max_overrun_fraction and longest <= c.max_missed_run and 0.8 * n - 5 <= reported <= n
    return ok, f"{n} overruns in {ticks} ticks ({frac:.2%}), longest skip {longest} periods; daemon reports {reported:g}"


@check("safe_when_stale")
def safe_when_stale(d: RunData, c: Check) -> tuple[bool, str]:
    """Every tick without a fresh frame wrote exactly the configured safe command."""
    stale = (d.ticks["flags"].astype(int) & STALE) > 0
    safe = d.cfg.device.safe_voltage_v
    bad = stale & ((d.ticks["cmd_x"] != safe.x) | (d.ticks["cmd_y"] != safe.y))
    return not bad.any(), f"{int(stale.sum())} stale ticks, {int(bad.sum())} not at the safe command"


@check("link_loss_baseline")
def link_loss_baseline(d: RunData, c: Check) -> tuple[bool, str]:
    """Per partition: gains held until the silence timeout, then the baseline until the link is back."""
    timeout = d.cfg.hostlink.silence_timeout_s * 1e9
    notes, ok = [], True
    parts = d.faults_of("net.partition")
    for f in parts:
        s, e = f["t_ns"], f["end_ns"]
        lost = d.link_events(False, s)
        if e - s < timeout:
            early = [t for t in lost if t < e]
            ok &= not early
            notes.append(f"{_s(e - s)} partition under the timeout: {'no' if not early else 'a'} loss")
            continue
        if not lost:
            return False, f"partition at {_s(s - d.t0_ns)}: the link was never declared lost"
        t_lost = lost[0]
        held = d.gains(d.window(s, t_lost - 20e6))
        base = d.gains(d.window(t_lost + 50e6, e))
        on_time = timeout - 0.3e9 <= t_lost - s <= timeout + 1.0e9
        held_ok = held.size > 0 and bool(np.all(held == held[0]))
        base_ok = base.size > 0 and bool(np.all(base == d.baseline()))
        ok &= on_time and held_ok and base_ok
        notes.append(f"lost after {_s(t_lost - s)} (timeout {_s(timeout)}), gains held {held_ok} over {len(held)} "
                     f"ticks, baseline {base_ok} over {len(base)} ticks")
    return ok and bool(parts), "; ".join(notes) or "no partition in the scenario"


@check("link_resumes")
def link_resumes(d: RunData, c: Check) -> tuple[bool, str]:
    """After each partition: the link is up again and telemetry reaches the host within ``recover_s``."""
    notes, ok = [], True
    for f in d.faults_of("net.partition"):
        e = f["end_ns"]
        lost = [t for t in d.link_events(False, f["t_ns"]) if t < e]
        up = d.link_events(True, lost[0]) if lost else []
        tel = d.telemetry_ns[d.telemetry_ns >= e]
        up_ok = not lost or any(t <= e + c.recover_s * 1e9 for t in up)
        tel_ok = tel.size > 0 and tel[0] - e <= c.recover_s * 1e9
        ok &= up_ok and tel_ok
        notes.append(f"link up {up_ok}, telemetry after {_s(tel[0] - e) if tel.size else 'never'}")
    return ok and bool(notes), "; ".join(notes) or "no partition in the scenario"


@check("device_recovers")
def device_recovers(d: RunData, c: Check) -> tuple[bool, str]:
    """Within ``recover_s`` of the end of each unplug / reboot / stall the device is back and fresh frames
    drive the loop again; an unplug or a reboot (the device falls silent mid-stream) is seen as a disconnect
    and a reconnect within that time, and the fresh frames count from the reconnect."""
    notes, ok = [], True
    fresh_t = d.ticks["t_ns"][(d.ticks["flags"].astype(int) & STALE) == 0]
    for f in d.faults_of("serial.unplug", "serial.reboot", "serial.stall"):
        s, e = f["t_ns"], f["end_ns"]
        since, line, cycled = e + 0.1e9, f"{f['kind']} at {_s(s - d.t0_ns)}", True
        if f["kind"] != "serial.stall":
            down = d.device_events(False, s)[:1]
            up = [t for t in d.device_events(True, s) if down and down[0] < t <= e + c.recover_s * 1e9][:1]
            cycled = bool(up)
            since = max([since, *up])
            line += f": lost after {_s(down[0] - s) if down else 'never'}, back after {_s(up[0] - e) if up else 'never'}"
        fresh = fresh_t[fresh_t > since]
        back = cycled and fresh.size > 0 and fresh[0] - e <= c.recover_s * 1e9
        ok &= back
        notes.append(line + f"; fresh frames after {_s(fresh[0] - e) if fresh.size else 'never'}")
    return ok and bool(notes), "; ".join(notes) or "no serial fault in the scenario"


@check("stabilised_at_end")
def stabilised_at_end(d: RunData, c: Check) -> tuple[bool, str]:
    """The last 0.5 s of the final session: fresh frames, spot within ``band_px`` of the target."""
    last = d.ticks["session"] == d.ticks["session"][-1]
    m = last & d.window(d.ticks["t_ns"][last][-1] - 0.5e9, float("inf"))
    err = np.hypot(d.ticks["x"][m] - d.ticks["target_x"][m], d.ticks["y"][m] - d.ticks["target_y"][m])
    worst = float(np.nanmax(err)) if np.isfinite(err).any() else float("inf")
    fresh = bool(np.all((d.ticks["flags"][m].astype(int) & STALE) == 0))
    return fresh and worst <= c.band_px, f"fresh {fresh}, max error {worst:.2f} px over {int(m.sum())} ticks"


@check("no_traceback")
def no_traceback(d: RunData, c: Check) -> tuple[bool, str]:
    n = d.daemon_log.count("Traceback")
    return n == 0, f"{n} tracebacks in daemon.log"


@check("serial_rejects_counted")
def serial_rejects_counted(d: RunData, c: Check) -> tuple[bool, str]:
    """Garbage and torn frames were rejected by the decoder (at least one per fault) and counted."""
    need = len(d.faults_of("serial.garbage", "serial.truncate"))
    got = d.edge.get("serial_rejected", 0.0)
    return need > 0 and got >= need, f"{need} faults, daemon counted {got:g} rejected frames"


@check("net_faults_counted")
def net_faults_counted(d: RunData, c: Check) -> tuple[bool, str]:
    """Every corrupted, truncated or duplicated datagram that reached the edge was dropped and counted,
    and every host command was acknowledged in the end (the last target is the one in force)."""
    dropped = sum(d.edge.get(k, 0.0) for k in DROP_KINDS)
    from_proxy = d.edge.get("proxy_damaged_to_edge", 0.0)
    acked = all(h.get("acked", True) for h in d.host)
    targets = [h for h in d.host if h["action"] == "set_target"]
    final_ok = not targets or (d.ticks["target_x"][-1] == targets[-1]["x_px"]
                               and d.ticks["target_y"][-1] == targets[-1]["y_px"])
    return dropped >= from_proxy and from_proxy > 0 and acked and final_ok, \
        f"proxy damaged {from_proxy:g} datagrams to the edge, edge dropped {dropped:g}; all acked {acked}; final target {final_ok}"


@check("security_drops_counted")
def security_drops_counted(d: RunData, c: Check) -> tuple[bool, str]:
    """Replayed, forged and stale packets were dropped and counted by kind, and none took effect."""
    notes = [f"{k}: sent {n}, counted {d.edge.get(k, 0):g}" for k, n in d.sent.items()]
    counted = all(d.edge.get(k, 0) >= n for k, n in d.sent.items())
    applied = [x for x in d.forged_targets if np.any(d.ticks["target_x"] == x)]
    return counted and bool(d.sent) and not applied, "; ".join(notes) + f"; forged targets applied: {applied}"


@check("gains_never_change")
def gains_never_change(d: RunData, c: Check) -> tuple[bool, str]:
    """Every tick of every session ran the baseline gains (for scenarios whose host sets none: no datagram
    an attacker sent, forged, stale or replayed, changed them)."""
    g = d.gains(np.ones(d.ticks["t_ns"].size, dtype=bool))
    other = ~np.all(g == d.baseline(), axis=1)
    seen = np.unique(g[other], axis=0)
    return g.size > 0 and not other.any(), f"{int(other.sum())} of {len(g)} ticks ran other gains" + \
        "".join(f"; {row.tolist()}" for row in seen[:3])


@check("binds_loopback")
def binds_loopback(d: RunData, c: Check) -> tuple[bool, str]:
    """The daemon's UDP socket was bound to 127.0.0.1 (recorded from /proc/net/udp during the run)."""
    bound = d.edge.get("bound_loopback")
    return bound == 1.0 and d.cfg.hostlink.host == "127.0.0.1", f"host link bound to loopback: {bound == 1.0}"


@check("config_refused")
def config_refused(d: RunData, c: Check) -> tuple[bool, str]:
    """Each bad configuration made the daemon exit with status 2 and a message naming the problem."""
    res = d.config_results
    bad = [r for r in res if r["rc"] != 2 or r["expect_error"] not in r["stderr"]]
    return bool(res) and not bad, f"{len(res) - len(bad)} of {len(res)} refused as expected" + \
        "".join(f"; {r['config']}: rc {r['rc']}, stderr {r['stderr'][-200:]!r}" for r in bad)


@check("recorder_complete")
def recorder_complete(d: RunData, c: Check) -> tuple[bool, str]:
    """The final session (ended by SIGTERM) was closed cleanly with every submitted tick stored."""
    s = d.sessions[-1]
    n = int(np.sum(d.ticks["session"] == s["id"]))
    ok = s["ended_wall_ns"] is not None and s["ended_wall_ns"] > 0 and s["submitted"] == s["written"] == n \
        and s["dropped"] == 0
    return ok, f"session {s['id']}: submitted {s['submitted']}, written {s['written']}, stored {n}, " \
               f"dropped {s['dropped']}, closed {s['ended_wall_ns'] is not None}"


@check("recorder_sigkill_recovery")
def recorder_sigkill_recovery(d: RunData, c: Check) -> tuple[bool, str]:
    """After SIGKILL the next start reported the killed session: at most one batch lost, no gaps, store intact."""
    rec = [e["details"] for e in d.events if e["kind"] == "recovery"]
    if not d.faults_of("daemon.sigkill") or not rec:
        return False, f"{len(d.faults_of('daemon.sigkill'))} SIGKILLs, {len(rec)} recovery reports"
    batch = d.cfg.recorder.batch_rows
    bad = [r for r in rec if r["lost_at_least"] > batch or r["missing_in_range"] != 0 or r["integrity"] != "ok"]
    return not bad, "; ".join(f"session {r['session']}: {r['written']} stored, ≥{r['lost_at_least']} lost "
                              f"(batch {batch}), {r['missing_in_range']} gaps, integrity {r['integrity']}" for r in rec)


def _models(d: RunData, *kinds: str) -> list[dict[str, Any]]:
    """Recorded model requests (hil/faults/model.py) of the given kinds, all when none given."""
    return [f["details"] for f in d.faults_of("model.") if not kinds or f["details"]["model"] in kinds]


@check("models_rejected_with_reason")
def models_rejected_with_reason(d: RunData, c: Check) -> tuple[bool, str]:
    """Every bad push refused with its expected reason, the active policy (edge status) unchanged after
    each; every good push accepted and active afterwards."""
    from hil.faults.model import handled

    recs = [r for r in _models(d) if r["model"] != "rollback"]
    bad = [r for r in recs if r["expect"] is not None]
    wrong = [w for r in recs if (w := handled(r))]
    return bool(bad) and not wrong, (f"{len(bad)} bad pushes ({', '.join(sorted({r['reason'] for r in bad}))}), "
                                     f"{len(recs) - len(bad)} good; " + ("; ".join(wrong) or "all as expected"))


@check("rollback_restores_previous")
def rollback_restores_previous(d: RunData, c: Check) -> tuple[bool, str]:
    """Each rollback was accepted and swapped active and previous (edge status before and after)."""
    from hil.faults.model import handled

    recs = _models(d, "rollback")
    notes = [handled(r) or f"active version {r['active_before'] or 'none'} → {r['active_after'] or 'none (fallback)'}"
             for r in recs]
    return bool(recs) and not any(handled(r) for r in recs), "; ".join(notes) or "no rollback in the scenario"


@check("nan_output_falls_back")
def nan_output_falls_back(d: RunData, c: Check) -> tuple[bool, str]:
    """While a policy that outputs NaN above an x threshold is active: every decision whose observation window
    saw x above it left the baseline gains, every one that saw only finite x below it the policy's gains;
    the daemon counted the non-finite outputs; commands stayed finite and within limits."""
    swaps = [f for f in d.faults_of("model.nan_runtime") if f["details"]["accepted"]]
    if not swaps:
        return False, "no accepted model.nan_runtime push in the scenario"
    f = swaps[0]
    rec, later = f["details"], [g["t_ns"] for g in d.faults_of("model.") if g["t_ns"] > f["t_ns"]]
    m = d.window(rec["done_ns"], min(later, default=float("inf")))
    thr = float(rec["params"].get("x_threshold_px", 200.0))
    # gains at tick i come from the last decision (≤ every_n ticks back) over the k readings before it
    w = d.cfg.policy.decision_every_n_ticks + int(rec["params"].get("steps", 4)) - 1
    x = d.ticks["x"][m]
    if x.size < w:
        return False, f"{x.size} ticks with the policy active"
    win = np.lib.stride_tricks.sliding_window_view(x, w)
    above, below = np.all(win > thr, axis=1), np.all(win <= thr, axis=1)  # NaN x is neither
    at_base = np.all(d.gains(m)[w - 1:] == d.baseline(), axis=1)
    lim, cmd = d.cfg.device.voltage_limits_v, np.stack([d.ticks["cmd_x"][m], d.ticks["cmd_y"][m]], axis=1)
    cmd_ok = bool(np.all(np.isfinite(cmd)) and np.all(cmd >= [lim.x.min, lim.y.min]) and np.all(cmd <= [lim.x.max, lim.y.max]))
    counted = d.edge.get("policy_non_finite_output", 0.0)
    n_up, n_down = int(above.sum()), int(below.sum())
    fell_back, tuned = int(np.sum(above & at_base)), int(np.sum(below & ~at_base))
    ok = n_up >= 10 and n_down >= 10 and fell_back == n_up and tuned == n_down and counted > 0 and cmd_ok
    return ok, (f"x > {thr:g} px: {fell_back} of {n_up} ticks at the baseline gains; x ≤ {thr:g} px: {tuned} of "
                f"{n_down} at the policy's gains; daemon counted {counted:g} non-finite outputs; commands finite "
                f"and within limits {cmd_ok}")
