"""controller/lifeline.py: `python -m controller.lifeline PPID MODULE ARGS…` runs MODULE with its arguments, ends when
PPID ends (killed, here), and does not run at all when PPID is already gone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from proc_util import running, still_running

REPO = Path(__file__).parents[2]
SLEEPER = """import json, os, sys, time
open(os.environ["SLEEPER_OUT"], "w").write(json.dumps([__name__, sys.argv[1:]]))
time.sleep(60)
"""
PARENT = """import subprocess, sys, os, time
child = subprocess.Popen([sys.executable, "-m", "controller.lifeline", str(os.getpid()), "sleeper", "a", "--b"])
print(child.pid, flush=True)
time.sleep(60)
"""


def _env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}", "SLEEPER_OUT": str(tmp_path / "out.json")}


def test_the_module_runs_with_its_arguments_and_ends_with_its_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=_env(tmp_path))
    child = 0
    try:
        child = int(parent.stdout.readline())
        assert still_running([child], 0) == [child]
        out = tmp_path / "out.json"
        for _ in range(200):  # the child has started the module (10 s)
            if out.exists() and out.read_text():
                break
            time.sleep(0.05)
        assert json.loads(out.read_text()) == ["__main__", ["a", "--b"]]
        parent.kill()
        parent.wait(10)
        assert not still_running([child], 10.0), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait(10)
        if child and running(child):
            os.kill(child, signal.SIGKILL)


def test_a_parent_already_gone_runs_nothing(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=30)
    proc = subprocess.run([sys.executable, "-m", "controller.lifeline", gone.stdout.strip(), "sleeper"],
                          env=_env(tmp_path), timeout=30)
    assert proc.returncode == 0 and not (tmp_path / "out.json").exists()
