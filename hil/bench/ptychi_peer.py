"""pty-chi's autodiff ptychography, the peer of `edgetune bench ptycho`, run in its own venv (make ptychi-env)
as `python ptychi_peer.py IN.npz OUT.npz`: numpy, torch and ptychi only (not the project).

Like for like with controller.modes.ptycho.recon: the same far-field single-slice model, the amplitude loss
(MSE_SQRT), plain gradient descent (SGD) on the object over all positions at once (one batch = one epoch =
one of our iterations), probe and positions fixed. pty-chi's object is complex (our phase-only object is its
special case), so the results differ by the amplitude it is free to change.
IN holds a batch: patterns (B, K, N, N, centred counts), positions (B, K, 2: window top-left, object px), probe
(N, N, Σ|P|² = 1), dose, object_px, origin, iterations, step, threads. Every task is built (set-up) before any runs
(work), one after the other. OUT: phase and magnitude (B, object_px, object_px), setup_s, work_s, ptychi_version.
"""
from __future__ import annotations

import sys
import time
from importlib.metadata import version
from typing import Any

import numpy as np
import torch


def _task(d: Any, b: int) -> Any:
    """Sample b's pty-chi task (module doc)."""
    import ptychi.api as api
    from ptychi.api.task import PtychographyTask

    n_obj = int(d["object_px"])
    o = api.AutodiffPtychographyOptions()
    o.data_options.data = d["patterns"][b].astype(np.float32)
    o.data_options.fft_shift = True  # our patterns are centred
    o.object_options.initial_guess = torch.ones((1, n_obj, n_obj), dtype=torch.complex64)
    o.object_options.pixel_size_m = 1.0
    o.object_options.optimizable = True
    o.object_options.optimizer = api.Optimizers.SGD
    o.object_options.step_size = float(d["step"])
    o.object_options.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
    o.object_options.position_origin_coords = np.array([float(d["origin"])] * 2)
    o.probe_options.initial_guess = (d["probe"] * np.sqrt(float(d["dose"])))[None, None].astype(np.complex64)
    o.probe_options.optimizable = False
    o.probe_position_options.position_y_px = d["positions"][b, :, 0].astype(np.float32)
    o.probe_position_options.position_x_px = d["positions"][b, :, 1].astype(np.float32)
    o.probe_position_options.optimizable = False
    o.reconstructor_options.batch_size = d["positions"].shape[1]
    o.reconstructor_options.num_epochs = int(d["iterations"])
    o.reconstructor_options.default_device = api.Devices.CPU
    return PtychographyTask(o)


def main(inp: str, out: str) -> None:
    t0 = time.perf_counter()
    d = np.load(inp)
    torch.set_num_threads(int(d["threads"]))
    tasks = [_task(d, b) for b in range(len(d["patterns"]))]
    setup_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    for task in tasks:
        task.run()
    work_s = time.perf_counter() - t1
    obj = np.stack([task.get_data_to_cpu("object", as_numpy=True)[0] for task in tasks])
    np.savez(out, phase=np.angle(obj).astype(np.float32), magnitude=np.abs(obj).astype(np.float32),
             setup_s=setup_s, work_s=work_s, ptychi_version=version("ptychi"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
