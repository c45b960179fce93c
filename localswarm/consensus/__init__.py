"""Consensus engine: choose one answer out of N instances' replies.

The gateway builds one ``Candidate`` per instance and calls ``vote``; while answers
stream in it may call ``quorum_reached`` to stop waiting early (which also pre-analyses
each answer, see ``analyse``, so the final vote is cheap). Everything here is
pure (no I/O) and cheap: 8 answers of ~2k tokens vote in ~35 ms cold on 2 cores,
~10 ms when the earlier answers were already analysed (``bench/vote_cost.py``,
``docs/vote_cost.md``).
"""

from __future__ import annotations

from .model import Candidate, VoteResult
from .similarity import analyse, text_similarity
from .strategies import (
    DEFAULT_STRATEGY,
    HEADER,
    STRATEGIES,
    check_strategy,
    strategy_from_request,
    strip_request_fields,
)
from .toolcalls import (
    assemble_stream_deltas,
    canonical_arguments,
    tool_calls_to_stream_deltas,
)
from .vote import DEFAULT_THRESHOLD, quorum_reached, required_votes, vote

__all__ = [
    "DEFAULT_STRATEGY",
    "DEFAULT_THRESHOLD",
    "HEADER",
    "STRATEGIES",
    "Candidate",
    "VoteResult",
    "analyse",
    "assemble_stream_deltas",
    "canonical_arguments",
    "check_strategy",
    "quorum_reached",
    "required_votes",
    "strategy_from_request",
    "strip_request_fields",
    "text_similarity",
    "tool_calls_to_stream_deltas",
    "vote",
]
