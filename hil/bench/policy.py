"""Per-call latency (batch 1) of an exported actor: onnxruntime (one thread, sequential) vs torch eager.

The actor has the paper's sizes (100 -> 60 hidden units); the observation is a window of k frames of
6 features and the action the 4 PID gains the paper tunes, as on the edge's tick path.
"""
from __future__ import annotations

import tempfile
import time

import numpy as np


def _percentiles_us(fn, x, iters: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn(x)
    t = np.empty(iters)
    clock = time.perf_counter_ns
    for i in range(iters):
        t0 = clock()
        fn(x)
        t[i] = clock() - t0
    return {"p50_us": float(np.percentile(t, 50) / 1e3), "p99_us": float(np.percentile(t, 99) / 1e3)}


def bench_policy(obs_dim: int = 48, act_dim: int = 4, hidden: tuple[int, ...] = (100, 60), iters: int = 20_000, seed: int = 0) -> dict:
    import onnxruntime as ort
    import torch

    from learner.algos.ddpg import Actor
    from learner.export import PolicyGraph, export_policy

    torch.manual_seed(seed)
    actor = Actor(obs_dim, act_dim, hidden)
    bounds = dict(obs_mean=[0.0] * obs_dim, obs_std=[1.0] * obs_dim, low=[0.0] * act_dim, high=[1.0] * act_dim)
    obs = np.random.default_rng(seed).standard_normal((1, obs_dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        export_policy(actor, d, task="bench", obs_units=["1"] * obs_dim, act_units=["1"] * act_dim, decision_period_s=1.0, training_run="bench", **bounds)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(f"{d}/model.onnx", so, providers=["CPUExecutionProvider"])
    run = sess.run
    ort_stats = _percentiles_us(lambda x: run(["action"], {"obs": x}), obs, iters, 1000)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        graph = PolicyGraph(actor, bounds["obs_mean"], bounds["obs_std"], bounds["low"], bounds["high"]).eval()

        def torch_call(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return graph(torch.from_numpy(x)).numpy()

        torch_stats = _percentiles_us(torch_call, obs, iters, 1000)
    finally:
        torch.set_num_threads(threads)
    return {
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "hidden": list(hidden),
        "iters": iters,
        "onnxruntime": ort_stats,
        "torch": torch_stats,
        "speedup_p50": torch_stats["p50_us"] / ort_stats["p50_us"],
    }
