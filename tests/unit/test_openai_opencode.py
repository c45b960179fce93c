"""`localswarm opencode`: the provider config for the running swarm, printed or merged into opencode.json."""

from __future__ import annotations

import json

from click.testing import CliRunner

from localswarm import statefile
from localswarm.cli import main
from localswarm.upstream import upstream_body


def test_prints_the_config_of_the_running_swarm_with_env_key_reference():
    statefile.write({"pid": 1, "host": "0.0.0.0", "port": 8123, "base_url": "http://0.0.0.0:8123/v1", "auth": True})
    result = CliRunner().invoke(main, ["opencode"])
    assert result.exit_code == 0, result.output
    config = json.loads(result.output)
    provider = config["provider"]["localswarm"]
    assert provider["options"] == {"baseURL": "http://127.0.0.1:8123/v1", "apiKey": "{env:LOCALSWARM_API_KEY}"}
    assert provider["npm"] == "@ai-sdk/openai-compatible" and config["model"] == "localswarm/swarm"


def test_write_merges_with_an_existing_project_config(tmp_path):
    statefile.write({"pid": 1, "host": "127.0.0.1", "port": 8000})
    existing = {"theme": "dark", "provider": {"other": {"npm": "x"}}, "model": "other/m"}
    (tmp_path / "opencode.json").write_text(json.dumps(existing))
    result = CliRunner().invoke(main, ["opencode", "--write", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "opencode.json").read_text())
    assert merged["theme"] == "dark" and set(merged["provider"]) == {"other", "localswarm"}
    assert merged["model"] == "localswarm/swarm"
    assert "apiKey" not in merged["provider"]["localswarm"]["options"]


def test_no_running_swarm_is_a_clear_error():
    result = CliRunner().invoke(main, ["opencode"])
    assert result.exit_code == 1 and "no swarm is running" in result.output


def test_forwarding_policy():
    body = upstream_body({"messages": [], "ignore_eos": True, "store": True, "top_logprobs": 2, "n": 2,
                          "prediction": {}, "grammar": "root ::= \"a\""})
    assert body == {"messages": [], "ignore_eos": True, "top_logprobs": 2, "logprobs": True, "n": 2,
                    "grammar": "root ::= \"a\""}


def test_write_sets_context_and_output_limits_from_the_running_swarm(tmp_path):
    from localswarm.config import OPENCODE_OUTPUT, Settings

    statefile.write({"pid": 1, "host": "127.0.0.1", "port": 8000, "ctx_size": Settings().ctx_size})
    result = CliRunner().invoke(main, ["opencode", "--write", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    model = json.loads((tmp_path / "opencode.json").read_text())["provider"]["localswarm"]["models"]["swarm"]
    assert model["limit"] == {"context": Settings().ctx_size, "output": OPENCODE_OUTPUT}
    statefile.write({"pid": 1, "host": "127.0.0.1", "port": 8000, "ctx_size": 2048})  # a small slot
    small = json.loads(CliRunner().invoke(main, ["opencode"]).output)["provider"]["localswarm"]["models"]["swarm"]
    assert small["limit"] == {"context": 2048, "output": 512}
    statefile.write({"pid": 1, "host": "127.0.0.1", "port": 8000})  # a swarm from before: no guess
    older = json.loads(CliRunner().invoke(main, ["opencode"]).output)["provider"]["localswarm"]["models"]["swarm"]
    assert "limit" not in older
