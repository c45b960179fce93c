"""Integration tests run the real llama-server with the embedded SmolLM2 model."""

from __future__ import annotations

import pytest

from localswarm.backends.llama_server import embedded_model_path, find_llama_server
from localswarm.errors import LocalSwarmError


@pytest.fixture(scope="session")
def real_llama() -> tuple[str, str]:
    """(llama-server binary, embedded model path); `make test` installs both."""
    try:
        return str(find_llama_server()), str(embedded_model_path())
    except LocalSwarmError as exc:  # pragma: no cover - make test always provides them
        pytest.fail(f"integration tests need llama-server and the embedded model: {exc}")
