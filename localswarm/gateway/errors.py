"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

The classes live in :mod:`localswarm.errors` (one exception tree); this module keeps the
names the gateway's modules import.
"""

from __future__ import annotations

from localswarm.errors import APIError, invalid

__all__ = ["APIError", "invalid"]
