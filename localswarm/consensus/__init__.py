"""Consensus engine: choose one answer out of N instances' replies.

The gateway hands one ``Candidate`` per instance to ``vote``; while answers
stream in it may call ``quorum_reached`` to stop waiting early (which also pre-analyses
each answer, see ``analyse``, so the final vote is cheap). Everything here is
pure (no I/O) and cheap: 8 answers of ~2k tokens vote in ~35 ms cold on 2 cores,
~10 ms when the earlier answers were already analysed (``bench/vote_cost.py``,
``docs/vote_cost.md``). ``cross_vote`` pools the votes of several machines with the same
agreement test, clustering and threshold.
"""

from __future__ import annotations

from .crossvote import (
    DEFAULT_FLOOR,
    FEDERATION_STRATEGIES,
    CrossVoteResult,
    SwarmVote,
    answer_similarity,
    cross_vote,
)
from .model import Candidate, VoteResult
from .similarity import analyse, text_similarity
from .strategies import (
    DEFAULT_STRATEGY,
    HEADER,
    STRATEGIES,
    check_strategy,
    strategy_from_request,
)
from .toolcalls import (
    assemble_stream_deltas,
    canonical_arguments,
    tool_calls_to_stream_deltas,
)
from .vote import DEFAULT_THRESHOLD, quorum_reached, required_votes, vote

__all__ = [
    "DEFAULT_FLOOR",
    "FEDERATION_STRATEGIES",
    "DEFAULT_STRATEGY",
    "DEFAULT_THRESHOLD",
    "HEADER",
    "STRATEGIES",
    "Candidate",
    "CrossVoteResult",
    "SwarmVote",
    "VoteResult",
    "analyse",
    "answer_similarity",
    "assemble_stream_deltas",
    "canonical_arguments",
    "check_strategy",
    "cross_vote",
    "quorum_reached",
    "required_votes",
    "strategy_from_request",
    "text_similarity",
    "tool_calls_to_stream_deltas",
    "vote",
]
