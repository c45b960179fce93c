"""Prometheus metrics for one gateway: its own counters, its instances, and theirs.

Each :class:`Metrics` owns a private :class:`~prometheus_client.CollectorRegistry` (never
the global one), so a process can run several gateways, and tests several apps.

Three sources end up on ``GET /metrics``:

- counters and histograms the gateway updates as it works (:class:`MetricsMiddleware`
  for HTTP traffic, :meth:`Metrics.observe_vote`, :meth:`Metrics.observe_tokens`,
  :meth:`Metrics.set_peers`, :meth:`Metrics.observe_peer_latency`);
- the supervisor's instances, read at scrape time (state, restarts, in-flight, memory);
- each llama-server's own ``/metrics`` (it runs with ``--metrics``), fetched at scrape
  time by :func:`metrics_endpoint` and re-exposed with an ``instance="inst-N"`` label.

A Prometheus server that scrapes the gateway adds its own ``instance`` target label;
keep ours with ``honor_labels: true`` (otherwise they appear as ``exported_instance``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from localswarm import upstream
from localswarm.supervisor.states import State

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from localswarm.consensus import VoteResult
    from localswarm.gateway.queue import AdmissionQueue
    from localswarm.supervisor.supervisor import Supervisor

__all__ = ["UNMATCHED_ROUTE", "Metrics", "MetricsMiddleware", "metrics_endpoint"]

logger = logging.getLogger(__name__)

NAMESPACE = "localswarm"
UNMATCHED_ROUTE = "<unmatched>"  # every unknown path shares one label value
SCRAPE_TIMEOUT = 2.0  # seconds per llama-server /metrics fetch

# Requests range from /health (ms) to long generations (minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, float("inf"))
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, float("inf"))
PEER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))


class Metrics:
    """The gateway's metrics, in a registry of their own.

    ``supervisor`` may be None (or set later) for a gateway without local instances.
    """

    def __init__(self, supervisor: Supervisor | None = None, *, registry: CollectorRegistry | None = None) -> None:
        self.supervisor = supervisor
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "http_requests", "HTTP requests served, by route template, method and status.",
            ["route", "method", "status"], namespace=NAMESPACE, registry=r,
        )
        self.latency = Histogram(
            "http_request_duration_seconds", "Time from request to the end of the response, by route template.",
            ["route", "method"], namespace=NAMESPACE, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.in_progress = Gauge(
            "http_requests_in_progress", "Requests being served now.", namespace=NAMESPACE, registry=r,
        )
        self.tokens = Counter(
            "tokens", "Tokens in (prompt) and out (completion) of the answers sent to clients.",
            ["direction"], namespace=NAMESPACE, registry=r,
        )
        self.votes = Counter("votes", "Consensus votes held.", ["strategy"], namespace=NAMESPACE, registry=r)
        self.confidence = Histogram(
            "vote_confidence", "Confidence of each vote's winner (0-1).",
            namespace=NAMESPACE, buckets=CONFIDENCE_BUCKETS, registry=r,
        )
        self.early_stops = Counter(
            "vote_early_stops", "Votes decided by quorum before every instance answered.",
            namespace=NAMESPACE, registry=r,
        )
        self.degenerate = Counter(
            "vote_degenerate", "Votes with byte-identical answers (fake agreement: temperature 0 or a shared seed).",
            namespace=NAMESPACE, registry=r,
        )
        self.vote_samples = Counter(
            "vote_samples", "Answers that reached a vote, and instances asked.",
            ["kind"], namespace=NAMESPACE, registry=r,
        )
        self.peers = Gauge("peers", "Federation peers known, by state.", ["state"], namespace=NAMESPACE, registry=r)
        self.peer_latency = Histogram(
            "peer_request_duration_seconds", "Round-trip time of requests to federation peers.",
            ["peer"], namespace=NAMESPACE, buckets=PEER_BUCKETS, registry=r,
        )
        self.peer_bad_replies = Counter(
            "peer_bad_replies", "Replies from federation peers dropped because their signature failed "
            "verification (altered, forged, stale or replayed).", ["peer"], namespace=NAMESPACE, registry=r,
        )
        self.queue_waiting = Gauge("queue_waiting", "Generating requests waiting for instance slots.",
                                   namespace=NAMESPACE, registry=r)
        self.queue_running = Gauge("queue_running", "Generating requests holding instance slots.",
                                   namespace=NAMESPACE, registry=r)
        self.queue_wait = Histogram("queue_wait_seconds", "Time each generating request waited in the queue.",
                                    namespace=NAMESPACE, buckets=LATENCY_BUCKETS, registry=r)
        self._upstream = _UpstreamCollector()
        r.register(_InstanceCollector(self))
        r.register(self._upstream)

    # -- hooks the gateway calls ----------------------------------------------------------
    def observe_vote(self, result: VoteResult, *, answered: int, asked: int, early_stop: bool) -> None:
        """Record one vote: its result, how many instances answered out of those asked."""
        self.votes.labels(strategy=str(result.strategy)).inc()
        self.confidence.observe(max(0.0, min(1.0, float(result.confidence))))
        if early_stop:
            self.early_stops.inc()
        if result.degenerate:
            self.degenerate.inc()
        self.vote_samples.labels(kind="answered").inc(answered)
        self.vote_samples.labels(kind="asked").inc(asked)

    def watch_queue(self, queue: AdmissionQueue) -> None:
        """Report the gateway's queue (issue 13): depth and running now, each request's wait."""
        self.queue_waiting.set_function(lambda: queue.count)
        self.queue_running.set_function(lambda: queue.running)
        queue.on_wait = self.queue_wait.observe

    def observe_tokens(self, prompt: int | None, completion: int | None) -> None:
        """Record the usage of one answer sent to a client."""
        if prompt:
            self.tokens.labels(direction="in").inc(int(prompt))
        if completion:
            self.tokens.labels(direction="out").inc(int(completion))

    # -- hooks the federation code calls --------------------------------------------------
    def set_peers(self, count: int, *, available: int | None = None) -> None:
        """How many peers the table holds (and how many are usable now)."""
        self.peers.labels(state="known").set(count)
        self.peers.labels(state="available").set(count if available is None else available)

    def observe_peer_latency(self, peer: str, seconds: float) -> None:
        """One request to ``peer`` (its table key, e.g. ``host:port``) took ``seconds``."""
        self.peer_latency.labels(peer=peer).observe(seconds)

    def count_peer_bad_reply(self, peer: str) -> None:
        """A reply from ``peer`` failed verification and was dropped."""
        self.peer_bad_replies.labels(peer=peer).inc()

    # -- scraping ---------------------------------------------------------------------------
    async def refresh_upstream(self, client: httpx.AsyncClient, *, timeout: float = SCRAPE_TIMEOUT) -> None:
        """Fetch every live instance's ``/metrics`` concurrently; dead or slow ones are skipped."""
        instances = list(self.supervisor.instances) if self.supervisor else []
        live = [i for i in instances if i.state in (State.READY, State.STARTING) and i.port]
        texts = await asyncio.gather(*(upstream.fetch_metrics(client, i, timeout) for i in live))
        self._upstream.update({i.name: text for i, text in zip(live, texts)}, [i.name for i in instances])

    def render(self) -> bytes:
        """The exposition text (without refreshing the llama-server scrape)."""
        return generate_latest(self.registry)


class _InstanceCollector(Collector):
    """The supervisor's instances, read when scraped (nothing to keep in sync)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # unchecked: families depend on the supervisor at scrape time

    def collect(self) -> Iterator[Metric]:
        supervisor = self._metrics.supervisor
        instances = list(supervisor.instances) if supervisor else []
        state = GaugeMetricFamily(f"{NAMESPACE}_instance_state", "1 for each instance's current state.",
                                  labels=["instance", "state"])
        restarts = CounterMetricFamily(f"{NAMESPACE}_instance_restarts", "Restarts after a crash or failed health.",
                                       labels=["instance"])
        requests = CounterMetricFamily(f"{NAMESPACE}_instance_requests", "Requests sent to the instance.",
                                       labels=["instance"])
        failures = CounterMetricFamily(f"{NAMESPACE}_instance_failures", "Requests the instance failed.",
                                       labels=["instance"])
        in_flight = GaugeMetricFamily(f"{NAMESPACE}_instance_in_flight", "Requests the instance is working on.",
                                      labels=["instance"])
        tokens = CounterMetricFamily(f"{NAMESPACE}_instance_completion_tokens", "Tokens the instance generated.",
                                     labels=["instance"])
        memory = GaugeMetricFamily(f"{NAMESPACE}_instance_memory_rss_bytes", "Resident memory of the process.",
                                   labels=["instance"])
        ready = GaugeMetricFamily(f"{NAMESPACE}_instances_ready", "Instances ready to serve.")
        for inst in instances:
            for s in State:
                state.add_metric([inst.name, s.value], 1.0 if inst.state is s else 0.0)
            st = inst.stats
            restarts.add_metric([inst.name], st.restarts)
            requests.add_metric([inst.name], st.requests)
            failures.add_metric([inst.name], st.failures)
            in_flight.add_metric([inst.name], st.in_flight)
            tokens.add_metric([inst.name], st.completion_tokens)
            if (rss := _rss(inst.pid)) is not None:
                memory.add_metric([inst.name], rss)
        ready.add_metric([], sum(1 for i in instances if i.state is State.READY))
        yield from (state, restarts, requests, failures, in_flight, tokens, memory, ready)
        yield from _guard_metrics(getattr(supervisor, "guard", None))


def _guard_metrics(guard: Any) -> Iterator[Metric]:
    """The memory guard's (issue 13): degraded, free memory per device, instances held, sheds."""
    degraded = GaugeMetricFamily(f"{NAMESPACE}_degraded",
                                 "1 while the memory guard keeps an instance stopped for lack of memory.")
    degraded.add_metric([], 1.0 if guard is not None and guard.degraded else 0.0)
    yield degraded
    if guard is None:
        return
    free = GaugeMetricFamily(f"{NAMESPACE}_memory_available_bytes",
                             "Free memory the guard saw last: RAM as the cgroup allows it, VRAM per GPU.",
                             labels=["device"])
    if guard.last is not None:
        if guard.last.ram_available is not None:
            free.add_metric(["ram"], guard.last.ram_available)
        for index, value in sorted(guard.last.vram_free.items()):
            free.add_metric([f"gpu{index}"], value)
    reserve = GaugeMetricFamily(f"{NAMESPACE}_memory_reserve_bytes", "Memory the guard keeps free.")
    reserve.add_metric([], guard.policy.reserve)
    held = GaugeMetricFamily(f"{NAMESPACE}_instance_held", "1 for an instance the memory guard keeps stopped.",
                             labels=["instance"])
    for inst in guard.instances:
        held.add_metric([inst.name], 1.0 if inst.name in guard.held else 0.0)
    sheds = CounterMetricFamily(f"{NAMESPACE}_memory_guard_stops", "Instances stopped under memory pressure.")
    sheds.add_metric([], guard.sheds)
    resumes = CounterMetricFamily(f"{NAMESPACE}_memory_guard_resumes", "Stopped instances started again.")
    resumes.add_metric([], guard.resumes)
    yield from (free, reserve, held, sheds, resumes)


def _rss(pid: int | None) -> int | None:
    if not pid:
        return None
    with contextlib.suppress(Exception):
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    return None


class _UpstreamCollector(Collector):
    """Each llama-server's own metrics from the last refresh, relabelled per instance."""

    def __init__(self) -> None:
        self._families: list[Metric] = []
        self._up: dict[str, bool] = {}
        self._at = 0.0

    def describe(self) -> list[Metric]:
        return []

    def update(self, texts: dict[str, str | None], names: Iterable[str]) -> None:
        merged: dict[str, Metric] = {}
        up = {name: False for name in names}
        for name, text in texts.items():
            if text is None:
                continue
            try:
                families = list(text_string_to_metric_families(text))
            except Exception as exc:  # noqa: BLE001 - garbage from a broken server must not break our page
                logger.warning("%s: unparsable /metrics: %s", name, exc)
                continue
            up[name] = True
            for fam in families:
                # One family per name across instances: duplicate TYPE lines are invalid.
                out = merged.get(fam.name)
                if out is None:
                    out = merged[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                elif out.type != fam.type:
                    continue
                for sample in fam.samples:
                    out.add_sample(sample.name, {**sample.labels, "instance": name}, sample.value,
                                   sample.timestamp, sample.exemplar)
        self._families = list(merged.values())
        self._up = up
        self._at = time.time()

    def collect(self) -> Iterator[Metric]:
        yield from self._families
        up = GaugeMetricFamily(f"{NAMESPACE}_upstream_up",
                               "1 if the instance's own /metrics was read on the last scrape.", labels=["instance"])
        for name, ok in self._up.items():
            up.add_metric([name], 1.0 if ok else 0.0)
        yield up


def _route_template(scope: Scope) -> str:
    route = scope.get("route")  # set by Starlette's router on a match
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path or "/"
    app = scope.get("app")
    for candidate in getattr(app, "routes", None) or ():
        # Older Starlette does not record the route: find it as the router did.
        with contextlib.suppress(Exception):
            match, _ = candidate.matches(scope)
            if match is not Match.NONE and isinstance(getattr(candidate, "path", None), str):
                return candidate.path or "/"
    return UNMATCHED_ROUTE


class MetricsMiddleware:
    """ASGI middleware: count HTTP requests by route template, method and status; time them.

    The route is the template (``/v1/chat/completions``), never the raw path, so label
    cardinality stays bounded; unknown paths share ``<unmatched>``. Latency runs to the end
    of the response body, which for a stream is the end of the stream.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.in_progress.dec()
            route = _route_template(scope)
            method = scope.get("method", "GET")
            self.metrics.requests.labels(route=route, method=method, status=str(status)).inc()
            self.metrics.latency.labels(route=route, method=method).observe(time.perf_counter() - started)


def metrics_endpoint(metrics: Metrics, *, timeout: float = SCRAPE_TIMEOUT) -> Any:
    """A Starlette endpoint for ``GET /metrics``: refresh the llama-server scrape, then render.

    It uses the gateway's pooled client (``app.state.gateway.client``) when there is one.
    """

    async def endpoint(request: Request) -> Response:
        gateway = getattr(request.app.state, "gateway", None)
        client = getattr(gateway, "client", None)
        federation = getattr(gateway, "federation", None)
        if federation is not None:
            rows = federation.pool.status()
            metrics.set_peers(len(rows), available=sum(1 for r in rows if r.get("state") == "up"))
        if isinstance(client, httpx.AsyncClient) and not client.is_closed:
            await metrics.refresh_upstream(client, timeout=timeout)
        else:
            async with httpx.AsyncClient() as own:
                await metrics.refresh_upstream(own, timeout=timeout)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return endpoint

