"""Every Prometheus metric of the engine, in a registry owned by one app, and its observer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Pattern work takes tens to hundreds of microseconds; the default buckets start at 5 ms.
PROCESSING_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
# Fine steps up to 10 ms: the embedded server's target is a p99 under 5 ms.
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.0025,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
    2.5,
)
METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class EngineMetrics:
    """The engine's metrics in their own registry, so that several apps can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events_processed = Counter(
            "srvthreds_events_processed",
            "Events processed, by result.",
            ["result"],
            registry=self.registry,
        )
        self.active_threds = Gauge(
            "srvthreds_active_threds", "Threds currently stored and active.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "srvthreds_queue_depth", "Items waiting in a queue.", ["queue"], registry=self.registry
        )
        self.event_processing_seconds = Histogram(
            "srvthreds_event_processing_seconds",
            "Time to process one event to completion.",
            buckets=PROCESSING_BUCKETS,
            registry=self.registry,
        )
        self.event_latency_seconds = Histogram(
            "srvthreds_event_latency_seconds",
            "Time from an event's acceptance by POST /events to the end of its processing "
            "(its messages dispatched): queueing included.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.thred_creations_skipped = Counter(
            "srvthreds_thred_creations_skipped",
            "Thred creations skipped by maxInstances or instanceInterval.",
            ["pattern", "reason"],
            registry=self.registry,
        )
        self.events_received = Counter(
            "srvthreds_events_received",
            "Events accepted by POST /events.",
            registry=self.registry,
        )
        self.messages_dispatched = Counter(
            "srvthreds_messages_dispatched",
            "Outbound messages handed to the dispatcher.",
            registry=self.registry,
        )
        self.messages_unroutable = Counter(
            "srvthreds_messages_unroutable",
            "Queue messages dropped because no queue is bound for their routing key "
            "(a service address whose agent is not deployed).",
            registry=self.registry,
        )
        self.pattern_reloads = Counter(
            "srvthreds_pattern_reloads",
            "reloadPattern/reloadAllPatterns operations, by op and result (ok: the new patterns "
            "are in use; failed: the old ones were kept).",
            ["op", "result"],
            registry=self.registry,
        )
        self.event_loop_lag_seconds = Gauge(
            "srvthreds_event_loop_lag_seconds",
            "Delay of the last event-loop wake-up past its deadline.",
            registry=self.registry,
        )

    content_type = METRICS_CONTENT_TYPE

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def count_received(self, count: int) -> None:
        """Count events accepted by POST /events."""
        self.events_received.inc(count)

    def set_loop_lag(self, seconds: float) -> None:
        """The last measured event-loop lag."""
        self.event_loop_lag_seconds.set(seconds)


class PrometheusObserver:
    """The core's EngineObserver, recording into EngineMetrics."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self._metrics = metrics
        # Labelled children by result, looked up once: `labels()` costs more than `inc()`.
        self._processed: dict[str, Counter] = {}

    def event_processed(self, *, result: str, seconds: float) -> None:
        """Count one processed event and record how long it took."""
        counter = self._processed.get(result)
        if counter is None:
            counter = self._processed[result] = self._metrics.events_processed.labels(result=result)
        counter.inc()
        self._metrics.event_processing_seconds.observe(seconds)

    def thred_creation_skipped(self, *, pattern_id: str, reason: str) -> None:
        """Count a creation that maxInstances or instanceInterval prevented."""
        self._metrics.thred_creations_skipped.labels(pattern=pattern_id, reason=reason).inc()

    def threds_changed(self, *, active: int) -> None:
        """Track the number of active threds."""
        self._metrics.active_threds.set(active)

    def patterns_reloaded(self, *, op: str, result: str) -> None:
        """Count a pattern reload (system.ReloadObserver)."""
        self._metrics.pattern_reloads.labels(op=op, result=result).inc()


class AgentMetrics:
    """The session and persistence agents' metrics, in their own registry."""

    def __init__(self, *, agent: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.agent = agent
        self.messages_handled = Counter(
            "srvthreds_agent_messages",
            "Queue messages an agent handled, by result (persistence: ok, failed, "
            "dead_lettered; session: delivered, kept, rerouted, adopted).",
            ["agent", "result"],
            registry=self.registry,
        )
        self.message_seconds = Histogram(
            "srvthreds_agent_message_seconds",
            "Time from a queue delivery to its settling.",
            ["agent"],
            buckets=PROCESSING_BUCKETS,
            registry=self.registry,
        )
        self.logins = Counter(
            "srvthreds_session_logins",
            "Login attempts by result (ok, refused, rate_limited).",
            ["result"],
            registry=self.registry,
        )
        self.tokens_refused = Counter(
            "srvthreds_session_tokens_refused",
            "Access and refresh tokens refused, by where (http, socket, refresh) and reason.",
            ["where", "reason"],
            registry=self.registry,
        )
        self.sockets = Gauge(
            "srvthreds_session_sockets",
            "socket.io connections open on this session agent.",
            registry=self.registry,
        )
        self.events_received = Counter(
            "srvthreds_session_events",
            "Events participants sent through this session agent (HTTP and socket.io).",
            ["channel"],
            registry=self.registry,
        )
        self.event_loop_lag_seconds = Gauge(
            "srvthreds_event_loop_lag_seconds",
            "Delay of the last event-loop wake-up past its deadline.",
            registry=self.registry,
        )

    content_type = METRICS_CONTENT_TYPE

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def count_received(self, count: int) -> None:
        """Count events accepted over HTTP."""
        self.events_received.labels(channel="http").inc(count)

    def set_loop_lag(self, seconds: float) -> None:
        """The last measured event-loop lag."""
        self.event_loop_lag_seconds.set(seconds)

    def handled(self, result: str, *, seconds: float | None = None) -> None:
        """Count one handled queue message (and how long it took)."""
        self.messages_handled.labels(agent=self.agent, result=result).inc()
        if seconds is not None:
            self.message_seconds.labels(agent=self.agent).observe(seconds)
