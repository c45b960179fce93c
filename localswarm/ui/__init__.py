"""Interactive terminal UI (``localswarm up --interactive``)."""

from __future__ import annotations

from .menu import choose_plan

__all__ = ["choose_plan"]
