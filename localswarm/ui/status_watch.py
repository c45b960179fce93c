"""``localswarm status --watch``: a live table of the workers, refreshed from the gateway's status.

:func:`render` turns one ``GET /localswarm/status`` body into a rich renderable (pure, so
it is tested on sample JSON); :func:`watch` redraws it with :class:`rich.live.Live`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["render", "summarise", "watch"]

STATE_STYLES = {
    "ready": "green", "starting": "yellow", "backoff": "yellow", "stopping": "dim",
    "stopped": "dim", "fatal": "bold red",
}


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _mib(value: Any) -> str:
    n = _num(value)
    return "-" if n is None else (f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB")


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    n = _num(value)
    return "-" if n is None else f"{n:.{digits}f}{unit}"


def summarise(status: dict[str, Any], previous: dict[str, Any] | None = None,
              elapsed: float | None = None) -> dict[str, Any]:
    """Totals over the workers: requests, in-flight, tokens/s, memory and utilisation %.

    Utilisation is in-flight requests over request slots when the status says how many
    slots each worker has (``parallel``), else busy workers over workers. With a previous
    status and the seconds between them, ``throughput`` is the tokens generated per second
    over that interval (what the swarm delivers now, not the lifetime average).
    """
    workers = list(status.get("instances") or [])
    in_flight = sum(int(_num(w.get("in_flight")) or 0) for w in workers)
    busy = sum(1 for w in workers if (_num(w.get("in_flight")) or 0) > 0)
    parallel = _num(status.get("parallel"))
    if parallel and workers:
        utilisation = min(1.0, in_flight / (parallel * len(workers)))
    else:
        utilisation = busy / len(workers) if workers else 0.0
    memory = [_num(w.get("memory_rss")) for w in workers]
    throughput = None
    if previous is not None and elapsed and elapsed > 0:
        before = {w.get("name"): _num(w.get("completion_tokens")) or 0 for w in previous.get("instances") or []}
        delta = sum(max(0.0, (_num(w.get("completion_tokens")) or 0) - before.get(w.get("name"), 0)) for w in workers)
        throughput = delta / elapsed
    return {
        "workers": len(workers),
        "ready": sum(1 for w in workers if w.get("state") == "ready"),
        "requests": sum(int(_num(w.get("requests")) or 0) for w in workers),
        "failures": sum(int(_num(w.get("failures")) or 0) for w in workers),
        "in_flight": in_flight,
        "busy": busy,
        "tokens_per_s": sum(_num(w.get("tokens_per_s")) or 0.0 for w in workers),
        "throughput": throughput,
        "memory_rss": sum(m for m in memory if m is not None) if any(m is not None for m in memory) else None,
        "restarts": sum(int(_num(w.get("restarts")) or 0) for w in workers),
        "utilisation": utilisation,
    }


def render(status: dict[str, Any] | None, previous: dict[str, Any] | None = None,
           elapsed: float | None = None) -> RenderableType:
    """One frame: a row per worker, a totals row, and the vote counters."""
    if status is None:
        return Text("no swarm is running (start one with `localswarm up --detach`)", style="yellow")
    if status.get("unreachable") or "instances" not in status:
        return Text(f"swarm pid {status.get('pid')} is {status.get('state', 'unknown')} "
                    "but its gateway does not answer", style="red")
    totals = summarise(status, previous, elapsed)
    title = (f"localswarm {status.get('model', '')} — {status.get('base_url', '')}  "
             f"({totals['ready']}/{totals['workers']} ready, up {_fmt(status.get('uptime_s'), ' s', 0)})")
    table = Table(title=title, show_footer=True, expand=False)
    columns = [
        ("worker", "total"), ("state", f"{totals['ready']} ready"), ("requests", str(totals["requests"])),
        ("in-flight", str(totals["in_flight"])), ("avg latency", ""),
        ("tokens/s", _fmt(totals["tokens_per_s"])), ("memory", _mib(totals["memory_rss"])),
        ("restarts", str(totals["restarts"])),
    ]
    for header, footer in columns:
        table.add_column(header, footer=footer, justify="left" if header in ("worker", "state") else "right")
    for w in status["instances"]:
        state = str(w.get("state", "?"))
        table.add_row(
            str(w.get("name", "?")), Text(state, style=STATE_STYLES.get(state, "")),
            str(w.get("requests", 0)), str(w.get("in_flight", 0)), _fmt(w.get("avg_latency_s"), " s", 2),
            _fmt(w.get("tokens_per_s")), _mib(w.get("memory_rss")), str(w.get("restarts", 0)),
        )
    line = Text()
    line.append(f"utilisation {totals['utilisation'] * 100:.0f}%", style="bold")
    line.append(f"  ({totals['busy']}/{totals['workers']} workers busy, {totals['in_flight']} in flight)")
    if totals["throughput"] is not None:
        line.append(f"  throughput {totals['throughput']:.1f} tokens/s")
    if status.get("queue"):
        line.append("\n" + queue_line(status["queue"]))
    for text in memory_lines(status):
        line.append("\n" + text, style="bold red" if text.startswith("DEGRADED") else "")
    votes = status.get("votes") or {}
    if votes:
        line.append(f"\nvotes {votes.get('count', 0)}, early stops {votes.get('early_stops', 0)}, "
                    f"degenerate {votes.get('degenerate', 0)}, mean confidence "
                    f"{_fmt(votes.get('mean_confidence'), digits=3)}")
    return Group(table, line)


def watch(
    fetch: Callable[[], dict[str, Any] | None],
    interval: float = 2.0,
    console: Console | None = None,
    iterations: int | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Redraw :func:`render` every ``interval`` seconds until Ctrl-C (or ``iterations`` frames).

    ``fetch`` is e.g. ``runner.fetch_status``; an exception from it is shown, not raised.
    Returns the number of frames drawn.
    """
    console = console or Console()
    previous: dict[str, Any] | None = None
    before = clock()
    frames = 0
    with Live(Text("waiting for the swarm…"), console=console, auto_refresh=False, transient=False) as live:
        try:
            while iterations is None or frames < iterations:
                try:
                    status = fetch()
                    now = clock()
                    frame = render(status, previous, now - before)
                    if status and "instances" in status:
                        previous, before = status, now
                except Exception as exc:  # noqa: BLE001 - the gateway restarting must not end the watch
                    frame = Text(f"cannot read the status: {exc}", style="red")
                live.update(frame, refresh=True)
                frames += 1
                if iterations is None or frames < iterations:
                    sleep(interval)
        except KeyboardInterrupt:
            pass
    return frames


def queue_line(queue: dict[str, Any]) -> str:
    """The gateway's queue (issue 13) in one line: waiting, running, waits, refusals, widths."""
    widths = ", ".join(f"{w}×{n}" for w, n in (queue.get("widths") or {}).items()) or "-"
    return (f"queue: {queue.get('waiting', 0)} waiting (of {queue.get('depth')}), {queue.get('running', 0)} running "
            f"on {queue.get('slots_used', 0)}/{queue.get('slots')} slots; wait mean "
            f"{_fmt(queue.get('wait_mean_s'), ' s', 2)}, max {_fmt(queue.get('wait_max_s'), ' s', 2)}; "
            f"refused {int(queue.get('rejected_full') or 0) + int(queue.get('rejected_wait') or 0)}; "
            f"widths {widths}")


def memory_lines(data: dict[str, Any]) -> list[str]:
    """The memory guard's view (issue 13): free memory against the reserve, and a degraded swarm."""
    guard = data.get("memory")
    if not guard:
        return []
    mem = guard.get("memory") or {}
    lines = [f"memory: {_mib(mem.get('ram_available'))} free of {_mib(mem.get('ram_total'))} "
             f"({mem.get('ram_source', 'physical')}), reserve {_mib(guard.get('reserve'))}"
             + "".join(f", {dev} {_mib(v)} free" for dev, v in (mem.get("vram_free") or {}).items())]
    if data.get("degraded"):
        lines.append("DEGRADED: " + "; ".join(f"{name} {why}" for name, why in guard.get("held", {}).items()))
    return lines
