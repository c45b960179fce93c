"""Keep a conversation on the instances that hold its prompt prefix (issue 15).

llama-server keeps each slot's last prompt in its KV cache (``cache_prompt``, on by
default) and gives a new request the slot whose cached prompt is most like it
(``--slot-prompt-similarity``, 0.1 by default): a conversation's next turn sent to the
same instance only processes the tokens after the shared prefix. opencode's first turn
is ~2,800 tokens of system prompt and tools, so a turn that lands elsewhere pays all of
them again.

When every instance votes, every instance already holds the prefix. When the fan-out asks
fewer (adaptive width under load), :meth:`Affinity.choose` prefers the instances that
served the conversation's previous turn, then the least busy. A conversation is known by
a hash of its start (the tools and the first two messages), which a later turn repeats.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from localswarm.supervisor.instance import Instance

REMEMBERED = 4096  # conversations kept (least recently used dropped first)


def conversation_key(body: dict[str, Any]) -> str | None:
    """A hash of what every turn of one conversation starts with; None when there is no
    conversation (no messages, or a plain ``prompt``)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    start = {"tools": body.get("tools"), "messages": messages[:2]}
    raw = json.dumps(start, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


class Affinity:
    """Which instances served each recent conversation."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self.size = size
        self._served: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._clock = itertools.count(1)
        self._last: dict[str, int] = {}  # instance → when it was last chosen
        self.hits = 0  # turns sent back to an instance that served the conversation before

    def served(self, key: str | None) -> tuple[str, ...]:
        """Names of the instances that served ``key``'s last turn (most recent first)."""
        if key is None or key not in self._served:
            return ()
        self._served.move_to_end(key)
        return self._served[key]

    def remember(self, key: str | None, chosen: Sequence[Instance]) -> None:
        if key is None or not chosen:
            return
        self._served[key] = tuple(i.name for i in chosen)
        self._served.move_to_end(key)
        while len(self._served) > self.size:
            self._served.popitem(last=False)

    def choose(self, instances: Sequence[Instance], width: int, body: dict[str, Any]) -> list[Instance]:
        """``width`` instances for this request: those holding its conversation first, then
        the least busy, then the least recently chosen (requests admitted together, before
        any has reached its instance, spread out instead of piling onto the first);
        remembered for the next turn."""
        key = conversation_key(body)
        if width >= len(instances):
            chosen = list(instances)
        else:
            rank = {name: i for i, name in enumerate(self.served(key))}
            chosen = sorted(instances, key=lambda i: (rank.get(i.name, len(rank)), i.stats.in_flight,
                                                      self._last.get(i.name, 0)))[:width]
            self.hits += int(any(i.name in rank for i in chosen))
        now = next(self._clock)
        for inst in chosen:
            self._last[inst.name] = now
        self.remember(key, chosen)
        return chosen
