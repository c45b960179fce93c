"""Instance states and the one table of legal transitions (stdlib only)."""

from __future__ import annotations

from enum import Enum

from localswarm.errors import InvalidTransition

__all__ = ["TRANSITIONS", "InvalidTransition", "State", "check_transition"]


class State(str, Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    FATAL = "fatal"


TRANSITIONS: dict[State, frozenset[State]] = {
    # Nothing running: start it, or give up before ever starting (bad binary/model).
    State.STOPPED: frozenset({State.STARTING, State.FATAL}),
    # Ready once /health answers 200; died or missed the deadline → backoff; or told to stop.
    State.STARTING: frozenset({State.READY, State.BACKOFF, State.STOPPING, State.FATAL}),
    # Crashed or unhealthy → backoff (then restart); or told to stop.
    State.READY: frozenset({State.BACKOFF, State.STOPPING}),
    # Waited long enough → start again; too many fast failures → fatal; or told to stop.
    State.BACKOFF: frozenset({State.STARTING, State.FATAL, State.STOPPING}),
    # The process is reaped.
    State.STOPPING: frozenset({State.STOPPED}),
    # Only an explicit restart by the user clears FATAL; stopping is always allowed.
    State.FATAL: frozenset({State.STARTING, State.STOPPING, State.STOPPED}),
}


def check_transition(current: State, new: State) -> None:
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"Cannot go from {current.value} to {new.value}")
