"""The only code that talks to an instance (llama-server, mlx_lm.server).

- :mod:`.policy` what of a client's body goes upstream (one place);
- :mod:`.sse` the one parser of an instance's event stream;
- :mod:`.call` one send with retry, a whole :class:`Answer`, a live :class:`Stream`, an
  instance's own ``/metrics``;
- :mod:`.answer` the typed answer (text, tool calls, finish, usage, timings).
"""

from __future__ import annotations

from localswarm.errors import UpstreamError
from localswarm.upstream.answer import Answer
from localswarm.upstream.call import (
    Stream,
    ask,
    fetch_metrics,
    has_output,
    is_refusal,
    open_stream,
    post_json,
    send,
    upstream_error,
)
from localswarm.upstream.policy import for_instance, instance_bodies, reseeded, upstream_body
from localswarm.upstream.sse import EventReader

__all__ = [
    "Answer",
    "EventReader",
    "Stream",
    "UpstreamError",
    "ask",
    "fetch_metrics",
    "for_instance",
    "has_output",
    "is_refusal",
    "instance_bodies",
    "open_stream",
    "post_json",
    "reseeded",
    "send",
    "upstream_body",
    "upstream_error",
]
