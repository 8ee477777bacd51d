"""Prometheus metrics for the milter daemon, in a private registry.

A private registry (not prometheus-client's global one) keeps two daemons in one test
process, or a library caller's own metrics, from colliding. The exporter listens on
loopback only: metrics say how much mail a site gets, which is nobody else's business.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ..result import ScanResult

__all__ = ["MilterMetrics"]

# Scan latency buckets in seconds: a Bayes-only scan takes milliseconds, network scorers up to the deadline.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MilterMetrics:
    """Counters and histograms the daemon updates once per message."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "mailguard_milter_messages", "Messages answered, by the reply given to the MTA", ["action"], registry=self.registry
        )
        self.scan_seconds = Histogram(
            "mailguard_milter_scan_seconds", "Time from end of message to the verdict", buckets=_BUCKETS, registry=self.registry
        )
        self.scorer_failures = Counter(
            "mailguard_scorer_failures", "Scorer failures during milter scans", ["scorer", "kind"], registry=self.registry
        )
        self.errors = Counter(
            "mailguard_milter_errors", "Messages answered with on_error (exception, deadline, shutdown)", ["kind"], registry=self.registry
        )
        self.in_flight = Gauge(
            "mailguard_milter_scans_in_flight", "Messages handed to the scanner and not answered yet", registry=self.registry
        )
        self._server: Any = None

    def observe(self, action: str, seconds: float, results: list[ScanResult]) -> None:
        self.messages.labels(action=action).inc()
        self.scan_seconds.observe(seconds)
        seen: set[tuple[str, str]] = set()
        for result in results:  # a failure is counted once per message, not once per recipient
            for failure in result.failures:
                if (failure.scorer, failure.kind) not in seen:
                    seen.add((failure.scorer, failure.kind))
                    self.scorer_failures.labels(scorer=failure.scorer, kind=failure.kind).inc()

    def serve(self, port: int) -> None:
        """Start the HTTP exporter on 127.0.0.1:``port`` (a daemon thread)."""
        self._server = start_http_server(port, addr="127.0.0.1", registry=self.registry)

    def close(self) -> None:
        if isinstance(self._server, tuple):  # prometheus-client >= 0.20 returns (server, thread)
            self._server[0].shutdown()
            self._server[0].server_close()
        self._server = None
