"""Shared fixtures: every test runs with a clean environment and its own directories.

Nothing from the developer's shell changes what a test sees: every ``LOCALSWARM_*``
setting, every ``HF_*`` variable (endpoint, token, offline mode, cache) and
``GITHUB_TOKEN`` are removed for each test, then the state, config and cache
directories are pointed at the test's own temporary folders. A test that needs a
setting sets it itself (``monkeypatch.setenv``).

One exception, for integration tests only: the llama-server the suite was set up with
(``make test`` honours ``$LOCALSWARM_LLAMA_SERVER``) is handed on to them, since they
run the real binary; it is a location, not a behaviour.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_LEAKY_PREFIXES = ("LOCALSWARM_", "HF_")
_LEAKY_NAMES = ("GITHUB_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_SUITE_LLAMA_SERVER = os.environ.get("LOCALSWARM_LLAMA_SERVER")


def leaky_variables(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """The variables the isolation removes from ``environ``."""
    return [k for k in environ if k.startswith(_LEAKY_PREFIXES) or k in _LEAKY_NAMES]


@pytest.fixture(autouse=True)
def _isolate_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Keep tests away from the user's settings, tokens, and real ~/.config, ~/.cache, state dirs."""
    for name in leaky_variables(os.environ):
        monkeypatch.delenv(name)
    for name in ("STATE", "CONFIG", "CACHE"):
        d = tmp_path / f"ls-{name.lower()}"
        d.mkdir()
        monkeypatch.setenv(f"LOCALSWARM_{name}_DIR", str(d))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    # The first `up` calibrates this machine's speed (issue 15); a test that is about it opts in.
    monkeypatch.setenv("LOCALSWARM_AUTO_CALIBRATE", "0")
    if _SUITE_LLAMA_SERVER and request.node.get_closest_marker("integration"):
        monkeypatch.setenv("LOCALSWARM_LLAMA_SERVER", _SUITE_LLAMA_SERVER)
