"""Prometheus metrics of ``rmclient serve`` (``GET /metrics``, the text format vLLM and sglang serve too).

One registry per server (several servers can run in one process: tests, notebooks). Request
counts by route and status, latency and batch-size histograms, the model's queue, and token and
forward-pass counters read from the batcher and the backend at scrape time.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator

from .extras import require

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """The server's metrics; ``stats()`` (the JSON counters of ``/stats``) feeds the scrape-time ones."""

    def __init__(self, stats: Callable[[], Dict[str, Any]]) -> None:
        prom = require("prometheus_client", "serve", "rmclient serve's /metrics")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "rmclient_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.samples = prom.Counter("rmclient_samples", "samples scored, by route", ["route"], registry=self.registry)
        self.latency = prom.Histogram(
            "rmclient_request_seconds", "time to answer a request, by route", ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.batch_size = prom.Histogram(
            "rmclient_batch_sequences", "sequences per merged batch run by the model", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.registry.register(_FromStats(stats))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return self._prom.generate_latest(self.registry)


class _FromStats:
    """Counters and gauges read from the batcher's and backend's own counters when scraped."""

    COUNTERS = (  # (key in stats(), metric name without _total, help)
        ("batches", "rmclient_batches", "merged batches run by the model"),
        ("forward_passes", "rmclient_forward_passes", "forward passes the batches were cut into"),
        ("tokens", "rmclient_tokens", "real (unpadded) tokens scored"),
        ("model_seconds", "rmclient_model_seconds", "seconds the model spent scoring"),
        ("abandoned_requests", "rmclient_abandoned_requests", "requests dropped unscored (client gone)"),
        ("failed_requests", "rmclient_failed_requests", "requests the model failed"),
    )
    GAUGES = (("queued_requests", "rmclient_queued_requests", "requests waiting for the model"),)

    def __init__(self, stats: Callable[[], Dict[str, Any]]) -> None:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self._families = ((CounterMetricFamily, self.COUNTERS), (GaugeMetricFamily, self.GAUGES))
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        stats = self._stats()
        for family, metrics in self._families:
            for key, name, doc in metrics:
                yield family(name, doc, value=float(stats.get(key, 0)))
