"""The probe-known reconstruction (controller.modes.ptycho.recon): its gradient, numpy (edge) vs batched torch
(training) parity, batching, stability of the global step at any density of positions, and convergence."""
import numpy as np
import pytest
import torch

from controller.modes.ptycho import recon
from controller.modes.ptycho.optics import DEFOCUSED_A, Optics, probe
from ptycho_util import grid_positions, lattice, measure

OPTICS = Optics(defocus_A=DEFOCUSED_A)
SMALL = Optics(defocus_A=DEFOCUSED_A, window=16, grid=6)  # an object of 21² px, for finite differences


def _torch(data: list[recon.Measured], size: int) -> recon.Measured:
    """Single-sample numpy data → one torch float32 batch, the shorter ones padded (weight 0)."""
    k = max(d.weights.shape[1] for d in data)
    n = data[0].amplitudes.shape[-1]
    idx = np.zeros((len(data), k, n * n), np.int64)
    amp = np.zeros((len(data), k, n, n), np.float32)
    w = np.zeros((len(data), k), np.float32)
    for b, d in enumerate(data):
        kb = d.weights.shape[1]
        idx[b] = b * size  # padding: any valid pixel of its own sample
        idx[b, :kb] = d.indices[0] + b * size
        amp[b, :kb], w[b, :kb] = d.amplitudes[0], d.weights[0]
    return recon.Measured(torch.from_numpy(idx), torch.from_numpy(amp), torch.from_numpy(w))


def _take(data: recon.Measured, k: int) -> recon.Measured:
    return recon.Measured(data.indices[:, :k], data.amplitudes[:, :k], data.weights[:, :k])


def _aligned_error(phase: np.ndarray, truth: np.ndarray, optics: Optics) -> float:
    """RMS error over the scanned field after matching the means (the constant phase is unobservable)."""
    n = optics.object_px
    field = slice(optics.window // 2, n - optics.window // 2 + 1)
    a, b = phase.reshape(n, n)[field, field], truth[field, field]
    return float(np.sqrt(np.mean(((a - a.mean()) - (b - b.mean())) ** 2)))


def test_gradient_matches_finite_differences():
    truth = lattice(SMALL)
    data = measure(SMALL, truth, grid_positions(SMALL))
    p = probe(SMALL)
    rng = np.random.default_rng(1)
    phase = (truth + 0.3 * rng.standard_normal(truth.shape)).reshape(1, -1)
    grad, loss = recon.gradient(phase, p, data)
    assert loss[0] > 0
    for pixel in rng.choice(phase.shape[1], 12, replace=False):
        h = np.zeros_like(phase)
        h[0, pixel] = 1e-6
        fd = (recon.gradient(phase + h, p, data)[1] - recon.gradient(phase - h, p, data)[1])[0] / 2e-6
        assert grad[0, pixel] == pytest.approx(fd, rel=1e-5, abs=1e-9)


def test_torch_float32_batched_padded_matches_numpy_float64():
    """5 sub-sequences × 5 iterations, the paper's schedule; sample 1 has fewer positions (padded)."""
    size = OPTICS.object_px ** 2
    truths = [lattice(OPTICS), lattice(OPTICS, angle=1.0, shift_A=(0.2, 2.0))]
    data = [measure(OPTICS, t, grid_positions(OPTICS, 250, seed=b), key=b) for b, t in enumerate(truths)]
    counts = (250, 200)  # positions per sample at the end
    p = probe(OPTICS)
    ours = [np.zeros((1, size)) for _ in truths]
    batch = torch.zeros(2, size)
    for sub in range(1, 6):
        parts = [_take(d, c * sub // 5) for d, c in zip(data, counts)]
        ours = [recon.reconstruct(x, p, d, 5) for x, d in zip(ours, parts)]
        batch = recon.reconstruct(batch, torch.from_numpy(p).to(torch.complex64), _torch(parts, size), 5)
    assert batch.dtype == torch.float32
    for b, x in enumerate(ours):
        assert np.abs(batch[b].numpy() - x[0]).max() < 1e-4
    assert np.abs(ours[0] - ours[1]).max() > 0.1  # the samples are different


def test_batch_equals_samples_one_by_one():
    size = OPTICS.object_px ** 2
    truths = [lattice(OPTICS), lattice(OPTICS, peak=0.5, angle=0.7)]
    data = [measure(OPTICS, t, grid_positions(OPTICS, k, seed=b), key=b) for b, (t, k) in enumerate(zip(truths, (120, 80)))]
    p = torch.from_numpy(probe(OPTICS)).to(torch.complex64)
    batch = recon.reconstruct(torch.zeros(2, size), p, _torch(data, size), 5)
    for b, d in enumerate(data):
        alone = recon.reconstruct(torch.zeros(1, size), p, _torch([d], size), 5)
        torch.testing.assert_close(batch[b], alone[0], rtol=0, atol=1e-6)


def test_complex64_numpy_matches_float64():
    truth = lattice(OPTICS)
    data = measure(OPTICS, truth, grid_positions(OPTICS, 250))
    p = probe(OPTICS)
    exact = recon.reconstruct(np.zeros((1, truth.size)), p, data, 10)
    fast = recon.reconstruct(np.zeros((1, truth.size), np.float32), p.astype(np.complex64),
                             recon.Measured(data.indices, data.amplitudes.astype(np.float32),
                                            data.weights.astype(np.float32)), 10)
    assert fast.dtype == np.float32
    assert np.abs(fast - exact).max() < 1e-4


def _descends(optics: Optics, positions: np.ndarray, iterations: int = 30) -> None:
    """Loss falls at every step (no divergence) and the error to the truth falls, at the global step STEP."""
    truth = lattice(optics)
    data = _torch([measure(optics, truth, positions)], optics.object_px ** 2)
    p = torch.from_numpy(probe(optics)).to(torch.complex64)
    phase = torch.zeros(1, optics.object_px ** 2)
    losses, errors = [], [_aligned_error(phase.numpy(), truth, optics)]
    for _ in range(iterations):
        losses.append(float(recon.gradient(phase, p, data)[1][0]))
        phase = recon.reconstruct(phase, p, data, 1)
        errors.append(_aligned_error(phase.numpy(), truth, optics))
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert errors[-1] < 0.5 * errors[0] and errors[-1] < errors[iterations // 2], errors


def test_descends_at_step_with_250_positions():
    _descends(OPTICS, grid_positions(OPTICS, 250))


def test_descends_at_step_on_a_full_dense_grid():
    """Every position of a 20 × 20 grid: the full grid's overlap (the densest), on a smaller field."""
    dense = Optics(defocus_A=DEFOCUSED_A, grid=20)
    _descends(dense, grid_positions(dense))


@pytest.mark.slow
def test_descends_at_step_with_10000_positions():
    _descends(OPTICS, grid_positions(OPTICS))


def test_no_positions_no_step():
    size = OPTICS.object_px ** 2
    empty = recon.Measured(np.zeros((1, 0, 64 * 64), np.int64), np.zeros((1, 0, 64, 64)), np.zeros((1, 0)))
    start = np.full((1, size), 0.3)
    np.testing.assert_array_equal(recon.reconstruct(start, probe(OPTICS), empty, 3), start)
