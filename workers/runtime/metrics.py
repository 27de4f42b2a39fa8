"""Prometheus metrics of a worker process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    """One registry per worker, so several workers in one process (tests) never share counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total, …
        self.processed = Counter(
            "ctwa_worker_processed",
            "Callbacks archived for the first time, by trigger.",
            ["trigger"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "ctwa_worker_duplicates",
            "Callbacks already archived (a retry or redelivery), by trigger; not projected again.",
            ["trigger"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "ctwa_worker_dead_lettered",
            "Messages that can never be stored, sent to the dead-letter queue, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.redelivered = Counter(
            "ctwa_worker_redelivered",
            "Messages the broker delivered again (after a worker or connection was lost).",
            registry=self.registry,
        )
        self.retries = Counter(
            "ctwa_worker_retries",
            "Batches retried after a transient failure, by what failed.",
            ["cause"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ctwa_worker_batch_size",
            "Messages per batch.",
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "ctwa_worker_commit_seconds",
            "Time to write and commit one batch transaction.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.freshness = Histogram(
            "ctwa_worker_freshness_seconds",
            "From the receiver reading a callback to the commit that made it visible in Postgres, for each callback "
            "stored for the first time.",
            buckets=(0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=self.registry,
        )
        self.last_commit = Gauge(
            "ctwa_worker_last_commit_timestamp_seconds",
            "Unix time of the last committed batch.",
            registry=self.registry,
        )
        self.queue_messages = Gauge(
            "ctwa_queue_messages",
            "Messages ready in a queue: the main one (the backlog) or the dead-letter one.",
            ["queue"],
            registry=self.registry,
        )
        self.queue_consumers = Gauge(
            "ctwa_queue_consumers", "Consumers of the main queue, all workers together.", registry=self.registry
        )
        self.lag = Gauge(
            "ctwa_worker_lag_seconds",
            "Age of the oldest callback not yet stored: how long the batch in hand waited; 0 when all is stored.",
            registry=self.registry,
        )
        self.chains_settled = Counter(
            "ctwa_worker_chains_settled",
            "Entries of chain_backlog settled: people and conversations whose day chains batches touched.",
            registry=self.registry,
        )
        self.chains_settled_at = Gauge(
            "ctwa_worker_chains_settled_timestamp_seconds",
            "Unix time this worker last found chain_backlog settled (the dashboard's figures are that fresh).",
            registry=self.registry,
        )
        self.broker_connected = Gauge(
            "ctwa_worker_broker_connected",
            "1 while the worker holds a consuming channel.",
            registry=self.registry,
        )
