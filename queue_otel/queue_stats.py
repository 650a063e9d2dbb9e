"""Queue depth per state and the age of the oldest waiting job, as observable gauges.

Run this in one process (an API, a metrics sidecar, or one worker), not in every worker:
each collection reads Redis once per queue (``SyncQueue.get_stats``, one script call),
and ten workers would only report the same numbers ten times. Collection happens in the
metric reader's thread (a Prometheus scrape, or the OTLP export interval).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from queue_core import QueueError, QueueStats, SyncQueue, get_logger
from queue_otel import semconv as sc

__all__ = ["QueueStatsObserver"]

_log = get_logger("queue_otel")
_FRESH_S = 1.0  # both gauges of one collection share one read


class QueueStatsObserver:
    def __init__(
        self,
        queues: Sequence[str],
        meter: Meter,
        *,
        redis: Any = None,
        prefix: str = "qc",
    ) -> None:
        self._queues = [SyncQueue(name, redis=redis, prefix=prefix) for name in queues]
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, QueueStats]] = {}
        self._closed = False
        self._last_error = 0.0
        meter.create_observable_gauge(
            sc.QUEUE_DEPTH,
            callbacks=[self._depth],
            unit="{job}",
            description="Jobs in each state.",
        )
        meter.create_observable_gauge(
            sc.OLDEST_JOB_AGE,
            callbacks=[self._oldest],
            unit="s",
            description="How long the job that has waited longest has been ready.",
        )

    def close(self) -> None:
        """Stop observing (gauges cannot be removed from a meter; they go quiet)."""
        self._closed = True
        for queue in self._queues:
            queue.close()

    def _stats(self, queue: SyncQueue) -> QueueStats | None:
        with self._lock:
            cached = self._cache.get(queue.name)
            if cached is not None and time.monotonic() - cached[0] < _FRESH_S:
                return cached[1]
            try:
                stats = queue.get_stats()
            except QueueError as exc:
                if time.monotonic() - self._last_error > 60:  # one warning a minute at most
                    self._last_error = time.monotonic()
                    _log.warning("queue_stats_unavailable", queue=queue.name, error=str(exc))
                return None
            self._cache[queue.name] = (time.monotonic(), stats)
            return stats

    def _depth(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._closed:
            return
        for queue in self._queues:
            stats = self._stats(queue)
            if stats is None:
                continue
            for state, count in stats.counts.items():
                yield Observation(
                    count,
                    {
                        sc.MESSAGING_SYSTEM: sc.SYSTEM,
                        sc.DESTINATION: queue.name,
                        sc.JOB_STATE: state,
                    },
                )

    def _oldest(self, options: CallbackOptions) -> Iterable[Observation]:
        if self._closed:
            return
        for queue in self._queues:
            stats = self._stats(queue)
            if stats is not None:
                yield Observation(
                    stats.oldest_waiting_age or 0.0,
                    {sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: queue.name},
                )
