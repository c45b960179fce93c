"""The seed plan's config.yaml, nested sections, precedence and `localswarm config`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from localswarm.cli import main
from localswarm.config import (
    PLAN_KEYS,
    REFUSED,
    SECTIONS,
    Settings,
    load_settings,
    load_with_sources,
    template,
)
from localswarm.errors import ConfigError

PLAN_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "seed-plan-config.yaml"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_plans_file_is_accepted_as_written_and_every_key_lands() -> None:
    settings, sources, notices = load_with_sources(path=PLAN_FILE)
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.strategy == "similarity" and settings.instance_timeout == 60.0
    assert (settings.min_instances, settings.max_instances) == (2, 8)
    assert settings.models_dir == "~/.local_swarm/models"
    assert settings.preferred_models == ["qwen2.5-coder", "deepseek-coder", "codellama"]
    assert (settings.gpu_memory_fraction, settings.ram_fraction) == (1.0, 0.5)
    assert settings.federate is True and settings.udp_port == 8765 and settings.advertise_interval == 30.0
    assert settings.max_peers == 10 and sources["max_peers"] == "file"  # honoured: at most 10 peers asked
    assert set(sources.values()) == {"file"} and "federate" in sources
    # The one plan key with no effect is said, with what to do, never dropped silently.
    assert len(notices) == 1
    assert "network.federation_port" in notices[0] and "server.port" in notices[0]


def test_every_key_of_the_plans_file_is_mapped_or_refused() -> None:
    data = yaml.safe_load(PLAN_FILE.read_text())
    assert set(data) == set(SECTIONS)
    for section, keys in data.items():
        for key in keys:
            assert (section, key) in PLAN_KEYS or f"{section}.{key}" in REFUSED, (section, key)


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path, "server:\n  port: 8100\n  host: 127.0.0.1\nswarm:\n  timeout: 30\nctx_size: 8192\n")
    monkeypatch.setenv("LOCALSWARM_PORT", "8200")
    monkeypatch.setenv("LOCALSWARM_INSTANCE_TIMEOUT", "45")
    settings, sources, _ = load_with_sources({"port": 8300, "parallel": None}, path=path)
    assert settings.port == 8300 and sources["port"] == "flag"
    assert settings.instance_timeout == 45.0 and sources["instance_timeout"] == "env"
    assert settings.ctx_size == 8192 and sources["ctx_size"] == "file"
    assert settings.parallel == Settings().parallel and "parallel" not in sources
    assert load_settings(path=path).port == 8200  # without the flag the environment wins over the file


@pytest.mark.parametrize(("text", "words"), [
    ("network:\n  strategy: majority\n", ["federation_strategy must be one of", "weighted", "latency"]),
    ("swarm:\n  consensus_strategy: best_of_n\n", ["best_of_n", "cross-swarm", "network.strategy"]),
    ("strategy: latency\n", ["latency", "set federation_strategy"]),
    ("network:\n  min_peers: 3\n  max_peers: 2\n", ["min_peers (3) is above max_peers (2)"]),
    ("network:\n  max_peers: 0\n", ["max_peers 1-64"]),
    ("network:\n  mode: pooled\n", ["mode must be one of", "independent", "distributed"]),
    ("mode: both\n", ["mode must be one of"]),
    ("consensus_strategy: quality\n", ["use strategy"]),
    ("timeout: 60\n", ["use instance_timeout"]),
    ("cache_dir: /x\n", ["use models_dir"]),
    ("max_concurrent: 4\n", ["queue_depth"]),  # issue 13: a queue replaced the refusal
    ("network:\n  auth_token: hunter2\n", ["secret", "LOCALSWARM_FEDERATION_SECRET"]),
    ("server:\n  colour: blue\n", ["unknown setting 'server.colour'"]),
    ("swarm:\n  min_instances: 4\n  max_instances: 2\n", ["min_instances (4) is above max_instances (2)"]),
    ("hardware:\n  ram_fraction: 1.5\n", ["ram_fraction must be in (0, 1]"]),
    ("server:\n  port: 8000\nport: 9000\n", ["sets 'port' a second time"]),
])
def test_refused_keys_name_their_replacement(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(path=_file(tmp_path, text))
    for word in words:
        assert word in str(info.value)
    assert "hunter2" not in str(info.value)


def test_federation_strategy_and_peer_limits_in_both_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nested = load_settings(path=_file(tmp_path, "network:\n  strategy: latency\n  min_peers: 2\n  max_peers: 3\n"))
    assert (nested.federation_strategy, nested.min_peers, nested.max_peers) == ("latency", 2, 3)
    flat = load_settings(path=_file(tmp_path, "federation_strategy: best_of_n\nmin_peers: 1\n"))
    assert (flat.federation_strategy, flat.min_peers, flat.max_peers) == ("best_of_n", 1, None)
    monkeypatch.setenv("LOCALSWARM_FEDERATION_STRATEGY", "weighted")
    assert load_settings(path=_file(tmp_path, "federation_strategy: latency\n")).federation_strategy == "weighted"
    assert Settings().federation_strategy == "weighted" and Settings().min_peers == 0


@pytest.mark.parametrize("text", ["network:\n  mode: distributed\n", "mode: distributed\n"])
def test_mode_distributed_is_accepted_nested_and_flat(tmp_path: Path, text: str) -> None:
    assert load_settings(path=_file(tmp_path, text)).mode == "distributed"
    assert Settings().mode == "independent"  # Mode 2 is off by default


def test_flat_keys_and_sections_holding_any_field(tmp_path: Path) -> None:
    path = _file(tmp_path, "network:\n  peers: [10.0.0.2]\n  mdns: false\nswarm:\n  parallel: 3\nmodel: embedded\n"
                 "server:\n")
    s = load_settings(path=path)
    assert s.peers == ["10.0.0.2"] and s.mdns is False and s.parallel == 3 and s.model == "embedded"


def test_a_named_file_that_does_not_exist_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSWARM_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_template_loads_to_the_defaults(tmp_path: Path) -> None:
    text = template()
    settings, sources, notices = load_with_sources(path=_file(tmp_path, text))
    assert settings == Settings() and sources == {} and notices == []
    for section in SECTIONS:
        assert f"\n{section}:\n" in text
    assert "# consensus_strategy: similarity" in text and "# ctx_size: 16384" in text


def test_config_command_init_path_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    path = Path(runner.invoke(main, ["config", "path"]).output.split()[0])
    assert not path.exists()
    out = runner.invoke(main, ["config", "init"])
    assert out.exit_code == 0 and path.is_file()
    assert runner.invoke(main, ["config", "init"]).exit_code == 1  # never overwrites unasked
    path.write_text("server:\n  port: 8100\nswarm:\n  timeout: 30\n")
    monkeypatch.setenv("LOCALSWARM_INSTANCE_TIMEOUT", "45")
    monkeypatch.setenv("LOCALSWARM_API_KEY", "sk-secret-value")
    out = runner.invoke(main, ["config", "show", "--json", "--ctx-size", "8192"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)["settings"]
    assert data["port"] == {"value": "8100", "source": "file"}
    assert data["instance_timeout"] == {"value": "45.0", "source": "env"}
    assert data["ctx_size"] == {"value": "8192", "source": "flag"}
    assert data["parallel"]["source"] == "default"
    assert data["api_key"] == {"value": "(set)", "source": "env"}
    text = runner.invoke(main, ["config", "show"]).output
    assert "sk-secret-value" not in text and "sk-secret-value" not in out.output
    assert "port" in text and "(file)" in text


def test_config_flag_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALSWARM_CONFIG", "unused")  # --config sets it (for children): restored after
    out = CliRunner().invoke(main, ["--config", str(PLAN_FILE), "config", "show", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["file"] == str(PLAN_FILE) and data["settings"]["udp_port"]["source"] == "file"
    assert data["settings"]["max_peers"]["source"] == "file"
    assert any("federation_port" in n for n in data["notices"]) and not any("peers" in n for n in data["notices"])


# -- the plan keys the planner honours (simulated hardware) ----------------------------------

from localswarm.hardware.synthetic import reference_profiles  # noqa: E402
from localswarm.provision import PlanPolicy, make_plan  # noqa: E402

PROFILES = reference_profiles()


def _on(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr("localswarm.hardware.detect", lambda *a, **k: PROFILES[name])
    monkeypatch.setattr("localswarm.provision.locate_cached", lambda ref: None)


def _make(**policy: object):  # type: ignore[no-untyped-def]
    return make_plan("auto", instances=None, ctx=4096, parallel=2,
                     policy=PlanPolicy(**policy))  # type: ignore[arg-type]


def test_ram_and_gpu_fractions_set_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    _on(monkeypatch, "CPU-only laptop 16 GB")
    half, quarter = _make(), _make(ram_fraction=0.25)
    assert quarter.budget.total == pytest.approx(half.budget.total / 2, rel=0.01)
    _on(monkeypatch, "RTX 4090 24 GB")
    full, sixty = _make(gpu_memory_fraction=1.0), _make(gpu_memory_fraction=0.6)
    cap = full.budget.devices[0].capacity
    assert full.budget.devices[0].usable == cap - max(int(cap * 0.1), 2**30)  # the driver's reserve stays
    assert sixty.budget.devices[0].usable == cap - int(cap * 0.4)


def test_instance_bounds_clamp_the_planned_count(monkeypatch: pytest.MonkeyPatch) -> None:
    _on(monkeypatch, "RTX 4090 24 GB")
    free = _make()
    assert free.instances == 2  # what the planner picks today on this machine
    capped = _make(max_instances=1)
    assert capped.instances == 1 and any("max_instances: 1" in r for r in capped.reasons)
    raised = _make(min_instances=4)
    assert raised.instances == 4 and any("min_instances: 4" in r for r in raised.reasons)
    assert raised.memory.total * 4 <= raised.budget.total  # still planned against memory
    within = _make(min_instances=2, max_instances=8)  # the seed plan's bounds
    assert within.instances == 2 and not any("_instances" in r for r in within.reasons)


def test_preferred_models_choose_the_family(monkeypatch: pytest.MonkeyPatch) -> None:
    _on(monkeypatch, "RTX 4090 24 GB")
    assert _make().family != "codellama"
    p = _make(preferred_models=("no-such-family", "codellama", "qwen2.5-coder"))
    assert p.model_id.startswith("codellama:") and any("preferred_models: codellama" in r for r in p.reasons)
    p = _make(preferred_models=("no-such-family",))
    assert any("none of no-such-family" in r for r in p.reasons)


def test_models_dir_moves_the_model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from localswarm.cli import _export_models_dir
    from localswarm.models.download import models_cache_dir

    before = models_cache_dir()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("LOCALSWARM_MODELS_DIR", "x")
    monkeypatch.delenv("LOCALSWARM_MODELS_DIR")  # unset now, and unset again after the test
    _export_models_dir(load_settings(path=PLAN_FILE))  # models.cache_dir: "~/.local_swarm/models"
    assert models_cache_dir() == tmp_path / ".local_swarm" / "models" != before
