"""Prometheus metrics, one registry per app (no globals, so tests can run apps side by side)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .engine import Engine

NAMESPACES = ("/job", "/info")
TRANSPORTS = ("websocket", "polling")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.published = Counter(
            "switchboard_events_published",
            "Job events committed and broadcast.",
            registry=self.registry,
        )
        self.deliveries = Counter(
            "switchboard_deliveries",
            "Events sent to connected clients of this process.",
            ["namespace", "event"],
            registry=self.registry,
        )
        self.broadcast_sends = Counter(
            "switchboard_broadcast_sends",
            "Broadcast packets for Socket.IO clients: written straight to the websocket,"
            " or queued (long-polling, upgrading or backed-up clients).",
            ["path"],
            registry=self.registry,
        )
        self.publish_seconds = Histogram(
            "switchboard_publish_seconds",
            "From accepting a job update to handing its event to the sockets.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.order_fills = Counter(
            "switchboard_order_fills",
            "Job events that arrived ahead of an earlier one (another node's, or after a"
            " pub/sub reconnect): the gap was read from the store before delivering.",
            registry=self.registry,
        )
        self.pubsub_messages = Counter(
            "switchboard_pubsub_messages",
            "Messages this node received from Redis pub/sub, by channel kind: control (the"
            " shared channel), events and logs (one channel per job, received only while"
            " this node has a subscriber for the job, or for '*' or a tag).",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "switchboard_rejected",
            "Requests and socket events refused, by error code.",
            ["code"],
            registry=self.registry,
        )

        self.webhook_deliveries = Counter(
            "switchboard_webhook_deliveries",
            "Webhook deliveries by outcome: delivered (a 2xx), failed (an attempt that is"
            " retried), dead (given up after --webhook-max-age).",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_attempt_seconds = Histogram(
            "switchboard_webhook_attempt_seconds",
            "One webhook POST, from sending to the answer (or the timeout).",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.webhook_pending = Gauge(
            "switchboard_webhook_pending",
            "Webhook deliveries waiting in the store (every node's, on Redis), as of the last"
            " look (every 5 s).",
            registry=self.registry,
        )

    def watch_connections(self, engine: Engine) -> None:
        self.registry.register(_Connections(engine))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Connections(Collector):
    """Counts sockets at scrape time, so upgrades and drops are always reflected."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "switchboard_connections",
            "Connected Socket.IO clients.",
            labels=["namespace", "transport"],
        )
        counts: Tally[tuple[str, str]] = Tally()
        for namespace in NAMESPACES:
            for _, eio_sid in list(self.engine.participants(namespace)):
                transport = self.engine.transport_of(eio_sid)
                if transport is not None:
                    counts[namespace, transport] += 1
        for namespace in NAMESPACES:
            for transport in TRANSPORTS:
                family.add_metric([namespace, transport], counts[namespace, transport])
        yield family
