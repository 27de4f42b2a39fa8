"""Prometheus metrics of a conversions sender. The token never appears in them: labels are outcomes, codes and
``app`` — the app whose Meta setup a request used (its Sinch app id), or ``default`` for ``CTWA_META_*``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector

__all__ = ["SenderMetrics"]


class SenderMetrics:
    """One registry per sender, so several senders in one process (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total, …
        self.sent = Counter("ctwa_conversions_sent", "Events Meta counted.", ["app"], registry=self.registry)
        self.refused = Counter(
            "ctwa_conversions_refused",
            "Events Meta refused for good (marked failed), by Meta's error subcode (or code).",
            ["reason", "app"],
            registry=self.registry,
        )
        self.settled = Counter(
            "ctwa_conversions_settled_unsent",
            "Events settled without being counted: unattributed, erased, expired, unconfirmed, unconfigured.",
            ["status"],
            registry=self.registry,
        )
        self.requests = Counter(
            "ctwa_conversions_requests",
            "Requests to Meta, by outcome: counted, retry, throttled, park, refused, unknown.",
            ["outcome", "app"],
            registry=self.registry,
        )
        self.pending = Gauge("ctwa_conversions_pending", "Events waiting to be sent.", registry=self.registry)
        self.oldest_pending = Gauge(
            "ctwa_conversions_oldest_pending_age_seconds",
            "How long the oldest pending event has waited since it was recorded.",
            registry=self.registry,
        )
        self.waits = Counter(
            "ctwa_conversions_waits",
            "Times the sender waited CTWA_CONVERSIONS_POLL_S before looking again: idle (nothing due) or parked.",
            ["state"],
            registry=self.registry,
        )
        self.parked = Gauge(
            "ctwa_conversions_parked",
            "1 while Meta refuses the token, permissions or dataset of an app's setup: none of its events is sent.",
            ["app"],
            registry=self.registry,
        )
