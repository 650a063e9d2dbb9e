"""Histograms aggregated here and handed to the OpenTelemetry SDK when metrics are collected.

A synchronous ``Histogram.record`` in the SDK costs 20-35 µs on the worker's path: every
call validates and copies its attributes, then hashes them recursively to find their
aggregation (measured: two thirds of the call, for the 8-10 attributes of a job). A job
records three or four durations, more than the engine spends on the job. Here a record is
a dictionary lookup and a bisect under a lock (about 1 µs); the attribute dict is built
once per attribute set by the caller.

At each collection (the SDK runs observable callbacks before it reads its aggregations;
``MetricsHook`` calls ``flush`` first thing in its first callback), the counts gathered
since the last one are merged into the SDK's own aggregation of each attribute set, in
every reader: temporality, export, the exemplar filter and reservoirs stay the SDK's. The
last value of each bucket (one measured inside a sampled span when there is one) goes
through the SDK's normal path with its own time and context, so exemplars keep their
trace, time and value; the rest are added to the aggregation's counts, sum, min and max.

That merge uses SDK internals (``_measurement_consumer``, reader storages, the explicit
bucket aggregation's fields), which a release may change. So ``bridge_supported`` checks
them once per process by a self-test against the SDK's own result on a private provider,
and each meter is checked for what would change the aggregation (views, a reader's
preferred histogram aggregation): when anything differs, ``record`` calls the SDK's
``record`` directly, as before. Slower, never wrong. Supported and tested: the SDK range
of the ``otel`` extra (>= 1.45).
"""

from __future__ import annotations

import functools
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import Meter

from queue_core import get_logger
from queue_otel.sampled_out import DroppedSpan

__all__ = ["BridgedHistogram", "bridge_supported"]

_log = get_logger("queue_otel")


class _Pending:
    """What one attribute set gathered since the last collection: each bucket's exemplar
    candidate apart, the other values as counts, sum, min and max (no subtraction later,
    so the sum is exactly the SDK's)."""

    __slots__ = ("counts", "last", "max", "min", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        # bucket -> (value, time in ns, context): that bucket's exemplar candidate
        self.last: dict[int, tuple[float, int, Context]] = {}


# The last context asked about and the answer: a job's three or four records are made in
# its attempt's context (one object), so the span lookup is done once per attempt. The
# tuple holds the context, so its id cannot be reused while it is the key.
_last_sampled: tuple[Context | None, bool] = (None, False)


def _sampled(ctx: Context) -> bool:
    global _last_sampled  # noqa: PLW0603 - a one-entry cache, replaced whole
    last = _last_sampled
    if last[0] is ctx:
        return last[1]
    span = trace.get_current_span(ctx)
    # A sampled-out attempt's span is known not to be sampled: its context is not built.
    sampled = not isinstance(span, DroppedSpan) and span.get_span_context().trace_flags.sampled
    _last_sampled = (ctx, sampled)
    return sampled


class BridgedHistogram:
    """An explicit-bucket histogram of seconds, ``record(value, key, attributes)``: ``key``
    identifies the attribute set (hashable, cheap), ``attributes`` is its dict, built once
    and never changed by the caller."""

    def __init__(
        self,
        meter: Meter,
        name: str,
        description: str,
        buckets: Sequence[float],
        *,
        bridge: bool | None = None,
    ) -> None:
        self._bounds = tuple(buckets)
        self._sdk: Any = meter.create_histogram(
            name, unit="s", description=description,
            explicit_bucket_boundaries_advisory=list(buckets),
        )  # fmt: skip
        if bridge is None:
            bridge = bridge_supported()
        self._consumer: Any = _mergeable_consumer(meter) if bridge else None
        self._lock = threading.Lock()
        self._pending: dict[Hashable, _Pending] = {}
        self._attributes: dict[Hashable, Mapping[str, Any]] = {}
        # (reader storage id, key) -> the SDK aggregations of that attribute set
        self._aggregations: dict[tuple[int, Hashable], list[Any]] = {}

    @property
    def bridged(self) -> bool:
        """Whether records are aggregated here (False: each goes to the SDK at once)."""
        return self._consumer is not None

    def record(self, value: float, key: Hashable, attributes: Mapping[str, Any]) -> None:
        if self._consumer is None:
            self._sdk.record(value, attributes)
            return
        ctx = otel_context.get_current()
        bucket = bisect_left(self._bounds, value)
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending(len(self._bounds) + 1)
                self._attributes.setdefault(key, attributes)
            previous = pending.last.get(bucket)
            if previous is not None and not _sampled(ctx):
                candidate = value  # the bucket keeps its candidate
            else:
                pending.last[bucket] = (value, time.time_ns(), ctx)
                if previous is None:
                    return
                candidate = previous[0]  # replaced: it becomes one of the counted values
            pending.counts[bucket] += 1
            pending.sum += candidate
            pending.min = min(candidate, pending.min)
            pending.max = max(candidate, pending.max)

    def flush(self) -> None:
        """Merge what was gathered into the SDK's aggregations (at collection time)."""
        if self._consumer is None:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
        for key, gathered in pending.items():
            self._merge(key, gathered)

    def _merge(self, key: Hashable, gathered: _Pending) -> None:
        from opentelemetry.sdk.metrics._internal.measurement import (  # noqa: PLC0415
            Measurement,
        )

        attributes = self._attributes[key]
        # One value per bucket through the SDK's path: it makes the aggregation when it is
        # new and offers the exemplar, with the measurement's own time and context.
        for value, at, ctx in gathered.last.values():
            self._consumer.consume_measurement(Measurement(value, at, self._sdk, ctx, attributes))
        if not any(gathered.counts):
            return
        aggregations = self._sdk_aggregations(key, attributes)
        for aggregation in aggregations:
            if getattr(aggregation, "_boundaries", None) != self._bounds:  # see _unexpected
                self._unexpected(aggregation, gathered, attributes)
                return
        for aggregation in aggregations:
            with aggregation._lock:
                if aggregation._value is None:
                    aggregation._value = aggregation._get_empty_bucket_counts()
                for bucket, count in enumerate(gathered.counts):
                    aggregation._value[bucket] += count
                aggregation._sum += gathered.sum
                if aggregation._record_min_max:
                    aggregation._min = min(aggregation._min, gathered.min)
                    aggregation._max = max(aggregation._max, gathered.max)

    def _unexpected(
        self, aggregation: Any, gathered: _Pending, attributes: Mapping[str, Any]
    ) -> None:
        """A reader added after the check aggregates differently (a preferred histogram
        aggregation of its own): from now on every record goes to the SDK as it happens.
        This interval's values are known by bucket only; each is recorded as the middle
        of its bucket (its bound at the ends), clamped to the interval's min and max."""
        _log.warning("histogram_bridge_off", instrument=self._sdk.name,
                     aggregation=type(aggregation).__name__)  # fmt: skip
        self._consumer = None
        edges = (gathered.min, *self._bounds, gathered.max)
        for bucket, count in enumerate(gathered.counts):
            low, high = edges[bucket], edges[bucket + 1]
            value = min(max((low + high) / 2, gathered.min), gathered.max)
            for _ in range(count):
                self._sdk.record(value, attributes)

    def _sdk_aggregations(self, key: Hashable, attributes: Mapping[str, Any]) -> list[Any]:
        from opentelemetry.sdk.metrics._internal._view_instrument_match import (  # noqa: PLC0415
            _hash_attributes,
        )

        found: list[Any] = []
        for storage in self._consumer._reader_storages.values():
            known = self._aggregations.get((id(storage), key))
            if known is None:
                matches = storage._get_or_init_view_instrument_match(self._sdk)
                aggregation_key = _hash_attributes(dict(attributes))
                known = [m._attributes_aggregation[aggregation_key] for m in matches]
                self._aggregations[(id(storage), key)] = known
            found.extend(known)
        return found


def _mergeable_consumer(meter: Meter) -> Any:
    """The SDK's measurement consumer of ``meter`` when nothing in its set-up changes how
    histograms aggregate (no views; every reader's histogram aggregation the default);
    otherwise None."""
    from opentelemetry.sdk.metrics import Histogram  # noqa: PLC0415
    from opentelemetry.sdk.metrics.view import DefaultAggregation  # noqa: PLC0415

    consumer = getattr(meter, "_measurement_consumer", None)
    config = getattr(consumer, "_sdk_config", None)
    if consumer is None or config is None or tuple(config.views):
        return None
    for storage in consumer._reader_storages.values():
        for instrument_class, aggregation in storage._instrument_class_aggregation.items():
            if issubclass(instrument_class, Histogram) and not isinstance(
                aggregation, DefaultAggregation
            ):
                return None
    return consumer


@functools.cache
def bridge_supported() -> bool:
    """Whether this SDK's internals still work as the merge expects: the same values,
    bridged and recorded by the SDK itself, must give the same data points."""
    try:
        return _self_test()
    except Exception:
        return False


def _self_test() -> bool:
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("queue_otel.self_test")
    bounds = (0.1, 1.0, 10.0)
    values = (0.05, 0.07, 0.5, 2.0, 20.0, 3.0, 0.3, 30.0)
    attributes: dict[str, Any] = {"a": "x", "n": 1}
    consumer = _mergeable_consumer(meter)
    if consumer is None:
        return False
    bridged = BridgedHistogram(meter, "bridged", "", bounds, bridge=True)
    direct = meter.create_histogram("direct", explicit_bucket_boundaries_advisory=list(bounds))
    for value in values:
        bridged.record(value, "k", attributes)
        direct.record(value, attributes)
    bridged.flush()
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    points: dict[str, Any] = {
        metric.name: metric.data.data_points[0]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    a, b = points["bridged"], points["direct"]
    return bool(
        (a.count, tuple(a.bucket_counts), a.min, a.max, dict(a.attributes))
        == (b.count, tuple(b.bucket_counts), b.min, b.max, dict(b.attributes))
        and math.isclose(a.sum, b.sum, rel_tol=1e-12)  # the same values, added in another order
        and a.count == len(values)
    )
