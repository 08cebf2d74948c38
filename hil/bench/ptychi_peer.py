"""pty-chi's autodiff ptychography, the peer of `edgetune bench ptycho`, run in its own venv (make ptychi-env)
as `python ptychi_peer.py IN.npz OUT.npz`: numpy, torch and ptychi only (not the project).

Like for like with controller.modes.ptycho.recon: the same far-field single-slice model, the amplitude loss
(MSE_SQRT), plain gradient descent (SGD) on the object over all positions at once (one batch = one epoch =
one of our iterations), probe and positions fixed, no object–probe rescaling. pty-chi's conventions (read in
ptychi 2.2.0's source) and how ours map onto them:
- a position is the probe's centre; a window's top-left pixel is centre − (N − 1)/2 (image_proc.extract_patches_
  integer), counted from `position_origin_coords`: our top-left (i, j) with the origin at (N − 1)/2 puts the
  window exactly on our pixels (no sub-pixel shift, no interpolation);
- its far field is the unnormalised FFT (propagate.FourierPropagator(norm=None)), ours the unitary one: its probe
  is ours × √dose / N, so its modelled intensities are our counts' expectation dose · |F[P·O]|²;
- data are centred patterns (fft_shift=True), intensities in counts (it takes their square roots);
- its object is complex; with `phase_only` a hard limit |O| = 1 after every step makes it phase-only like ours
  (the projection of SGD's step onto |O| = 1 changes the phase by −step · ∂L/∂φ, the same direction as ours).
IN holds a batch: patterns (B, K, N, N, centred counts), positions (B, K, 2: window top-left, object px), probe
(N, N, Σ|P|² = 1), dose, object_px, optionally start (B, object_px, object_px: the initial phases; else 0),
iterations, steps (B: each sample's SGD step), phase_only, threads. Every task is
built (set-up) before any runs (work), one after the other. OUT: phase and magnitude (B, object_px, object_px), loss
(B, iterations: its mean squared amplitude error per detector pixel [counts] in each epoch),
setup_s, work_s, ptychi_version.
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

    n_obj, n = int(d["object_px"]), d["probe"].shape[-1]
    o = api.AutodiffPtychographyOptions()
    o.data_options.data = d["patterns"][b].astype(np.float32)
    o.data_options.fft_shift = True  # our patterns are centred
    start = d["start"][b] if "start" in d else np.zeros((n_obj, n_obj))
    o.object_options.initial_guess = torch.from_numpy(np.exp(1j * start)[None].astype(np.complex64))
    o.object_options.pixel_size_m = 1.0
    o.object_options.optimizable = True
    o.object_options.optimizer = api.Optimizers.SGD
    o.object_options.step_size = float(d["steps"][b])
    o.object_options.remove_object_probe_ambiguity.enabled = False
    if bool(d["phase_only"]):
        o.object_options.hard_limits_magnitude_phase.enabled = True
        o.object_options.hard_limits_magnitude_phase.abs_lim = np.array([1.0, 1.0])
        o.object_options.hard_limits_magnitude_phase.phase_lim = np.array([-np.inf, np.inf])
    o.object_options.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
    o.object_options.position_origin_coords = np.array([(n - 1) / 2.0] * 2)
    o.probe_options.initial_guess = (d["probe"] * np.sqrt(float(d["dose"])) / n)[None, None].astype(np.complex64)
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
    loss = np.stack([task.reconstructor.loss_tracker.table["loss"].to_numpy(np.float64) for task in tasks])
    np.savez(out, phase=np.angle(obj).astype(np.float32), magnitude=np.abs(obj).astype(np.float32), loss=loss,
             setup_s=setup_s, work_s=work_s, ptychi_version=version("ptychi"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
