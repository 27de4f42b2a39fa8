"""Prometheus metrics of the receiver."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from ingest.callback import Trigger

__all__ = ["ReceiverMetrics"]


class ReceiverMetrics:
    """One registry per app, so several apps (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total, …
        accepted = Counter(
            "ctwa_receiver_accepted",
            "Callbacks answered 200 after the broker confirmed them, by trigger.",
            ["trigger"],
            registry=self.registry,
        )
        # Every trigger's series exists from the start, and the hot path skips the label lookup.
        self.accepted = {trigger: accepted.labels(str(trigger)) for trigger in Trigger}
        self.rejected = Counter(
            "ctwa_receiver_rejected",
            "Callbacks not accepted, by HTTP status and reason.",
            ["status", "reason"],
            registry=self.registry,
        )
        self.confirm_seconds = Histogram(
            "ctwa_receiver_publish_confirm_seconds",
            "Time from publishing a callback to the broker's confirm.",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.message_callbacks = Histogram(
            "ctwa_receiver_message_callbacks",
            "Callbacks per message published (group commit gathers those arriving together).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.in_flight = 0
        Gauge(
            "ctwa_receiver_in_flight",
            "Callbacks being received or waiting for a confirm.",
            registry=self.registry,
        ).set_function(lambda: self.in_flight)
        self.broker_ready = Gauge(
            "ctwa_receiver_broker_ready",
            "1 while the receiver holds a confirmed channel to the broker.",
            registry=self.registry,
        )
        self.replaced = Counter(
            "ctwa_receiver_broker_replaced",
            "Broker connections replaced because every publish on them was refused (nacked or unconfirmed).",
            registry=self.registry,
        )
        self.broker_blocked = Gauge(
            "ctwa_receiver_broker_blocked",
            "1 while the broker blocks the receiver's publishes (a memory or disk alarm): callbacks get 503 at once.",
            registry=self.registry,
        )
