"""`edgetune sim ...` commands. Module top: stdlib + typer only; implementations load inside."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

# options every pty instrument with the shared fault hooks takes (firmware_sim/serial_device.py)
TX_BUFFER = typer.Option(4096, help="Device UART TX buffer in bytes; frames that do not fit are dropped.")
RX_BUFFER = typer.Option(4095, help="Edge UART RX buffer in bytes modelled on the pty.")
LINK = typer.Option(None, help="Keep this symlink pointing at the current pty (survives unplug).")
CONTROL_STDIN = typer.Option(False, help="Read serial fault commands from stdin, one a line: garbage N | stall S | "
                                         "reboot | unplug S | drop N | truncate N | flip N | dropbyte N.")


def sim_mems(
    seed: int = typer.Option(0, help="Physics seed at power-on."),
    speed: float = typer.Option(1.0, help="Run this many times faster than real time."),
    tx_buffer: int = typer.Option(4096, help="Device UART TX buffer in bytes; frames that do not fit are dropped."),
    rx_buffer: int = typer.Option(4095, help="Edge UART RX buffer in bytes modelled on the pty."),
    disturbance_csv: Optional[Path] = typer.Option(None, help="M1 trace (t_s,x_px,y_px) played from power-on."),
    link: Optional[Path] = typer.Option(None, help="Keep this symlink pointing at the current pty (survives unplug)."),
    control_stdin: bool = typer.Option(False, help="Read fault commands from stdin, one a line: "
                                                    "garbage N | stall S | reboot | unplug S | drop N | truncate N."),
) -> None:
    """Serve the MEMS stand on a new pty; the first stdout line is the device path. Stops on SIGINT/SIGTERM."""
    import signal
    import threading

    from firmware_sim.mems.disturbance import from_csv
    from firmware_sim.mems.emulator import MemsEmulator
    from firmware_sim.mems.physics import MemsStand

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
    emu.link = link
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(emu.open(), flush=True)
    if control_stdin:
        threading.Thread(target=_control_loop, args=(emu,), daemon=True, name="control").start()
    try:
        emu.run(stop)
    finally:
        emu.close()


def sim_ct(
    seed: int = typer.Option(0, help="Stage power-up angle and noise RNG seed."),
    speed: float = typer.Option(1.0, help="Run this many times faster than real time."),
    tick_hz: float = typer.Option(200.0, help="Stage physics rate in device time (wall rate = tick_hz × speed)."),
    sample: str = typer.Option("any", help="Phantom on the stage: parallelogram, triangle, pentagon or any."),
    sample_seed: int = typer.Option(0, help="Phantom seed."),
    split: str = typer.Option("train", help="Phantom rotations from the train or val bins."),
    size: int = typer.Option(63, help="Phantom size = detector bins (odd, 15..505)."),
    noise: str = typer.Option("gaussian", help="Detector noise: none, gaussian or poisson."),
    noise_level: float = typer.Option(0.05, help="Gaussian σ as a fraction of the projection's std."),
    flux: float = typer.Option(2.0e5, help="Poisson photons per bin per second."),
    tx_buffer: int = typer.Option(4096, help="Device UART TX buffer in bytes; frames that do not fit are dropped."),
    rx_buffer: int = typer.Option(4095, help="Edge UART RX buffer in bytes modelled on the pty."),
) -> None:
    """Serve the CT rotation stage + detector on a new pty; the first stdout line is the device path.
    Stops on SIGINT/SIGTERM."""
    from dataclasses import replace

    from controller.protocol import ct
    from firmware_sim.ct.physics import DetectorParams
    from firmware_sim.ct.emulator import CtEmulator

    def choice(enum, value: str, hint: str):
        try:
            return enum[value.upper()]
        except KeyError:
            names = ", ".join(m.name.lower() for m in enum)
            raise typer.BadParameter(f"{value!r} is not one of {names}", param_hint=hint) from None

    msg = ct.SetSample(choice(ct.SampleKind, sample, "--sample"), sample_seed, choice(ct.Split, split, "--split"), size)
    try:
        det = replace(DetectorParams(), noise=noise, noise_frac=noise_level, flux_per_s=flux)
        emu = CtEmulator(detector=det, sample=msg, seed=seed, speed=speed, tick_hz=tick_hz,
                         tx_buffer=tx_buffer, rx_buffer=rx_buffer)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    _serve(emu)


def sim_ptycho(
    key: int = typer.Option(0, help="Sample key: the MoS₂ sample drawn from it and the detector noise's key."),
    phase_npy: Optional[Path] = typer.Option(None, help="A phase map (.npy, radians, 163 × 163 for the default "
                                                        "optics) on the stage instead of the MoS₂ sample; "
                                                        "SetSample is then refused."),
    defocus: float = typer.Option(0.0, help="Probe defocus Δf [Å] (0 focused; the evaluation's defocused: 20)."),
    dose: float = typer.Option(2.1e5, help="Electrons per pattern at the nominal exposure (Table I's dose)."),
    exposure_us: int = typer.Option(1000, help="Nominal exposure [µs]; other exposures get a proportional dose."),
    seed: int = typer.Option(0, help="Stage rest-error and read-back noise seed."),
    speed: float = typer.Option(1.0, help="Run this many times faster than real time."),
    tick_hz: float = typer.Option(1000.0, help="How often (device time) a running exposure is checked for its end."),
    tx_buffer: int = typer.Option(64 * 1024, help="Device TX buffer in bytes (holds at least one frame)."),
    rx_buffer: int = typer.Option(4095, help="Edge UART RX buffer in bytes modelled on the pty."),
    link: Optional[Path] = typer.Option(None, help="Keep this symlink pointing at the current pty (survives unplug)."),
    control_stdin: bool = typer.Option(False, help="Read serial fault commands from stdin, one a line: "
                                                    "garbage N | stall S | reboot | unplug S | drop N | truncate N | "
                                                    "flip N | dropbyte N."),
) -> None:
    """Serve the ptychography scan stage + pixel detector on a new pty; the first stdout line is the device
    path. Stops on SIGINT/SIGTERM."""
    import math

    import numpy as np

    from controller.modes.ptycho.optics import Optics
    from firmware_sim.ptycho.detector import DetectorParams
    from firmware_sim.ptycho.emulator import PtychoEmulator

    try:
        if not math.isfinite(defocus):
            raise ValueError(f"defocus must be finite, got {defocus}")
        optics = Optics(defocus_A=defocus)
        sampler = None
        if phase_npy is None:
            from firmware_sim.ptycho.mos2 import draw_phase  # the MoS₂ sample generator (loaded only when used)

            sampler = lambda k: draw_phase(k, optics)  # noqa: E731
            phase = sampler(key)
        else:
            try:
                phase = np.load(phase_npy, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise typer.BadParameter(f"cannot read {phase_npy}: {e}", param_hint="--phase-npy") from None
        emu = PtychoEmulator(phase, key, optics=optics, detector=DetectorParams(dose, exposure_us), sampler=sampler,
                             seed=seed, speed=speed, tick_hz=tick_hz, tx_buffer=tx_buffer, rx_buffer=rx_buffer)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    emu.link = link
    _serve(emu, control_stdin)


def sim_scatter(
    n: int = typer.Option(32, help="Grid size n of the scatterer (n × n on the unit square)."),
    order: str = typer.Option("2", help="Born order of the data: 1, 2, 3 or exact (dense solve, n ≤ 64)."),
    snr_db: float = typer.Option(float("inf"), help="Receiver SNR [dB] relative to each acquisition's RMS "
                                                    "(inf: noise-free)."),
    family: str = typer.Option("ellipses", help="Scatterer family (firmware_sim/scatter/scatterers.py): ellipses, "
                                                "circles, digits, rectangles, annuli or blobs."),
    split: str = typer.Option("report", help="Scatterer split: train, selection or report (disjoint seeds)."),
    index: int = typer.Option(0, help="Scatterer index within its family and split."),
    eta: Optional[Path] = typer.Option(None, help="A square contrast map (.npy, ≥ 0) instead of a family's "
                                                  "scatterer: resampled to n × n and scaled to ‖η‖₂ = 0.3."),
    key: int = typer.Option(0, help="Sample key (u32): keys the receiver noise."),
    min_deg: float = typer.Option(0.0, help="Arm limit: the smallest commanded angle [deg]."),
    max_deg: float = typer.Option(359.0, help="Arm limit: the largest commanded angle [deg]."),
    slew: float = typer.Option(180.0, help="Arm speed limit [deg/s]."),
    settle: float = typer.Option(0.02, help="Arm settle time after arrival [s]."),
    seed: int = typer.Option(0, help="Arm rest-error and encoder-noise seed."),
    speed: float = typer.Option(1.0, help="Run this many times faster than real time."),
    tx_buffer: int = TX_BUFFER,
    rx_buffer: int = RX_BUFFER,
    link: Optional[Path] = LINK,
    control_stdin: bool = CONTROL_STDIN,
) -> None:
    """Serve the inverse-scattering transceiver ring (rotating source arm + receivers) on a new pty; the first
    stdout line is the device path. Stops on SIGINT/SIGTERM."""
    from dataclasses import replace

    from firmware_sim.scatter.arm import ArmParams
    from firmware_sim.scatter.emulator import ScatterEmulator
    from firmware_sim.scatter.receiver import ReceiverParams

    try:
        born = order if order == "exact" else int(order)
        from firmware_sim.scatter.scatterers import load_custom, scatterer

        sample = scatterer(family, split, index, n) if eta is None else load_custom(eta, n)
        arm = replace(ArmParams(), limits_deg=(min_deg, max_deg), slew_dps=slew, settle_s=settle)
        emu = ScatterEmulator(sample, key, arm=arm, receiver=ReceiverParams(born, snr_db), seed=seed, speed=speed,
                              tx_buffer=tx_buffer, rx_buffer=rx_buffer)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    emu.link = link
    _serve(emu, control_stdin)


def sim_forge(
    problem: str = typer.Option("forge", help="The forge problem: a name (controller/modes/bal/problems) or a TOML "
                                              "file; its true well depths stay in the firmware."),
    seed: int = typer.Option(0, help="SDE noise and camera noise seed at power-on (Reset re-seeds)."),
    speed: float = typer.Option(1.0, help="Accepted for the stand; the forge steps in lockstep with the commands."),
    tx_buffer: int = TX_BUFFER,
    rx_buffer: int = RX_BUFFER,
    link: Optional[Path] = LINK,
    control_stdin: bool = CONTROL_STDIN,
) -> None:
    """Serve the atom forge (one atom steered by a beam force among background atoms; position read back from a
    camera centroid) on a new pty; the first stdout line is the device path. Stops on SIGINT/SIGTERM."""
    from controller.modes.bal.problem import load_problem
    from firmware_sim.bal.forge_emulator import ForgeEmulator

    try:
        emu = ForgeEmulator(load_problem(problem), seed=seed, speed=speed, tx_buffer=tx_buffer, rx_buffer=rx_buffer)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    emu.link = link
    _serve(emu, control_stdin)


def _serve(emu, control_stdin: bool = False) -> None:
    """Print the emulator's device path first, serve until SIGINT/SIGTERM (fault commands from stdin when
    ``control_stdin``), close the pty."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(emu.open(), flush=True)
    if control_stdin:
        threading.Thread(target=_control_loop, args=(emu,), daemon=True, name="control").start()
    try:
        emu.run(stop)
    finally:
        emu.close()


def _control_loop(emu) -> None:
    """Fault commands from stdin; a bad line is reported on stderr and skipped."""
    import sys

    for line in sys.stdin:
        if line.strip():
            try:
                emu.control(line)
            except ValueError as e:
                print(f"control: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    typer.run(sim_mems)
