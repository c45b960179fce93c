"""Shared fixtures: every test runs with its own state, config and cache directories."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolate_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep tests away from the user's real ~/.config, ~/.cache and state dirs."""
    for name in ("STATE", "CONFIG", "CACHE"):
        d = tmp_path / f"ls-{name.lower()}"
        d.mkdir()
        monkeypatch.setenv(f"LOCALSWARM_{name}_DIR", str(d))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
