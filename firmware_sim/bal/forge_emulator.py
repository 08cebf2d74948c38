"""The atom forge firmware: one atom pushed by a focused beam among fixed background atoms whose TRUE well depths
live only here (the edge estimates them), served over a real pty with the binary protocol (controller/protocol/
bal.py, docs/protocol.md forge section).

The physics is the problem's controlled SDE (controller/modes/bal/problem.py, ``load_problem("forge")`` or a TOML
file): firmware_sim/bal/env.py's Euler–Maruyama step with the true θ and seeded noise, one step Δt per command
(lockstep, so an edge episode is reproducible). The device refuses what the hardware would: a force above F_max or
negative, a start outside the position box (OUT_OF_RANGE), NaN (NOT_FINITE), a force before any StartEpisode
(BAD_PARAM), a force once the atom has left the box or after the problem's N steps (OUT_OF_RANGE: the episode is
over). The position is read back
as the centroid of a noisy spot image (firmware_sim/bal/camera.py). `Forge` is the device without the wire (the
in-process reference of the HIL scenario drives it); `ForgeEmulator` serves it on a pty.
"""
from __future__ import annotations

import math

import numpy as np

from controller.protocol import bal, common, framing
from firmware_sim.bal.camera import Camera, CameraParams
from firmware_sim.serial_device import EmulatedDevice, Reply

E = common.ErrorCode


class Forge:
    """The instrument's state: the SDE (``env``), the camera, the episode's step count. ``problem``: a
    controller.modes.bal.problem.Problem of kind "forge"."""

    def __init__(self, problem, seed: int, camera: CameraParams = CameraParams()) -> None:
        from firmware_sim.bal.env import SdeEnv

        if problem.kind != "forge":
            raise ValueError(f"the forge serves a forge problem, got {problem.name!r} of kind {problem.kind!r}")
        self.problem = problem
        self.env = SdeEnv(problem, batch=1, seed=seed)
        self.camera = Camera(camera, (seed, 1))  # its own stream, not the SDE's
        self.low, self.high = np.asarray(problem.domain_low, float), np.asarray(problem.domain_high, float)
        self.x: np.ndarray | None = None  # the true position (2,); None before the first StartEpisode
        self.step = 0

    def inside(self, x: np.ndarray) -> bool:
        return bool(np.all(x >= self.low) and np.all(x <= self.high))

    def info(self) -> bal.Info:
        p = self.problem
        return bal.Info(float(p.dt), float(p.u_max), *self.low.tolist(), *self.high.tolist())

    def handle(self, msg: framing.Message) -> Reply | None:
        """The reply to a forge message (None: not one of the forge's own)."""
        match msg:
            case bal.StartEpisode(x=x, y=y):
                return self.start(np.array([x, y]))
            case bal.Force():
                return self.force(msg)
            case bal.InfoRequest():
                return self.info()
        return None

    def start(self, x0: np.ndarray) -> Reply:
        if not np.all(np.isfinite(x0)):
            return E.NOT_FINITE
        if not self.inside(x0):
            return E.OUT_OF_RANGE
        self.x, self.step = self.env.reset(x0[None])[0], 0
        return self._reading(np.zeros(2))

    def force(self, msg: bal.Force) -> Reply:
        if not (math.isfinite(msg.magnitude) and math.isfinite(msg.angle_rad)):
            return E.NOT_FINITE
        if self.x is None:
            return E.BAD_PARAM
        if (not 0.0 <= msg.magnitude <= self.problem.u_max or not self.inside(self.x)
                or self.step >= self.problem.steps):
            return E.OUT_OF_RANGE
        u = msg.vector()
        x_next, _ = self.env.step(u[None])
        self.x, self.step = x_next[0], self.step + 1
        return self._reading(u)

    def _reading(self, u: np.ndarray) -> bal.Position:
        """The read-back after this step; device time is the episode's SDE time n·Δt."""
        x = self.camera.read(self.x)
        return bal.Position(self.step & 0xFFFFFFFF, int(round(self.step * self.problem.dt * 1e6)), float(x[0]),
                            float(x[1]), float(u[0]), float(u[1]), self.inside(self.x))


class ForgeEmulator(EmulatedDevice):
    DEVICE = bal.FORGE.device or ""
    FW_VERSION = "0.1.0"
    MESSAGES = bal.FORGE

    def __init__(self, problem, *, camera: CameraParams = CameraParams(), seed: int = 0, speed: float = 1.0,
                 tick_hz: float = 100.0, tx_buffer: int = 4096, rx_buffer: int = 4095) -> None:
        self.problem, self.camera_params = problem, camera
        super().__init__(seed=seed, speed=speed, tick_hz=tick_hz, tx_buffer=tx_buffer, rx_buffer=rx_buffer)

    def _reset_physics(self, seed: int) -> None:
        """Power-on / Reset: the SDE and camera RNGs re-seeded, no episode."""
        self.forge = Forge(self.problem, seed, self.camera_params)

    def _handle(self, msg: framing.Message) -> Reply:
        reply = self.forge.handle(msg)
        return super()._handle(msg) if reply is None else reply

    def _tick(self) -> None:
        """Nothing to advance: the SDE steps in lockstep with the commands."""
