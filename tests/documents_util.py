"""Tests' checks of Bluesky documents (controller/documents.py): load a run's JSON-lines file, validate every
document with event-model's own schemas and a DocumentRouter walk, and resolve external data in HDF5."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import event_model as em
import h5py
import numpy as np

from controller.documents import IMAGE_DATASET, IMAGE_SPEC

Doc = tuple[str, dict[str, Any]]


def load(path: Path) -> list[Doc]:
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()]  # type: ignore[misc]


class Checker(em.DocumentRouter):
    """Walks a run's documents in order: every one valid by schema, references in order (descriptor before its
    events, resource before its datums, datums before the events that name them), counts events per stream."""

    def __init__(self) -> None:
        super().__init__()
        self.start_doc: dict | None = None
        self.stop_doc: dict | None = None
        self.streams: dict[str, str] = {}  # descriptor uid → stream name
        self.keys: dict[str, dict] = {}  # stream → its data keys
        self.resources: dict[str, dict] = {}
        self.datums: dict[str, dict] = {}
        self.events: Counter[str] = Counter()
        self.data: dict[str, dict[str, list]] = {}  # stream → key → values (event order)

    def __call__(self, name: str, doc: dict) -> Any:
        em.schema_validators[em.DocumentNames[name]].validate(doc)
        assert self.stop_doc is None, f"{name} after the stop"
        assert name == "start" or self.start_doc is not None, f"{name} before the start"
        return super().__call__(name, doc)

    def start(self, doc: dict) -> None:  # type: ignore[override]
        self.start_doc = doc

    def descriptor(self, doc: dict) -> None:  # type: ignore[override]
        assert doc["run_start"] == self.start_doc["uid"]
        self.streams[doc["uid"]] = doc["name"]
        self.keys[doc["name"]] = doc["data_keys"]

    def resource(self, doc: dict) -> None:  # type: ignore[override]
        assert doc["run_start"] == self.start_doc["uid"]
        self.resources[doc["uid"]] = doc

    def datum(self, doc: dict) -> None:  # type: ignore[override]
        assert doc["resource"] in self.resources
        self.datums[doc["datum_id"]] = doc

    def event_page(self, doc: dict) -> None:  # type: ignore[override]
        stream = self.streams[doc["descriptor"]]
        self.events[stream] += len(doc["seq_num"])
        for key, values in doc["data"].items():
            self.data.setdefault(stream, {}).setdefault(key, []).extend(values)
            for value, filled in zip(values, doc["filled"].get(key, [])):
                assert not filled and value in self.datums, f"{key}: datum {value} not emitted before its event"

    def event(self, doc: dict) -> None:  # type: ignore[override]
        self.event_page(em.pack_event_page(doc))

    def stop(self, doc: dict) -> None:  # type: ignore[override]
        assert doc["run_start"] == self.start_doc["uid"]
        assert doc["num_events"] == dict(self.events), (doc["num_events"], self.events)
        self.stop_doc = doc


def check_run(path: Path) -> Checker:
    """Validate one run's file (module doc); its name is the start's uid."""
    checker = Checker()
    for name, doc in load(path):
        checker(name, doc)
    assert checker.start_doc is not None and checker.stop_doc is not None, f"{path}: no start/stop pair"
    assert path.stem == checker.start_doc["uid"]
    return checker


def image(checker: Checker, stream: str, key: str, k: int) -> np.ndarray:
    """The image event ``k`` of ``stream`` names under ``key``, read as the area-detector handler reads a datum
    (frames ``point_number × frame_per_point`` … of the resource's file), its shape checked against the
    descriptor's; returned without the leading frame axis."""
    datum = checker.datums[checker.data[stream][key][k]]
    res = checker.resources[datum["resource"]]
    assert res["spec"] == IMAGE_SPEC and res["resource_kwargs"] == {"frame_per_point": 1}
    point, fpp = datum["datum_kwargs"]["point_number"], res["resource_kwargs"]["frame_per_point"]
    with h5py.File(Path(res["root"]) / res["resource_path"], "r") as f:
        frames = f[IMAGE_DATASET][point * fpp:(point + 1) * fpp]
    assert list(frames.shape) == checker.keys[stream][key]["shape"]
    return frames[0]


def runs(directory: Path) -> dict[str, Checker]:
    """Every run in a directory by its ``edgetune.run`` kind + n (ticks, scan-1, …), each checked."""
    out = {}
    for path in sorted(directory.glob("*.jsonl")):
        c = check_run(path)
        meta = c.start_doc["edgetune"]
        out[meta["run"] if meta["run"] == "ticks" else f"{meta['run']}-{c.start_doc['scan_id']}"] = c
    return out
