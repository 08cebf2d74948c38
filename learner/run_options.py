"""Command-line options every `edgetune train …` run shares (typer), and how they take effect."""
from __future__ import annotations

from typing import Optional

import typer

DEVICE = typer.Option("auto", help="auto | cpu | cuda.")
THREADS = typer.Option(None, min=1, help="torch CPU threads (default: torch's).")
MAX_MINUTES = typer.Option(None, help="Stop (with a checkpoint) after this wall time.")
RESUME = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoint.pt.")


def device_and_threads(device: str, threads: Optional[int]) -> str | None:
    """Check --device, set --threads; returns the device to ask for (None: cuda when available, else cpu)."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("--device must be auto, cpu or cuda")
    if threads:
        torch.set_num_threads(threads)
    return None if device == "auto" else device
