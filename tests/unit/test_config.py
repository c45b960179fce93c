"""Settings: defaults < config.yaml < LOCALSWARM_* environment < flags."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from localswarm.cli import main
from localswarm.config import SECRETS, Settings, config_file, load_settings
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


def test_every_setting_but_secrets_has_a_flag_on_up():
    import dataclasses

    up = main.commands["up"]
    names = {p.name for p in up.params}
    help_text = CliRunner().invoke(main, ["up", "--help"]).output
    for field in dataclasses.fields(Settings):
        if field.name in SECRETS:
            assert field.name not in names, f"{field.name} is a secret: it must not be a flag (ps shows argv)"
            continue
        assert field.name in names, field.name
        opt = next(p for p in up.params if p.name == field.name)
        assert max(opt.opts, key=len) in help_text


def test_cli_reports_config_errors_without_traceback(monkeypatch):
    monkeypatch.setenv("LOCALSWARM_STREAM_MODE", "sideways")
    result = CliRunner().invoke(main, ["up", "--download-only"])
    assert result.exit_code == 1
    assert "stream_mode" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("word,value", [
    ("true", True), ("TRUE", True), (" yes ", True), ("1", True), ("Yes", True),
    ("false", False), ("False", False), ("no", False), ("0", False), ("NO", False),
])
def test_environment_booleans_accept_only_plain_words(monkeypatch, word, value):
    monkeypatch.setenv("LOCALSWARM_FEDERATE", word)
    assert load_settings().federate is value


@pytest.mark.parametrize("word", ["ture", "on", "off", "y", "2", "", "enabled", "truee"])
def test_environment_boolean_typo_is_an_error_naming_the_variable(monkeypatch, word):
    monkeypatch.setenv("LOCALSWARM_FEDERATE", word)
    with pytest.raises(ConfigError, match="LOCALSWARM_FEDERATE.*not a boolean.*true/1/yes/false/0/no"):
        load_settings()


def test_config_file_boolean_typo_is_an_error_too():
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("mdns: maybe\n")
    with pytest.raises(ConfigError, match="mdns"):
        load_settings()
    path.write_text("mdns: no\nfederate: yes\n")  # YAML's own booleans still work
    s = load_settings()
    assert s.mdns is False and s.federate is True


@pytest.mark.parametrize("key,home", [("api_key", "LOCALSWARM_API_KEY"), ("api-key", "--api-key-file"),
                                      ("federation_secret", "LOCALSWARM_FEDERATION_SECRET")])
def test_a_secret_in_the_config_file_is_an_error_saying_where_it_belongs(key, home):
    path = config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"port: 9001\n{key}: hunter2-hunter2-hunter2\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert str(path) in message and "does not belong in a config file" in message and home in message
    assert "hunter2" not in message  # the error itself does not repeat the secret


def test_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOCALSWARM_API_KEY", "from-env")
    assert load_settings().api_key == "from-env"


def test_no_api_key_flag_on_any_command():
    result = CliRunner().invoke(main, ["up", "--api-key", "s3cret", "--download-only"])
    assert result.exit_code == 2 and "No such option '--api-key'" in result.output
    assert "--api-key-file" in CliRunner().invoke(main, ["up", "--help"]).output
    for name, command in main.commands.items():
        for param in getattr(command, "params", []):
            assert "--api-key" not in getattr(param, "opts", []), name


def test_conftest_cleared_the_developer_environment():
    """The autouse fixture left only what it sets itself (tests/conftest.py)."""
    import os

    leaked = [k for k in os.environ if (k.startswith(("LOCALSWARM_", "HF_")) or k == "GITHUB_TOKEN")]
    assert sorted(leaked) == sorted(["LOCALSWARM_STATE_DIR", "LOCALSWARM_CONFIG_DIR", "LOCALSWARM_CACHE_DIR",
                                     "LOCALSWARM_AUTO_CALIBRATE",
                                     "HF_HUB_DISABLE_TELEMETRY"])
