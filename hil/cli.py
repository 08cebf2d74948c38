"""The `edgetune` command line: one entry point, subcommand groups per package.

Every command imports its implementation lazily, so that the edge commands
(`daemon`, `sim`, `bench loop`) never import torch.
"""
from __future__ import annotations

from pathlib import Path

import typer

import controller.cli
import hil.bench.cli
import hil.commands
import firmware_sim.cli
import learner.bal.cli
import learner.ct.cli
import learner.mems.cli
import learner.ptycho.cli
import learner.scatter.cli
import learner.trials

_GROUP = controller.cli.GROUP
app = typer.Typer(**_GROUP, add_completion=False, help="edgetune: learned tuning for instrument control loops.")
sim_app = typer.Typer(**_GROUP, help="Simulated instruments served on a real (pty) serial port.")
bench_app = typer.Typer(**_GROUP, help="Benchmarks; each prints one JSON object.")
train_app = typer.Typer(**_GROUP, help="Train policies on the simulated instruments (host; needs the `learn` extra).")
eval_app = typer.Typer(**_GROUP, help="Evaluate trained policies against baselines.")
select_app = typer.Typer(**_GROUP, help="Choose the run to ship among training seeds, on the selection set only.")
link_app = typer.Typer(**_GROUP, help=controller.cli.LINK_HELP)
hil_app = typer.Typer(**_GROUP, help="Hardware-in-the-loop scenarios against the simulated instruments.")
app.add_typer(sim_app, name="sim")
app.add_typer(bench_app, name="bench")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(select_app, name="select")
app.add_typer(hil_app, name="hil")
app.add_typer(link_app, name="link")

controller.cli.register(app, link_app)  # daemon, push, rollback, link …: the edge's commands (edgetune-edge)
sim_app.command("mems")(firmware_sim.cli.sim_mems)
sim_app.command("ct")(firmware_sim.cli.sim_ct)
sim_app.command("ptycho")(firmware_sim.cli.sim_ptycho)
sim_app.command("scatter")(firmware_sim.cli.sim_scatter)
sim_app.command("forge")(firmware_sim.cli.sim_forge)
bench_app.command("sirt")(hil.bench.cli.bench_sirt)
bench_app.command("ptycho")(hil.bench.cli.bench_ptycho)
bench_app.command("scatter")(hil.bench.cli.bench_scatter)
bench_app.command("filter")(hil.bench.cli.bench_filter)
bench_app.command("live")(hil.bench.cli.bench_live)
train_app.command("mems")(learner.trials.with_train_seeds(learner.mems.cli.train_mems))
eval_app.command("mems")(learner.mems.cli.eval_mems)
train_app.command("ct")(learner.trials.with_train_seeds(learner.ct.cli.train_ct))
eval_app.command("ct")(learner.ct.cli.eval_ct)
eval_app.command("ptycho")(learner.ptycho.cli.eval_ptycho)
select_app.command("ct")(learner.ct.cli.select_ct)
train_app.command("ptycho")(learner.trials.with_train_seeds(learner.ptycho.cli.train_ptycho))
train_app.command("scatter")(learner.trials.with_train_seeds(learner.scatter.cli.train_scatter))
eval_app.command("scatter")(learner.scatter.cli.eval_scatter)
train_app.command("bal")(learner.trials.with_train_seeds(learner.bal.cli.train_bal))
eval_app.command("bal")(learner.bal.cli.eval_bal)
app.command("export")(learner.mems.cli.export)
app.command("export-docs")(hil.commands.export_docs)
app.command("sweep")(learner.trials.sweep)
hil_app.command("run")(hil.commands.hil_run)
hil_app.command("list")(hil.commands.hil_list)
hil_app.command("soak")(hil.commands.hil_soak)
bench_app.command("fuzz")(hil.commands.bench_fuzz)
bench_app.command("swap")(hil.bench.cli.bench_swap)
bench_app.command("loop")(hil.bench.cli.bench_loop)
bench_app.command("epics")(hil.bench.cli.bench_epics)
bench_app.command("trials", context_settings=hil.bench.cli.TRIALS_SETTINGS)(hil.bench.cli.bench_trials)
bench_app.command("ddpg")(hil.bench.cli.bench_ddpg)
bench_app.command("policy")(hil.bench.cli.bench_policy)


@app.command("sign")
def sign(target: str = typer.Argument(..., help="ARTIFACT_DIR to sign, or `keygen` to create a signing key"),
         key: Path = typer.Option(..., "--key", help="private key file (keygen: created, with KEY.pub beside it)"),
         key_id: int = typer.Option(None, "--key-id", help="key id (keygen: 1; sign: the newest in the file)")) -> None:
    """Sign an artifact (Ed25519 over manifest + model → signature.json) on the build host, or create a key pair;
    the edge trusts the public keys in [policy] trusted_keys."""
    from controller.link.auth import KeyringError
    from controller.policy.signature import keygen, sign_artifact

    try:
        if target == "keygen":
            typer.echo(f"wrote {key} (mode 600, keep it on the build host) and {keygen(key, 1 if key_id is None else key_id)}")
        else:
            typer.echo(f"wrote {sign_artifact(Path(target), key, key_id)}")
    except (OSError, KeyringError) as e:
        typer.echo(f"edgetune sign: {e}", err=True)
        raise typer.Exit(2) from None


@app.command("demo")
def demo(out: Path = typer.Option(Path("runs/demo"), help="Output folder (tables, PNGs, stand logs)."),
         seed: int = typer.Option(1, help="Disturbance seed."),
         steps: int = typer.Option(192_000, help="DDPG training decisions (all simulated stands)."),
         run: Path = typer.Option(None, help="Use this trained run instead of training.")) -> None:
    """The main job: train DDPG, push the policy to the daemon on the simulated stand, Wiener test vs baselines."""
    import asyncio

    from hil.mems.demo import run_demo

    asyncio.run(run_demo(out, seed, steps, run))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
