"""Request counters shown under ``requests`` in ``/localswarm/status``.

They let a test (or a user) check what kind of traffic the swarm really served, e.g. that
opencode's agent turn arrived streamed, with tools, and was voted on (issue 5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class RequestCounters:
    chat: int = 0  # POST /v1/chat/completions accepted (valid, an instance ready)
    streamed: int = 0  # ... with stream: true
    with_tools: int = 0  # ... carrying a non-empty tools array
    voted: int = 0  # chat answers chosen by a vote (not relayed from the fastest)
    voted_streamed_with_tools: int = 0  # voted, streamed and tool-bearing: opencode's agent turns
    multi_choice: int = 0  # n > 1
    completions: int = 0  # POST /v1/completions (legacy)
    embeddings: int = 0  # POST /v1/embeddings
    rejected_busy: int = 0  # answered 429: the queue was full or the wait too long
    rejected_auth: int = 0  # answered 401: missing or wrong API key

    def count_busy_rejection(self) -> None:
        self.rejected_busy += 1

    def count_auth_rejection(self) -> None:
        self.rejected_auth += 1

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
