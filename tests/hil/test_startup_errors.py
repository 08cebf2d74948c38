"""`edgetune daemon` refuses to start in one line (exit status 2, no traceback) for every start-up error, and a
failed start leaves no unclosed recorder session behind."""
from __future__ import annotations

import asyncio
import socket
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from controller.recorder import Recorder
from hil.stand import SimulatedStand, deep_merge, to_toml

ROOT = Path(__file__).resolve().parents[2]
Setup = Callable[[Path, dict[str, Any], ExitStack], dict[str, Any]]


def _occupy(kind: int, cfg: dict[str, Any], section: str, key: str, stack: ExitStack) -> dict[str, Any]:
    s = stack.enter_context(socket.socket(socket.AF_INET, kind))
    s.bind(("127.0.0.1", int(cfg[section][key])))
    if kind == socket.SOCK_STREAM:
        s.listen()
    return {}


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CASES: dict[str, tuple[Setup, str]] = {
    "udp port in use": (lambda d, c, s: _occupy(socket.SOCK_DGRAM, c, "hostlink", "port", s), "Address already in use"),
    "push port in use": (lambda d, c, s: _occupy(socket.SOCK_STREAM, c, "policy", "push_port", s),
                         "address already in use"),
    "metrics port in use": (lambda d, c, s: _occupy(socket.SOCK_STREAM, c, "metrics", "port", s),
                            "Address already in use"),
    "recorder directory missing": (lambda d, c, s: {"recorder": {"path": str(d / "gone" / "run.sqlite")}},
                                   "recorder directory"),
    "recorder not a database": (lambda d, c, s: {"recorder": {"path": str(_file(d / "junk.sqlite", "x" * 4096))}},
                                "file is not a database"),
    "corrupt replay state": (lambda d, c, s: {"hostlink": {"state_file": str(_file(d / "state.json", "{not json"))}},
                             "corrupt host-link replay state"),
    "unresolvable host-link host": (lambda d, c, s: {"hostlink": {"host": "no-such-host.invalid"}}, "host link"),
    "invalid metrics host": (lambda d, c, s: {"metrics": {"host": "256.0.0.1"}}, "metrics server"),
    "state file directory missing": (lambda d, c, s: {"hostlink": {"state_file": str(d / "gone" / "state.json")}},
                                     "host-link state file"),
    "state file is a directory": (lambda d, c, s: {"hostlink": {"state_file": str(d)}}, "is a directory"),
    "device port is a regular file": (lambda d, c, s: {"device": {"port": str(_file(d / "tty", ""))}},
                                      "is a regular file"),
    "device port is a directory": (lambda d, c, s: {"device": {"port": str(d)}}, "is a directory"),
    "device port is /dev/null": (lambda d, c, s: {"device": {"port": "/dev/null"}}, "not a tty"),
    "EPICS host not on this machine": (lambda d, c, s: {"epics": {"enabled": True, "host": "192.0.2.1", "port": 45064}},
                                       "EPICS server on 192.0.2.1:45064"),
}


@contextmanager
def _configs(tmp_path: Path) -> Iterator[list[tuple[str, Path, Path, str]]]:
    """Per case: (name, config file, recorder store, expected text); the store holds one closed session."""
    out = []
    with ExitStack() as stack:
        for i, (name, (setup, expect)) in enumerate(CASES.items()):
            stand = SimulatedStand(tmp_path / f"case{i}")
            stand.port = str(stand.workdir / "no-device")  # unplugged: waited for, not refused
            stand.write_config()
            extra = setup(stand.workdir, stand.edge_config, stack)
            cfg = deep_merge(stand.edge_config, extra)
            Recorder.open(stand.recorder_path).close()
            stand.config_file.write_text(to_toml(cfg))
            out.append((name, stand.config_file, stand.recorder_path, expect))
        yield out


async def _daemon(config: Path) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "hil.cli", "daemon", "--config", str(config),
                                                cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        _, err = await proc.communicate()
    return proc.returncode, err.decode()


def _unclosed(store: Path) -> list[int]:
    with sqlite3.connect(store) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM sessions WHERE ended_wall_ns IS NULL")]


@pytest.mark.hil
async def test_every_startup_error_is_one_line_and_exit_status_2(tmp_path) -> None:
    with _configs(tmp_path) as cases:
        limit = asyncio.Semaphore(3)

        async def run(config: Path) -> tuple[int | None, str]:
            async with limit:
                return await _daemon(config)

        results = await asyncio.gather(*(run(config) for _, config, _, _ in cases))
    bad = []
    for (name, _, store, expect), (rc, err) in zip(cases, results):
        lines = err.splitlines()
        ok = (rc == 2 and len(lines) == 1 and lines[0].startswith("refusing to start: ") and expect in lines[0]
              and "Traceback" not in err and not (store.exists() and _unclosed(store)))
        if not ok:
            bad.append(f"{name}: rc {rc}, unclosed {_unclosed(store) if store.exists() else None}, stderr "
                       f"{err[-300:]!r}")
    assert not bad, "\n".join(bad)
