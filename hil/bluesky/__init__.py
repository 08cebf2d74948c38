"""Bluesky on the beamline host (the optional `edgetune[bluesky]` extra; docs/bluesky.md).

`device`: ophyd-async devices over the daemon's Channel Access PVs (the PV contract: controller/epics/pvs.py,
docs/epics.md): `EdgeMems` for the MEMS tick modes (spot, target, gains; `bps.mv(edge.target_x, 10)` returns once the
loop has settled) and `EdgeScanner` for the scan modes (triggerable and flyable: one adaptive scan per trigger).
`agent`: an exported CT angle policy as a bluesky-adaptive optimizer, so a Bluesky plan asks it for the next angle
and tells it each projection, on the beamline's own rotation stage and detector; `ct_stand`: ophyd-async devices
over a CT stand driven with edgetune's serial protocol (the emulator, `edgetune sim ct`, or the instrument).

Host-side code that talks to a running daemon or stand lives in hil/ (the harness and the `edgetune` CLI); it
imports no torch and no learner code, only the edge's policy runtime (onnxruntime), so a beamline host installs
`edgetune[bluesky]` without the training extra.
"""
