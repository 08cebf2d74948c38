"""Edge daemon configuration: pydantic v2 models loaded from TOML (deploy/edge.toml documents every key).

Every section has defaults, so an empty file is a valid configuration; unknown keys are errors.
``load_config`` turns validation failures into one ``ConfigError`` whose lines name the file and the
key path, e.g. ``edge.toml: pid.x.kp: Input should be a valid number``.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from controller.modes.bal.config import ForgeConfig
from controller.modes.ct.config import AnglesConfig
from controller.modes.mems.pid import BASELINE_GAINS
from controller.modes.ptycho.config import PtychoConfig
from controller.modes.scatter.config import ScatterConfig
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """The configuration file is unreadable or invalid; the message names file and key path."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)


class Range(_Section):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class AxisPair(_Section):
    x: float = 0.0
    y: float = 0.0


class VoltageLimits(_Section):
    x: Range = Range(min=-20000.0, max=20000.0)
    y: Range = Range(min=-20000.0, max=20000.0)


class DeviceConfig(_Section):
    port: str = "/dev/ttyACM0"  # serial device (or a pty from `edgetune sim mems`)
    baud: int = Field(115200, gt=0)
    reconnect_backoff_min_s: float = Field(0.1, gt=0)
    reconnect_backoff_max_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(0.5, gt=0)
    safe_voltage_v: AxisPair = AxisPair()  # written on faults and for non-finite commands [V]
    voltage_limits_v: VoltageLimits = VoltageLimits()  # the safety gate's clamp [V]

    @model_validator(mode="after")
    def _backoff(self) -> DeviceConfig:
        if self.reconnect_backoff_min_s > self.reconnect_backoff_max_s:
            raise ValueError("reconnect_backoff_min_s must be <= reconnect_backoff_max_s")
        return self


class LoopConfig(_Section):
    rate_hz: float = Field(120.0, gt=0)
    pacing: Literal["frames", "timer"] = "frames"
    mode: str = "stabilize"  # a registered mode (controller/modes/registry.py, checked by the daemon command)
    realtime_priority: int = Field(0, ge=0, le=99)  # SCHED_FIFO priority of the tick loop's thread; 0: normal


class PidAxisConfig(_Section):
    kp: float  # V/px
    ki: float  # V/(px·s)
    kd: float  # V·s/px
    tau_s: float = Field(0.01, ge=0)  # derivative low-pass time constant
    output_v: Range = Range(min=-20000.0, max=20000.0)


# The paper's Table 1 gains are per camera frame; in SI units at 120 Hz (controller.modes.mems.pid.per_frame_to_si):
_BASELINE = {axis: dict(zip(("kp", "ki", "kd"), map(float, row))) for axis, row in zip("xy", BASELINE_GAINS)}


class PidConfig(_Section):
    """Gains default to the paper baseline (mems-mirror-pid-rl, Table 1, a_baseline), key by key."""

    x: PidAxisConfig = PidAxisConfig(**_BASELINE["x"])
    y: PidAxisConfig = PidAxisConfig(**_BASELINE["y"])

    @model_validator(mode="before")
    @classmethod
    def _fill_baseline(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: {**_BASELINE[k], **v} if k in _BASELINE and isinstance(v, dict) else v
                    for k, v in data.items()}
        return data


class TargetConfig(_Section):
    x_px: float = 0.0
    y_px: float = 0.0


class AxisEnvelope(_Section):
    """Gains the host may set on one axis; requests outside are clamped (and the Ack says so)."""

    kp: Range = Range(min=0.0, max=60.0)
    ki: Range = Range(min=0.0, max=6000.0)
    kd: Range = Range(min=0.0, max=0.5)


class GainEnvelope(_Section):
    x: AxisEnvelope = AxisEnvelope()
    y: AxisEnvelope = AxisEnvelope()
    # host-set gains also lie in this set's I_max(P) (controller/modes/mems/gain_sets.py): robust | wide | box
    gain_set: Literal["robust", "wide", "box"] = "wide"


class HostLinkConfig(_Section):
    host: str = "127.0.0.1"  # bind address; loopback unless opened on purpose
    port: int = Field(9750, ge=0, le=65535)  # 0: any free port (tests)
    telemetry_decimation: int = Field(4, ge=1)  # send every n-th tick
    silence_timeout_s: float = Field(2.0, gt=0)  # link "lost" (baseline gains) after this silence
    key_file: Path = Path("/etc/edgetune/hostlink.keys")
    max_clock_skew_s: float = Field(5.0, gt=0)
    replay_window: int = Field(128, ge=1, le=4096)
    state_file: Path = Path("/var/lib/edgetune/hostlink-state.json")
    mailbox_size: int = Field(64, ge=1)
    envelope: GainEnvelope = GainEnvelope()


class RecorderConfig(_Section):
    path: Path = Path("/var/lib/edgetune/run.sqlite")
    batch_rows: int = Field(256, ge=1)
    flush_ms: float = Field(200.0, gt=0)
    max_bytes: int = Field(0, ge=0)  # retention: delete the oldest sessions beyond this much data; 0: no limit
    max_age_days: float = Field(0.0, ge=0)  # retention: delete sessions older than this; 0: no limit
    retention_check_s: float = Field(60.0, gt=0)  # how often the writer checks the retention limits
    # Bluesky event-model documents of every run, written live into this directory (controller/documents.py;
    # needs the `docs` extra); unset: none (`edgetune export-docs` writes them from the store later)
    documents: Path | None = None


class MetricsConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)


class PolicyConfig(_Section):
    dir: Path = Path("/var/lib/edgetune/policies")
    decision_every_n_ticks: int = Field(12, ge=1)
    max_inference_fraction: float = Field(0.25, gt=0, le=1)  # of the tick period, median probe inference
    max_history: int = Field(64, ge=1, le=4096)  # longest observation history (k) a policy may ask for
    push_host: str = "127.0.0.1"  # model-push TCP server; loopback unless opened on purpose
    push_port: int = Field(9751, ge=0, le=65535)  # 0: any free port (tests)
    max_model_bytes: int = Field(16 * 1024 * 1024, ge=1)
    io_timeout_s: float = Field(10.0, gt=0)  # a push must arrive within this
    swap_timeout_s: float = Field(2.0, gt=0)  # a validated model not swapped in by a tick within this is refused
    validate_timeout_s: float = Field(10.0, gt=0)  # a validation longer than this is refused (its process killed)
    preauth_timeout_s: float = Field(2.0, gt=0)  # a connection's authenticated preamble must arrive within this
    max_unauthenticated: int = Field(32, ge=1, le=4096)  # connections waiting for their preamble (oldest evicted)
    max_connections: int = Field(64, ge=1, le=4096)  # open push connections at most (file descriptors)
    # run-time containment (controller/policy/guard.py): failures (error, over budget, ended, non-finite output)
    runtime_max_failures: int = Field(3, ge=0)  # this many within the window quarantine the policy; 0: never
    runtime_failure_window_s: float = Field(10.0, gt=0)
    runtime_terminate_factor: float = Field(4.0, gt=1)  # an inference running this many budgets (wall clock) is ended
    # artifact signatures (controller/policy/signature.py): a file of `id:hex` Ed25519 public keys; unsigned
    # artifacts are refused when it is set, unless allow_unsigned = true (unset: allowed only without trusted_keys)
    trusted_keys: Path | None = None
    allow_unsigned: bool | None = None

    @model_validator(mode="after")
    def _connection_caps(self) -> PolicyConfig:
        if self.max_unauthenticated > self.max_connections:
            raise ValueError("max_unauthenticated must be <= max_connections")
        return self


class EpicsConfig(_Section):
    """Channel Access PVs served by the daemon (controller/epics, docs/epics.md); needs the ``epics`` extra."""

    enabled: bool = False
    prefix: str = Field("EDGE", pattern=r"^[A-Za-z0-9_\-.:]*[A-Za-z0-9_\-.]$", max_length=32)  # PV = prefix:Name
    host: str = "127.0.0.1"  # the one interface served (TCP and UDP search); loopback unless opened on purpose
    port: int = Field(5064, ge=1, le=65535)  # CA server port (UDP searches; the first TCP port tried)
    rate_hz: float = Field(20.0, gt=0, le=50)  # read-back PVs are published at most this often
    deadband_px: float = Field(0.01, ge=0)  # spot, target and error post only when they move more than this [px]
    deadband_us: float = Field(1.0, ge=0)  # lateness p99 [µs]
    deadband_hz: float = Field(0.1, ge=0)  # tick rate [Hz]
    writes: bool = False  # set points (-SP) refuse every write unless true ...
    write_hosts: tuple[str, ...] = ()  # ... and the client's (self-reported, spoofable) host name is listed
    max_connections: int = Field(16, ge=1, le=1024)  # open CA circuits; more are closed at once
    max_channels: int = Field(64, ge=1, le=4096)  # per connection; one more closes the connection
    max_subscriptions: int = Field(128, ge=1, le=65536)  # per connection; one more closes the connection
    max_request_bytes: int = Field(16384, ge=1024, le=1 << 20)  # a request buffered beyond this closes the connection
    max_queued_requests: int = Field(256, ge=16, le=10000)  # per connection, parsed but not yet handled
    handshake_timeout_s: float = Field(2.0, gt=0)  # a connection that opens no channel within this is closed
    max_pending_puts: int = Field(4, ge=1, le=64)  # set-point puts in flight at once; more are refused
    settle_tolerance_px: float = Field(1.0, gt=0)  # "settled": |spot - target| below this ...
    settle_ticks: int = Field(12, ge=1)  # ... for this many consecutive ticks
    settle_timeout_s: float = Field(5.0, gt=0)  # a target put not settled within this fails
    apply_timeout_s: float = Field(1.0, gt=0)  # a gains put not applied by a tick within this fails
    nice: int = Field(0, ge=0, le=19)  # the CA process's niceness (never a real-time class; docs/epics.md)

    @model_validator(mode="after")
    def _write_hosts(self) -> EpicsConfig:
        if self.writes and not self.write_hosts:
            raise ValueError("writes = true needs write_hosts (the client host names allowed to write)")
        return self


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_lines: bool = Field(False, alias="json")


class EdgeConfig(_Section):
    device: DeviceConfig = DeviceConfig()
    loop: LoopConfig = LoopConfig()
    pid: PidConfig = PidConfig()
    target: TargetConfig = TargetConfig()
    hostlink: HostLinkConfig = HostLinkConfig()
    recorder: RecorderConfig = RecorderConfig()
    metrics: MetricsConfig = MetricsConfig()
    policy: PolicyConfig = PolicyConfig()
    angles: AnglesConfig = AnglesConfig()  # loop.mode "angles" (controller/modes/ct/session.py)
    ptycho: PtychoConfig = PtychoConfig()  # loop.mode "ptycho" (controller/modes/ptycho/session.py)
    scatter: ScatterConfig = ScatterConfig()  # loop.mode "transceiver" (controller/modes/scatter/session.py)
    forge: ForgeConfig = ForgeConfig()  # loop.mode "forge" (controller/modes/bal/forge.py)
    epics: EpicsConfig = EpicsConfig()  # Channel Access PVs (controller/epics)
    log: LogConfig = LogConfig()

    @model_validator(mode="before")
    @classmethod
    def _mode_loop_defaults(cls, data: Any) -> Any:
        """A mode's section may carry ``MODE`` and ``LOOP_DEFAULTS`` (the forge: timer pacing at 100 Hz): [loop] keys
        the file leaves unset take them."""
        if not isinstance(data, dict) or not isinstance(data.get("loop", {}), dict):
            return data
        loop = data.get("loop", {})
        for field in cls.model_fields.values():
            if "mode" in loop and getattr(field.annotation, "MODE", None) == loop["mode"]:
                return {**data, "loop": {**field.annotation.LOOP_DEFAULTS, **loop}}
        return data


def parse_config(data: dict[str, Any], source: str = "<config>") -> EdgeConfig:
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: {'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}" for err in e.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> EdgeConfig:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{p.name}: {e}") from None
    return parse_config(data, p.name)
