"""Run in the databroker venv (`make databroker-env`), not the project's: insert every run of a documents
directory (`<uid>.jsonl`) into a temporary databroker 2 catalog (Tiled in process over mongomock, the AD_HDF5
handler reading the images) and print, as JSON, per start uid what the catalog gives back: plan name, exit
status, and each stream's variables with their shapes and first values."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from databroker import temp


def main(directory: Path) -> None:
    catalog = temp()
    uids = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.open():
            name, doc = json.loads(line)
            catalog.v1.insert(name, doc)
            uids += [doc["uid"]] if name == "start" else []
    out = {}
    for uid in uids:
        run = catalog.v2[uid]
        streams = {s: {k: {"shape": list(v.shape), "values": v.values.ravel()[:64].tolist()}
                       for k, v in run[s].read().data_vars.items()} for s in run}
        out[uid] = {"plan_name": run.metadata["start"]["plan_name"],
                    "exit_status": run.metadata["stop"]["exit_status"], "streams": streams}
    print(json.dumps(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
