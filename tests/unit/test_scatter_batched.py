import numpy as np
import pytest
import torch

from controller.modes.scatter import physics, spec
from learner.scatter.batched import Tables, forward


@pytest.fixture(scope="module")
def tables() -> Tables:
    return Tables(16, dtype=torch.complex128)


def _disks(n: int) -> np.ndarray:
    x = physics.Grid(n).axis
    eta = np.stack([((x[None] - c) ** 2 + x[:, None] ** 2 < 0.3**2).astype(float) for c in (0.0, 0.15)])
    return eta * spec.NORM / np.linalg.norm(eta, axis=(1, 2), keepdims=True)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_batched_forward_matches_the_numpy_physics(tables: Tables, order: int) -> None:
    eta = _disks(16)
    angles = np.array([[3, 90, 181], [359, 0, 45]])
    freqs = np.array([[0, 3, 1], [2, 2, 0]])
    got = forward(tables, torch.as_tensor(eta), torch.as_tensor(angles), torch.as_tensor(freqs), order).numpy()
    for b in range(2):
        for s in range(3):
            k = spec.wavenumbers(16)[freqs[b, s]]
            want = physics.data(eta[b], k, spec.incident_direction_deg(angles[b, s : s + 1]), angles[b], order)
            np.testing.assert_allclose(got[b, s], want[0], rtol=1e-9, atol=1e-12 * np.abs(want).max())


def test_forward_refuses_mismatched_shapes(tables: Tables) -> None:
    with pytest.raises(ValueError):
        forward(tables, torch.zeros(2, 8, 8), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError):
        forward(tables, torch.zeros(1, 16, 16), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), 4)
