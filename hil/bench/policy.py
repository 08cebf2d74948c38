"""Per-call latency (batch 1) of the deployed MEMS policy graph: onnxruntime (one thread, sequential, as the
edge runs it) vs the same module in torch eager (one thread).

The graph is the one `edgetune export` deploys (learner/mems/export.py): raw observation (a window of k frames
of 6 features, px and V) → normalisation → actor (the paper's 100 → 60, tanh) → the run's gain map (by default
into the robust gains, a sum of ReLUs: learner/mems/robust_gains.py) → clamp to the action bounds → the 4 PID
gains the paper tunes. Weights: with ``run``, that run's trained actor, exported exactly as `edgetune export RUN`
does; without, an untrained actor of the default training configuration (``MemsTrainConfig()``) initialised by
torch under ``seed`` and put through the same export — the same layers, sizes and operators, so the same work
per call. Inputs are raw observations drawn around the normalisation's mean.
"""
from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path

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


def bench_policy(iters: int = 20_000, seed: int = 0, run: Path | None = None) -> dict:
    import onnx
    import onnxruntime as ort
    import torch

    from learner.algos.ddpg import Actor
    from learner.export import PolicyGraph, export_policy
    from learner.mems.export import graph_args
    from learner.mems.train import MemsTrainConfig, load_agent, load_run_config

    warmup = min(1000, iters)
    torch.manual_seed(seed)
    if run is None:
        cfg = MemsTrainConfig()
        obs_dim = len(graph_args(cfg)["obs_mean"])
        actor, weights = Actor(obs_dim, 4, cfg.ddpg.hidden), f"untrained (torch init, seed {seed})"
    else:
        cfg = load_run_config(run)
        actor, weights = load_agent(run, cfg).actor.cpu(), f"trained run {run.resolve().name}"
    kw = graph_args(cfg)
    obs_dim, act_dim = len(kw["obs_mean"]), len(kw["low"])
    rng = np.random.default_rng(seed)
    obs = (kw["obs_mean"] + kw["obs_std"] * rng.standard_normal((1, obs_dim))).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        export_policy(actor, d, training_run=weights, **kw)
        ops = Counter(n.op_type for n in onnx.load(f"{d}/model.onnx").graph.node)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(f"{d}/model.onnx", so, providers=["CPUExecutionProvider"])
    run_ort = sess.run
    ort_stats = _percentiles_us(lambda x: run_ort(["action"], {"obs": x}), obs, iters, warmup)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        graph = PolicyGraph(actor, kw["obs_mean"], kw["obs_std"], kw["low"], kw["high"], kw["action_map"]).eval()

        def torch_call(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return graph(torch.from_numpy(x)).numpy()

        torch_stats = _percentiles_us(torch_call, obs, iters, warmup)
        gap = float(np.max(np.abs(run_ort(["action"], {"obs": obs})[0] - torch_call(obs))))
    finally:
        torch.set_num_threads(threads)
    return {
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "hidden": list(cfg.ddpg.hidden),
        "iters": iters,
        "graph": {
            "what": "the MEMS policy as `edgetune export` deploys it: normalisation, actor, gain map, clamp",
            "weights": weights,
            "gain_map_knots": int(kw["action_map"].knots.shape[1]),  # per axis: 2 = the plain box map
            "onnx_nodes": sum(ops.values()),
            "onnx_ops": dict(sorted(ops.items())),
            "max_abs_diff": gap,  # onnxruntime vs torch on the timed observation
        },
        "onnxruntime": ort_stats,
        "torch": torch_stats,
        "speedup_p50": torch_stats["p50_us"] / ort_stats["p50_us"],
    }
