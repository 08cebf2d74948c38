"""`edgetune sim ...` commands. Module top: stdlib + typer only; implementations load inside."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def sim_mems(
    seed: int = typer.Option(0, help="Physics seed at power-on."),
    speed: float = typer.Option(1.0, help="Run this many times faster than real time."),
    tx_buffer: int = typer.Option(4096, help="Device UART TX buffer in bytes; frames that do not fit are dropped."),
    rx_buffer: int = typer.Option(4095, help="Edge UART RX buffer in bytes modelled on the pty."),
    disturbance_csv: Optional[Path] = typer.Option(None, help="M1 trace (t_s,x_px,y_px) played from power-on."),
) -> None:
    """Serve the MEMS stand on a new pty; the first stdout line is the device path. Stops on SIGINT/SIGTERM."""
    import signal
    import threading

    from firmware_sim.disturbance import from_csv
    from firmware_sim.emulator import MemsEmulator
    from firmware_sim.mems import MemsStand

    stand = MemsStand()
    trace = None
    if disturbance_csv is not None:
        try:
            trace = from_csv(disturbance_csv, stand.params.frame_rate_hz)
        except (OSError, ValueError) as e:
            raise typer.BadParameter(str(e), param_hint="--disturbance-csv") from None
    try:
        emu = MemsEmulator(stand, seed=seed, speed=speed, tx_buffer=tx_buffer, rx_buffer=rx_buffer,
                           disturbance_px=trace)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(emu.open(), flush=True)
    try:
        emu.run(stop)
    finally:
        emu.close()


if __name__ == "__main__":
    typer.run(sim_mems)
