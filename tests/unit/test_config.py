"""Settings: defaults < config.yaml < LOCALSWARM_* environment < flags."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from localswarm.cli import main
from localswarm.config import Settings, config_file, load_settings
from localswarm.errors import ConfigError


def test_layers_override_in_order(monkeypatch):
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("port: 9001\ninstances: 3\nstream_mode: fastest\ntemperature: 0.5\nextra_args: [--flash-attn, 'on']\n")
    s = load_settings()
    assert (s.port, s.instances, s.stream_mode, s.temperature) == (9001, 3, "fastest", 0.5)
    assert s.extra_args == ["--flash-attn", "on"]
    monkeypatch.setenv("LOCALSWARM_PORT", "9002")
    monkeypatch.setenv("LOCALSWARM_INSTANCES", "none")
    s = load_settings()
    assert s.port == 9002 and s.instances is None
    s = load_settings({"port": 9003, "instances": None})
    assert s.port == 9003  # a flag beats the environment; an absent flag changes nothing


@pytest.mark.parametrize("yaml_text,message", [
    ("port: [1, 2]\n", "port"),
    ("colour: blue\n", "unknown setting 'colour'"),
    ("stream_mode: sometimes\n", "stream_mode"),
    ("- just\n- a list\n", "mapping"),
    ("port: {{\n", "not valid YAML"),
])
def test_bad_config_files_name_the_problem(yaml_text, message):
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_bad_environment_value(monkeypatch):
    monkeypatch.setenv("LOCALSWARM_PORT", "eighty")
    with pytest.raises(ConfigError, match="LOCALSWARM_PORT"):
        load_settings()


def test_validation():
    with pytest.raises(ConfigError):
        Settings(port=0)
    with pytest.raises(ConfigError):
        Settings(instances=0)


def test_every_setting_has_a_flag_on_up():
    import dataclasses

    up = main.commands["up"]
    names = {p.name for p in up.params}
    help_text = CliRunner().invoke(main, ["up", "--help"]).output
    for field in dataclasses.fields(Settings):
        assert field.name in names, field.name
        opt = next(p for p in up.params if p.name == field.name)
        assert max(opt.opts, key=len) in help_text


def test_cli_reports_config_errors_without_traceback(monkeypatch):
    monkeypatch.setenv("LOCALSWARM_STREAM_MODE", "sideways")
    result = CliRunner().invoke(main, ["up", "--download-only"])
    assert result.exit_code == 1
    assert "stream_mode" in result.output and "Traceback" not in result.output
