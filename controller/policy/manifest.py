"""The policy artifact's manifest: `model.onnx` + `manifest.json` (schema v1).

Written by the host's exporter (learner/export.py), read by the edge to validate a pushed model
before it may drive a mode. No torch here. The ONNX graph takes raw observations `obs` of shape
(batch, obs_dim) float32 and returns physical actions `action` of shape (batch, act_dim) float32,
already normalised, rescaled to [low, high] and clipped inside the graph; the normalisation and
bounds are recorded here so the edge can check them against its configuration.
"""
from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
# a version names the edge's install folder (<version>-<sha256[:12]>) and is listed in its status: nothing that a
# file system, a shell or a log line could read otherwise, and never a hidden name
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class ManifestError(ValueError):
    """A manifest that cannot be parsed or does not match its model; the message says why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalisation(_Strict):
    """obs_normalised = (obs − mean) / std, applied inside the graph."""

    mean: list[float]
    std: list[float]


class ObservationSpec(_Strict):
    name: Literal["obs"] = "obs"
    shape: tuple[int] = Field(description="per-sample shape (obs_dim,); the graph adds a leading batch axis")
    dtype: Literal["float32"] = "float32"
    units: list[str]
    normalisation: Normalisation

    @model_validator(mode="after")
    def _check(self) -> ObservationSpec:
        (n,) = self.shape
        if n < 1:
            raise ValueError(f"observation shape must be positive, got {self.shape}")
        for field, v in (("units", self.units), ("normalisation.mean", self.normalisation.mean), ("normalisation.std", self.normalisation.std)):
            if len(v) != n:
                raise ValueError(f"observation {field} has {len(v)} entries, shape says {n}")
        if not all(math.isfinite(m) for m in self.normalisation.mean):
            raise ValueError("observation normalisation.mean must be finite")
        if not all(math.isfinite(s) and s > 0 for s in self.normalisation.std):
            raise ValueError("observation normalisation.std must be finite and > 0")
        return self


class ActionSpec(_Strict):
    name: Literal["action"] = "action"
    shape: tuple[int] = Field(description="per-sample shape (act_dim,)")
    dtype: Literal["float32"] = "float32"
    units: list[str]
    low: list[float]
    high: list[float]

    @model_validator(mode="after")
    def _check(self) -> ActionSpec:
        (n,) = self.shape
        if n < 1:
            raise ValueError(f"action shape must be positive, got {self.shape}")
        for field, v in (("units", self.units), ("low", self.low), ("high", self.high)):
            if len(v) != n:
                raise ValueError(f"action {field} has {len(v)} entries, shape says {n}")
        for i, (lo, hi) in enumerate(zip(self.low, self.high)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"action bound {i} must be finite with low < high, got [{lo}, {hi}]")
        return self


class Manifest(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    task: str = Field(min_length=1, description="the mode this policy drives, e.g. 'mems-pid-gains'")
    version: str
    observation: ObservationSpec
    action: ActionSpec
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

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def as_version(text: str) -> str:
    """`text` made a valid version: other characters become "_", a leading non-alphanumeric part goes, cut to 64."""
    return (re.sub(r"[^A-Za-z0-9._+-]", "_", text).lstrip("._+-") or "policy")[:64]


def parse_manifest(text: str | bytes) -> Manifest:
    """Parse and validate manifest JSON; raises ManifestError listing every problem."""
    try:
        return Manifest.model_validate_json(text)
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
