"""`edgetune bench live`: sim-to-real fine-tuning vs training from scratch vs the simulator-only policy, on the
emulated stand (a real daemon and `edgetune sim mems` on a pty, real time: docs/live-training.md).

One stand for everything: fine-tune the simulator run live (``--init``) for ``finetune`` decisions, train from
scratch for ``scratch`` decisions, then evaluate the baseline gains and the three policies (deterministic actor,
no learning) for ``decisions`` decisions each, ``repeats`` times, interleaved; repeat r uses target seed r for
every method, so the differences to the simulator-only policy are paired (mean ± 95 % CI, Student t).
``scratch = 0`` leaves the from-scratch run out.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import platform
import time
from pathlib import Path

from hil.stand import SimulatedStand
from learner.mems.live_train import connect, evaluate_live, init_config, train_live
from learner.mems.train import MemsTrainConfig
from learner.stats import mean_ci95


def bench_live(sim_run: Path, out: Path, finetune: int, scratch: int, scratch_warmup: int, decisions: int,
               repeats: int, seed: int = 0) -> dict:
    return asyncio.run(_bench(sim_run, out, finetune, scratch, scratch_warmup, decisions, repeats, seed))


async def _bench(sim_run: Path, out: Path, finetune: int, scratch: int, scratch_warmup: int, decisions: int,
                 repeats: int, seed: int) -> dict:
    t_start = time.perf_counter()
    async with SimulatedStand(out / "stand", seed=seed) as stand:
        await stand.client.close()  # one sender per key id: the trainers and evaluations take turns
        stand.client = None
        assert stand.keyring is not None
        factory = connect(stand.edge_addr, stand.keyring, stand.keyring.newest)
        ft = init_config(sim_run)
        ft.ddpg = dataclasses.replace(ft.ddpg, total_steps=finetune, seed=seed, device="cpu")
        sc = MemsTrainConfig(num_envs=1, gain_set=ft.gain_set)
        sc.ddpg = dataclasses.replace(sc.ddpg, total_steps=scratch, learning_starts=scratch_warmup, seed=seed, device="cpu")
        runs = {"finetuned": out / "finetuned", **({"scratch": out / "scratch"} if scratch else {})}
        training = {"finetuned": await asyncio.to_thread(train_live, runs["finetuned"], ft, factory, init=sim_run)}
        if scratch:
            training["scratch"] = await asyncio.to_thread(train_live, runs["scratch"], sc, factory)
        methods = {"baseline": None, "sim_only": sim_run, **runs}
        errors: dict[str, list[float]] = {m: [] for m in methods}
        t_eval = time.perf_counter()
        for r in range(repeats):
            for name, run in methods.items():
                errors[name].append((await asyncio.to_thread(evaluate_live, run, factory, decisions, r))["mean_error_px"])
        eval_s = time.perf_counter() - t_eval
    vs_sim = {}
    for name in (*runs, "baseline"):
        diff = [a - b for a, b in zip(errors[name], errors["sim_only"])]
        mean, ci = mean_ci95(diff)
        vs_sim[name] = {"mean_px": mean, "ci95_px": ci}
    return {
        "bench": "live", "sim_run": str(sim_run), "stand": "edgetune sim mems --speed 1 + daemon (stabilize), loopback",
        "finetune_decisions": finetune, "scratch_decisions": scratch, "scratch_warmup": scratch_warmup,
        "eval": {"decisions": decisions, "repeats": repeats,
                 "mean_error_px": {m: mean_ci95(e) for m, e in errors.items()}, "per_repeat": errors,
                 "minus_sim_only": vs_sim, "wall_s": round(eval_s, 1)},
        "training": {m: {"s_per_1000_decisions": s["s_per_1000_decisions"], "wall_s": s["wall_s"]} for m, s in training.items()},
        "wall_s": round(time.perf_counter() - t_start, 1),
        "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg(), "python": platform.python_version()},
    }
