"""The learner's evaluation and the edge agree: the same scan policy (torch in learner/ptycho/env.py's
`run_scan` with a greedy `Chooser`, float32 torch reconstruction) and its ONNX export (the edge's runtime and
numpy reconstruction, tests/ptycho_policy.py `reference`) choose the same positions on the same keyed counts,
and their reconstructions agree to SSIM 1 − 1e-3 (issue #21: "the same positions as the in-process evaluation of
the same ONNX policy and sample … up to grid-snap ties, SSIM within 1e-3")."""
from __future__ import annotations

import numpy as np
import torch

from controller.modes.ptycho.config import PtychoConfig
from controller.modes.ptycho.policy import ScanPolicy as EdgePolicy
from learner.algos.reinforce import Chooser
from learner.ptycho import metrics
from learner.ptycho.env import PtychoBatchEnv, PtychoEnvConfig, run_scan
from learner.ptycho.export import export_scan_policy
from learner.ptycho.policy import PolicyConfig, ScanPolicy
from ptycho_policy import KEY, reference, sample

SMALL = dict(positions=40, subsequences=4, iterations=2)


def test_learner_and_edge_choose_the_same_positions_and_reconstruct_alike(tmp_path) -> None:
    torch.manual_seed(3)
    net = ScanPolicy(PolicyConfig(hidden=16, features=16)).eval()
    torch.nn.init.normal_(net.fc_h.weight, std=0.3)  # a policy that moves off the Halton continuation
    export_scan_policy(net, tmp_path / "p", field=100, hidden_size=16, training_run="parity")
    env = PtychoBatchEnv(PtychoEnvConfig(**SMALL), batch=1, sampler=lambda key, optics: sample(key))
    with torch.no_grad():
        learned = run_scan(env, Chooser(net, "greedy"), keys=np.array([KEY]))
    chosen, image = reference(EdgePolicy.from_artifact(tmp_path / "p", 100), PtychoConfig(**SMALL))
    ours = [p[0].tolist() for p in learned.positions]
    assert ours == chosen  # every sub-sequence, position for position
    assert ours != reference(None, PtychoConfig(**SMALL))[0]  # … and the policy did not just follow Halton
    assert metrics.ssim(env.phase.numpy().reshape(image.shape), image) > 1 - 1e-3
