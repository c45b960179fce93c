"""`localswarm status --watch`: rendering a status body, and the bounded live loop."""

from __future__ import annotations

import copy
import io
from typing import Any

from rich.console import Console

from localswarm.ui.status_watch import render, summarise, watch

STATUS: dict[str, Any] = {
    "version": "0.1.0", "model": "smollm2-135m", "base_url": "http://127.0.0.1:8000/v1", "uptime_s": 42.0,
    "ready": 2,
    "instances": [
        {"name": "inst-0", "state": "ready", "port": 40001, "pid": 101, "memory_rss": 300 * 2**20,
         "requests": 10, "failures": 1, "in_flight": 1, "avg_latency_s": 0.5, "tokens_per_s": 50.0,
         "completion_tokens": 1000, "restarts": 0},
        {"name": "inst-1", "state": "ready", "port": 40002, "pid": 102, "memory_rss": 200 * 2**20,
         "requests": 8, "failures": 0, "in_flight": 0, "avg_latency_s": 0.25, "tokens_per_s": 30.5,
         "completion_tokens": 800, "restarts": 2},
        {"name": "inst-2", "state": "fatal", "port": 0, "pid": None, "memory_rss": None,
         "requests": 0, "failures": 0, "in_flight": 0, "avg_latency_s": None, "tokens_per_s": None,
         "completion_tokens": 0, "restarts": 5, "last_error": "exited with code 1 while starting"},
    ],
    "votes": {"count": 9, "early_stops": 3, "degenerate": 0, "mean_confidence": 0.812},
}


def text_of(renderable: Any, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_summarise_totals_and_utilisation():
    totals = summarise(STATUS)
    assert totals["requests"] == 18 and totals["in_flight"] == 1 and totals["restarts"] == 7
    assert totals["tokens_per_s"] == 80.5
    assert totals["memory_rss"] == 500 * 2**20
    assert totals["utilisation"] == 1 / 3  # one busy worker of three
    with_slots = summarise({**STATUS, "parallel": 2})
    assert with_slots["utilisation"] == 1 / 6  # one request in six slots


def test_throughput_comes_from_the_difference_between_two_statuses():
    later = copy.deepcopy(STATUS)
    later["instances"][0]["completion_tokens"] += 300
    later["instances"][1]["completion_tokens"] += 100
    assert summarise(later, STATUS, 2.0)["throughput"] == 200.0


def test_render_shows_each_worker_and_totals():
    out = text_of(render(STATUS))
    for expected in ("inst-0", "inst-1", "inst-2", "fatal", "300 MiB", "500 MiB", "0.50 s", "80.5", "total",
                     "utilisation 33%", "1/3 workers busy", "votes 9, early stops 3", "0.812", "2/3 ready"):
        assert expected in out, expected


def test_render_without_a_swarm_or_gateway():
    assert "no swarm is running" in text_of(render(None))
    assert "does not answer" in text_of(render({"pid": 7, "state": "ready", "unreachable": True}))


def test_watch_is_bounded_and_survives_fetch_errors():
    calls: list[int] = []
    sleeps: list[float] = []
    clock = iter(range(100))

    def fetch() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("gateway restarting")
        status = copy.deepcopy(STATUS)
        status["instances"][0]["completion_tokens"] += 100 * len(calls)
        return status

    console = Console(file=io.StringIO(), width=160, color_system=None, force_terminal=False)
    frames = watch(fetch, 0.5, console, iterations=3, sleep=sleeps.append, clock=lambda: float(next(clock)))
    assert frames == 3 and len(calls) == 3 and sleeps == [0.5, 0.5]
    out = console.file.getvalue()
    assert "inst-0" in out and "throughput" in out


def test_the_queue_is_shown_with_its_waits_refusals_and_widths():
    status = {**STATUS, "queue": {"depth": 256, "waiting": 7, "running": 4, "slots_used": 4, "slots": 4,
                                  "wait_mean_s": 1.234, "wait_max_s": 5.5, "rejected_full": 2, "rejected_wait": 1,
                                  "widths": {"1": 30, "2": 5}}}
    out = text_of(render(status))
    assert "queue: 7 waiting (of 256), 4 running on 4/4 slots; wait mean 1.23 s, max 5.50 s; refused 3; " \
           "widths 1×30, 2×5" in out
    assert "queue:" not in text_of(render(STATUS))
