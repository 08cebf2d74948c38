"""The policy artifact's manifest: `model.onnx` + `manifest.json` (schema v2; v1 still loads).

Written by the host's exporter (learner/export.py), read by the edge to validate a pushed model before it
may drive a mode. No torch here. Schema v2 lists the graph's named `inputs` and `outputs` (per-sample
`shape`, the graph adds a leading batch axis of 1 or dynamic; dtype float32; `units` one per element, or one
for all), with an input's `normalisation` (applied inside the graph; recorded so the edge can check it) and
an output's `bounds` [low, high] (the graph clips to them), and optional recurrent `state` tensors: a graph
input `name` of `shape` that starts at `initial` and is fed the graph output `next` of the previous decision
(controller/policy/runtime.py carries it and resets it per session). A v1 manifest (one flat `observation`,
one flat `action`) is read as the v2 manifest of one input "obs" and one output "action" (`Manifest.v1`).
A schema version this edge does not read is refused naming both versions.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 2
READS = (1, 2)  # the schema versions this edge reads
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
# a version names the edge's install folder (<version>-<sha256[:12]>) and is listed in its status: nothing that a
# file system, a shell or a log line could read otherwise, and never a hidden name
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
NAME_RE = r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,63}$"  # a graph input/output name


class ManifestError(ValueError):
    """A manifest that cannot be parsed or does not match its model; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _size(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _per_element(what: str, values: list, n: int) -> None:
    if len(values) not in (1, n):
        raise ValueError(f"{what} has {len(values)} entries, the shape has {n} elements (give 1 or {n})")


class Normalisation(_Strict):
    """normalised = (x − mean) / std, applied inside the graph (one entry per element, or one for all)."""

    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)


class Bounds(_Strict):
    """[low, high] per element (or one pair for all): the graph clips its output to them."""

    low: list[float] = Field(min_length=1)
    high: list[float] = Field(min_length=1)


class _Tensor(_Strict):
    name: str = Field(pattern=NAME_RE)
    shape: tuple[int, ...] = Field(min_length=1, description="per-sample shape; the graph adds a leading batch axis")
    dtype: Literal["float32"] = "float32"
    units: list[str] = Field(min_length=1)

    @property
    def size(self) -> int:
        return _size(self.shape)

    def _check_shape(self) -> int:
        if any(d < 1 for d in self.shape):
            raise ValueError(f"{self.name}: shape must be positive, got {self.shape}")
        _per_element(f"{self.name}: units", self.units, self.size)
        return self.size


class InputSpec(_Tensor):
    normalisation: Normalisation | None = None  # None: the graph takes the values as they are

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        n = self._check_shape()
        if (norm := self.normalisation) is not None:
            _per_element(f"{self.name}: normalisation.mean", norm.mean, n)
            _per_element(f"{self.name}: normalisation.std", norm.std, n)
            if not all(math.isfinite(m) for m in norm.mean):
                raise ValueError(f"{self.name}: normalisation.mean must be finite")
            if not all(math.isfinite(s) and s > 0 for s in norm.std):
                raise ValueError(f"{self.name}: normalisation.std must be finite and > 0")
        return self


class OutputSpec(_Tensor):
    bounds: Bounds

    @model_validator(mode="after")
    def _check(self) -> OutputSpec:
        n = self._check_shape()
        _per_element(f"{self.name}: bounds.low", self.bounds.low, n)
        _per_element(f"{self.name}: bounds.high", self.bounds.high, n)
        if len(self.bounds.low) != len(self.bounds.high):
            raise ValueError(f"{self.name}: bounds.low and bounds.high differ in length")
        for i, (lo, hi) in enumerate(zip(self.bounds.low, self.bounds.high)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{self.name}: bound {i} must be finite with low < high, got [{lo}, {hi}]")
        return self

    @property
    def low(self) -> list[float]:
        """Per element (a single bound repeated)."""
        return self.bounds.low * (self.size // len(self.bounds.low))

    @property
    def high(self) -> list[float]:
        return self.bounds.high * (self.size // len(self.bounds.high))


class StateSpec(_Strict):
    """A recurrent state: graph input `name` (per-sample `shape`), `initial` at the start of every session,
    then the graph output `next` of the previous decision."""

    name: str = Field(pattern=NAME_RE)
    shape: tuple[int, ...] = Field(min_length=1)
    dtype: Literal["float32"] = "float32"
    initial: float = 0.0
    next: str = Field(pattern=NAME_RE)

    @model_validator(mode="after")
    def _check(self) -> StateSpec:
        if any(d < 1 for d in self.shape) or not math.isfinite(self.initial):
            raise ValueError(f"{self.name}: need a positive shape and a finite initial value")
        return self


class Manifest(_Strict):
    schema_version: Literal[2] = SCHEMA_VERSION
    task: str = Field(min_length=1, description="the mode this policy drives, e.g. 'mems-pid-gains'")
    version: str
    inputs: list[InputSpec] = Field(min_length=1)
    outputs: list[OutputSpec] = Field(min_length=1)
    state: list[StateSpec] = Field(default_factory=list)
    decision_period_s: float = Field(gt=0, description="nominal decision period the policy was trained at [s]")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of model.onnx, lowercase hex")
    training_run: str = Field(min_length=1)
    created: datetime
    producer: dict[str, str] = Field(description="tool -> version, e.g. {'torch': '2.13.0', 'edgetune': '0.1.0'}")
    opset: int = Field(ge=17)

    @field_validator("version")
    @classmethod
    def _safe_version(cls, v: str) -> str:
        if not VERSION_RE.fullmatch(v):
            raise ValueError(f"must be 1 to 64 characters of A-Z a-z 0-9 . _ + -, starting with a letter or digit "
                             f"(it names the install folder), got {v[:80]!r}")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Manifest:
        ins = [t.name for t in self.inputs] + [s.name for s in self.state]
        outs = [t.name for t in self.outputs] + [s.next for s in self.state]
        for kind, names in (("input", ins), ("output", outs)):
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} names (state included) must be unique, got {names}")
        return self

    @property
    def observation(self) -> InputSpec:
        """The one input of a single-input policy (every v1 manifest)."""
        return _only("input", self.inputs)

    @property
    def action(self) -> OutputSpec:
        """The one output of a single-output policy (every v1 manifest)."""
        return _only("output", self.outputs)

    @classmethod
    def v1(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A v1 manifest's fields as v2's: `observation` → input "obs", `action` → output "action"."""
        out = {k: v for k, v in data.items() if k not in ("observation", "action")} | {"schema_version": 2}
        obs, act = data.get("observation"), data.get("action")
        if isinstance(obs, dict):
            out["inputs"] = [{k: v for k, v in obs.items() if k != "name"} | {"name": "obs"}]
        if isinstance(act, dict):
            bounds = {"low": act.get("low"), "high": act.get("high")}
            out["outputs"] = [{k: v for k, v in act.items() if k not in ("name", "low", "high")}
                              | {"name": "action", "bounds": bounds}]
        return out

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _only(kind: str, specs: list) -> Any:
    if len(specs) != 1:
        raise ManifestError(f"the policy has {len(specs)} {kind}s ({[s.name for s in specs]}), this use takes one")
    return specs[0]


def as_version(text: str) -> str:
    """`text` made a valid version: other characters become "_", a leading non-alphanumeric part goes, cut to 64."""
    return (re.sub(r"[^A-Za-z0-9._+-]", "_", text).lstrip("._+-") or "policy")[:64]


def parse_manifest(text: str | bytes) -> Manifest:
    """Parse and validate manifest JSON (v1 read as v2); raises ManifestError listing every problem."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestError(f"invalid manifest: not JSON ({str(e)[:200]})") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version not in READS:
        raise ManifestError(f"manifest schema version {version!r} is not read by this edge (it reads "
                            f"{' and '.join(map(str, READS))}; this edge writes {SCHEMA_VERSION})")
    try:
        return Manifest.model_validate(Manifest.v1(data) if version == 1 else data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '<root>'}: {err['msg']}" for err in e.errors())
        raise ManifestError(f"invalid manifest ({e.error_count()} problem(s)): {problems}") from None


def load_manifest(path: str | Path) -> Manifest:
    try:
        text = Path(path).read_bytes()
    except OSError as e:
        raise ManifestError(f"cannot read manifest {path}: {e.strerror}") from None
    return parse_manifest(text)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_artifact(directory: str | Path) -> tuple[Manifest, Path]:
    """Validate `directory`'s manifest.json and check model.onnx's sha256 against it."""
    d = Path(directory)
    manifest = load_manifest(d / MANIFEST_NAME)
    model = d / MODEL_NAME
    try:
        digest = file_sha256(model)
    except OSError as e:
        raise ManifestError(f"cannot read model {model}: {e.strerror}") from None
    if digest != manifest.sha256:
        raise ManifestError(f"{model}: sha256 {digest} does not match the manifest's {manifest.sha256}")
    return manifest, model


def write_manifest(manifest: Manifest, directory: str | Path) -> Path:
    path = Path(directory) / MANIFEST_NAME
    path.write_text(manifest.to_json())
    # Round-trip through the parser so that what we write is exactly what the edge accepts.
    parse_manifest(path.read_bytes())
    return path
