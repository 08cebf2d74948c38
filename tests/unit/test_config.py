"""Edge configuration: defaults, clear errors naming the key path, the shipped example file."""
from __future__ import annotations

from pathlib import Path

import pytest

from controller.config import ConfigError, EdgeConfig, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "edge.toml"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "edge.toml"
    p.write_text(text)
    return p


def test_empty_file_gives_defaults(tmp_path):
    cfg = load_config(write(tmp_path, ""))
    assert cfg == EdgeConfig()
    assert (cfg.pid.x.kp, cfg.pid.x.ki, cfg.pid.x.kd) == (10.0, 600.0, 0.0)  # paper baseline (per frame → SI)
    assert (cfg.pid.y.kp, cfg.pid.y.ki, cfg.pid.y.kd) == (16.0, 816.0, 2.5 / 120)
    assert cfg.hostlink.host == "127.0.0.1" and cfg.loop.mode == "stabilize"


def test_partial_axis_keeps_baseline_for_the_rest(tmp_path):
    cfg = load_config(write(tmp_path, "[pid.y]\nkd = 3.0\n"))
    assert (cfg.pid.y.kp, cfg.pid.y.ki, cfg.pid.y.kd) == (16.0, 816.0, 3.0)


def test_example_file_loads_and_matches_defaults():
    cfg = load_config(EXAMPLE)
    assert cfg == EdgeConfig()  # the example documents the defaults


@pytest.mark.parametrize("text, message", [
    ("[pid.x]\nkp = \"fast\"\n", "edge.toml: pid.x.kp: Input should be a valid number"),
    ("[hostlink]\nprot = 1\n", "edge.toml: hostlink.prot: Extra inputs are not permitted"),
    ("[recorder]\nbatch_rows = 0\n", "edge.toml: recorder.batch_rows: Input should be greater than or equal to 1"),
    ("[loop]\npacing = \"sometimes\"\n", "edge.toml: loop.pacing: Input should be 'frames' or 'timer'"),
    ("[hostlink.envelope.y]\nkd = { min = 2.0, max = 1.0 }\n", "edge.toml: hostlink.envelope.y.kd: Value error, min"),
    ("[device]\nreconnect_backoff_min_s = 9.0\n", "edge.toml: device: Value error, reconnect_backoff_min_s"),
    ("[device.voltage_limits_v]\nx = { min = -1.0, max = 1.0, typo = 0 }\n",
     "edge.toml: device.voltage_limits_v.x.typo: Extra inputs are not permitted"),
    ("[surprise]\n", "edge.toml: surprise: Extra inputs are not permitted"),
    ("[angles]\nsize = 64\n", "edge.toml: angles: Value error, need an odd size"),
    ("[angles]\nexposure = 0.1\n", "edge.toml: angles.exposure: Unexpected keyword argument"),
    ("[pid.x]\nkp = nan\n", "edge.toml: pid.x.kp: Input should be a finite number"),
])
def test_errors_name_the_key_path(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)


def test_every_error_is_reported(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, "[pid.x]\nkp = \"a\"\nki = \"b\"\n"))
    assert "pid.x.kp" in str(e.value) and "pid.x.ki" in str(e.value)


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="edge.toml: .*line 1"):
        load_config(write(tmp_path, "[pid.x\n"))
    with pytest.raises(ConfigError, match="missing.toml"):
        load_config(tmp_path / "missing.toml")


def test_log_json_key():
    assert parse_config({"log": {"json": True}}).log.json_lines is True


def test_the_forge_loop_defaults_to_timer_pacing_at_100_hz():
    from controller.config import parse_config

    forge = parse_config({"loop": {"mode": "forge"}}).loop
    assert (forge.rate_hz, forge.pacing) == (100.0, "timer")
    assert parse_config({"loop": {"mode": "forge", "rate_hz": 50.0}}).loop.rate_hz == 50.0
    assert parse_config({}).loop.rate_hz == 120.0  # other modes keep theirs
