"""A whole simulated installation as real processes: the firmware emulator on a pty and the edge
daemon talking to it, configured in a work directory, with a host-link client attached.

Used by `edgetune demo`, the end-to-end tests (as a pytest fixture) and the HIL scenarios.
"""
from __future__ import annotations

import asyncio
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.link.host_udp import HostClient
from controller.link.auth import Keyring, load_keyring, write_keyfile
from controller.policy.slot import ACTIVE_FILE

EMULATOR_START_S = 30.0  # the emulator prints its pty path within this


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_toml(cfg: dict[str, Any], prefix: str = "") -> str:
    """A nested dict of sections → TOML text (the small subset the edge config needs)."""
    scalars = [f"{k} = {_toml(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    out = ([f"[{prefix}]"] if prefix and scalars else []) + scalars
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.append(to_toml(v, f"{prefix}.{k}" if prefix else k))
    return "\n".join(out) + "\n"


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _edgetune(*args: str) -> list[str]:
    return [sys.executable, "-m", "hil.cli", *args]


@dataclass
class SimulatedStand:
    """``async with SimulatedStand(workdir) as stand:`` — emulator + daemon up, ``stand.client`` open."""

    workdir: Path
    device: str = "mems"
    speed: float = 1.0  # emulator speed (1 = real time)
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)  # overrides merged into the edge config
    emulator_args: tuple[str, ...] = ()
    serial_faults: bool = False  # emulator takes fault lines on stdin; the port is a stable symlink
    client_addr: tuple[str, int] | None = None  # where the host client sends (a fault proxy); None: the edge
    emulator: subprocess.Popen | None = None
    daemon: subprocess.Popen | None = None
    client: HostClient | None = None
    port: str = ""
    keyring: Keyring | None = None
    edge_config: dict[str, Any] = field(default_factory=dict)

    @property
    def key_file(self) -> Path:
        return self.workdir / "hostlink.keys"

    @property
    def config_file(self) -> Path:
        return self.workdir / "edge.toml"

    @property
    def recorder_path(self) -> Path:
        return Path(self.edge_config["recorder"]["path"])

    @property
    def device_link(self) -> Path:
        return self.workdir / "dev" / self.device

    def start_emulator(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / f"sim-{self.device}.log", "ab")
        extra: tuple[str, ...] = ()
        if self.serial_faults:
            self.device_link.parent.mkdir(exist_ok=True)
            extra = ("--control-stdin", "--link", str(self.device_link))
        self.emulator = subprocess.Popen(
            _edgetune("sim", self.device, "--seed", str(self.seed), "--speed", str(self.speed),
                      *self.emulator_args, *extra),
            stdout=subprocess.PIPE, stderr=log, text=True,
            stdin=subprocess.PIPE if self.serial_faults else None)
        # the first line is the device path; a loaded machine may take seconds to import and open the pty
        ready, _, _ = select.select([self.emulator.stdout], [], [], EMULATOR_START_S)
        line = self.emulator.stdout.readline().strip() if ready else f"nothing within {EMULATOR_START_S:g} s"
        if not line.startswith("/dev/"):
            raise RuntimeError(f"emulator did not print a device path (got {line!r}); see {log.name}")
        self.port = str(self.device_link) if self.serial_faults else line
        return self.port

    def emulator_control(self, line: str) -> None:
        """Send one fault line to the emulator (``serial_faults=True``; firmware_sim.mems.emulator.CONTROL_HELP)."""
        assert self.emulator is not None and self.emulator.stdin is not None, "start with serial_faults=True"
        self.emulator.stdin.write(line.rstrip("\n") + "\n")
        self.emulator.stdin.flush()

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.key_file.exists():
            write_keyfile(self.key_file)
        self.keyring = load_keyring(self.key_file)
        base = {
            "device": {"port": self.port},
            "hostlink": {"port": free_udp_port(), "key_file": str(self.key_file),
                         "state_file": str(self.workdir / "hostlink-state.json"), "telemetry_decimation": 1},
            "recorder": {"path": str(self.workdir / "run.sqlite")},
            "metrics": {"port": free_tcp_port()},
            "policy": {"dir": str(self.workdir / "policies"), "push_port": free_tcp_port()},
        }
        self.edge_config = deep_merge(base, self.config)
        self.config_file.write_text(to_toml(self.edge_config))
        return self.config_file

    def start_daemon(self) -> subprocess.Popen:
        log = open(self.workdir / "daemon.log", "ab")
        self.daemon = subprocess.Popen(_edgetune("daemon", "--config", str(self.config_file)),
                                       stdout=log, stderr=subprocess.STDOUT)
        return self.daemon

    @property
    def edge_addr(self) -> tuple[str, int]:
        return ("127.0.0.1", int(self.edge_config["hostlink"]["port"]))

    @property
    def push_addr(self) -> tuple[str, int]:
        return ("127.0.0.1", int(self.edge_config["policy"]["push_port"]))

    async def connect(self, timeout_s: float = 20.0) -> HostClient:
        """Open the host client and wait until the daemon answers a ping."""
        assert self.keyring is not None
        self.client = await HostClient(self.client_addr or self.edge_addr, self.keyring, key_id=self.keyring.newest).open()
        deadline = time.monotonic() + timeout_s
        while True:
            if self.daemon is not None and self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.daemon.returncode}: "
                                   f"{(self.workdir / 'daemon.log').read_text()[-2000:]}")
            try:
                await self.client.ping()
                return self.client
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    async def __aenter__(self) -> SimulatedStand:
        self.start_emulator()
        self.write_config()
        # a fresh stand: the daemon does not bring back a policy an earlier run in this folder left active
        (Path(self.edge_config["policy"]["dir"]) / ACTIVE_FILE).unlink(missing_ok=True)
        self.start_daemon()
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def terminate_daemon(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        if self.daemon is None or self.daemon.poll() is not None:
            return self.daemon.returncode if self.daemon else 0
        self.daemon.send_signal(sig)
        try:
            return self.daemon.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            return self.daemon.wait(timeout_s)  # SIGKILL cannot be refused: only a stuck kernel would time out

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        await asyncio.to_thread(self.terminate_daemon)
        if self.emulator is not None and self.emulator.poll() is None:
            self.emulator.terminate()
            try:
                self.emulator.wait(5)
            except subprocess.TimeoutExpired:
                self.emulator.kill()
                self.emulator.wait(5)

