"""localswarm.access: constant-time comparison, secret files, the client key, the bind rule."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from localswarm import access
from localswarm.config import Settings
from localswarm.errors import ConfigError


def test_same_secret_compares_exactly() -> None:
    assert access.same_secret("k3y", "k3y") and access.same_secret(b"k3y", "k3y")
    for other in ("k3Y", "k3y ", "", "k3", "k3yy"):
        assert not access.same_secret(other, "k3y")


def test_same_secret_is_the_one_comparison_of_the_gateway_and_federation() -> None:
    """No other module compares secrets by itself (one helper, constant time)."""
    root = Path(access.__file__).parent
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "compare_digest" in p.read_text())
    assert users == ["access.py"]
    for module in ("gateway/auth.py", "federation/auth.py"):
        assert "same_secret(" in (root / module).read_text(), module


def test_read_secret_file_rules(tmp_path: Path) -> None:
    f = tmp_path / "key"
    with pytest.raises(ConfigError, match="does not exist"):
        access.read_secret_file(f, "the key file")
    f.write_text("  s3cret \n")
    f.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        access.read_secret_file(f, "the key file")
    f.chmod(0o600)
    assert access.read_secret_file(f, "the key file") == "s3cret"
    f.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        access.read_secret_file(f, "the key file")
    with pytest.raises(ConfigError, match="not a regular file"):
        access.read_secret_file(tmp_path, "the key file")


def test_client_headers_use_the_gateway_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert access.client_headers() == {}
    monkeypatch.setenv("LOCALSWARM_API_KEY", "from-env")
    assert access.client_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.delenv("LOCALSWARM_API_KEY")
    f = tmp_path / "key"
    f.write_text("from-file\n")
    f.chmod(0o600)
    monkeypatch.setenv("LOCALSWARM_API_KEY_FILE", str(f))
    assert access.client_headers() == {"Authorization": "Bearer from-file"}
    f.chmod(0o644)  # unusable: no key is sent (the gateway's 401 then says what to set)
    assert access.client_headers() == {}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"])
def test_loopback_needs_no_key(host: str) -> None:
    assert access.is_loopback(host)
    access.check_binding(Settings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.231.0.1", "myhost.lan"])
def test_network_host_without_a_key_is_refused_naming_both_ways_out(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        access.check_binding(Settings(host=host))
    message = str(info.value)
    for hint in ("LOCALSWARM_API_KEY", "--api-key-file", "LOCALSWARM_API_KEY_FILE", "--insecure-no-auth"):
        assert hint in message
    access.check_binding(Settings(host=host, api_key="k"))
    access.check_binding(Settings(host=host, insecure_no_auth=True))


def test_insecure_no_auth_is_announced_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="localswarm"):
        access.announce_binding(Settings(host="0.0.0.0", insecure_no_auth=True))
        access.announce_binding(Settings(host="0.0.0.0", api_key="k"))
        access.announce_binding(Settings())
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records[0][0] == logging.WARNING and records[0][1].startswith("INSECURE") and "NO API key" in records[0][1]
    assert records[1][0] == logging.INFO and "API key required" in records[1][1]
    assert len(records) == 2  # loopback: nothing to say


def test_cli_up_on_the_network_without_a_key_fails_before_starting() -> None:
    done = subprocess.run([sys.executable, "-m", "localswarm", "up", "--host", "0.0.0.0", "--model", "embedded"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "refusing to listen on 0.0.0.0 without an API key" in done.stderr and "--insecure-no-auth" in done.stderr
    assert "Traceback" not in done.stderr
