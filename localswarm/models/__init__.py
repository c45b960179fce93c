"""Models: the registry (``profiles/models.yaml``), GGUF metadata and the planner.

Names are imported lazily so ``python -m localswarm.models.planner`` runs cleanly.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "GGUFMeta": "gguf_meta", "read_gguf_meta": "gguf_meta",
    "MemoryEstimate": "planner", "Placement": "planner", "Plan": "planner",
    "VariantFit": "planner", "estimate_memory": "planner", "list_variants": "planner",
    "plan": "planner",
    "ModelRef": "registry", "Registry": "registry", "load_registry": "registry",
    "parse_model_id": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
