"""The histograms aggregated in queue_otel and handed to the SDK at collection: the same
data points as the SDK's own histogram given the same values, in every reader and either
temporality, with exemplars that keep their span; the SDK's own path wherever the set-up
changes how histograms aggregate."""

from __future__ import annotations

import random
from typing import Any

from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.trace import TracerProvider

from queue_otel.histograms import BridgedHistogram, bridge_supported

BOUNDS = (0.005, 0.01, 0.1, 1.0, 10.0)


def points(reader: InMemoryMetricReader, *bridged: BridgedHistogram) -> dict[tuple[str, str], Any]:
    """The histogram points of one collection, by (instrument, attribute "q"). The bridged
    histograms are flushed first, as MetricsHook does in its first collection callback."""
    for histogram in bridged:
        histogram.flush()
    data = reader.get_metrics_data()
    found: dict[tuple[str, str], Any] = {}
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    found[(metric.name, str(point.attributes["q"]))] = point
    return found


def summary(point: Any) -> tuple[Any, ...]:
    return (point.count, round(point.sum, 9), tuple(point.bucket_counts), point.min, point.max)


def test_the_sdk_in_use_supports_the_bridge() -> None:
    # If a new SDK release changes its internals, this fails here (the bridge then
    # falls back to the SDK's own record, slower but exact) rather than going unnoticed.
    assert bridge_supported()


def test_bridged_points_equal_the_sdks_own_in_every_reader_and_temporality() -> None:
    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[cumulative, delta])
    meter = provider.get_meter("test")
    bridged = BridgedHistogram(meter, "bridged", "", BOUNDS)
    assert bridged.bridged
    direct = meter.create_histogram("direct", explicit_bucket_boundaries_advisory=list(BOUNDS))
    rng = random.Random(7)
    attribute_sets = [{"q": name, "n": 1} for name in ("a", "b", "c")]
    for _ in range(3):  # three collections, each after a new batch of values
        for _ in range(500):
            attributes = rng.choice(attribute_sets)
            value = rng.choice([rng.uniform(0, 0.02), rng.uniform(0, 20), 0.01, 10.0])
            bridged.record(value, attributes["q"], attributes)
            direct.record(value, attributes)
        for reader in (cumulative, delta):
            found = points(reader, bridged)
            for attributes in attribute_sets:
                q = attributes["q"]
                assert summary(found[("bridged", q)]) == summary(found[("direct", q)])
                assert dict(found[("bridged", q)].attributes) == attributes
    provider.shutdown()


def test_exemplars_keep_the_span_and_time_of_their_measurement() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    bridged = BridgedHistogram(provider.get_meter("test"), "bridged", "", BOUNDS)
    tracer = TracerProvider().get_tracer("test")
    recorded: dict[int, tuple[int, int]] = {}  # span id -> (trace id, time before)
    for value in (0.002, 0.05, 0.5, 5.0, 0.003):
        with tracer.start_as_current_span("attempt") as span:
            context = span.get_span_context()
            recorded[context.span_id] = (context.trace_id, span.start_time or 0)
            bridged.record(value, "a", {"q": "a"})
    bridged.record(0.004, "a", {"q": "a"})  # outside any span: never an exemplar
    (point,) = points(reader, bridged).values()
    assert point.count == 6
    assert len(point.exemplars) == 4  # one per bucket that saw a sampled measurement
    for exemplar in point.exemplars:
        trace_id, started = recorded[exemplar.span_id]
        assert exemplar.trace_id == trace_id
        assert exemplar.time_unix_nano >= started  # the measurement's time, not the collection's
    # In the first bucket, the last measurement made in a sampled span is the exemplar.
    first = [e for e in point.exemplars if e.value < BOUNDS[0]]
    assert [e.value for e in first] == [0.003]
    provider.shutdown()


def test_views_that_change_aggregation_use_the_sdks_own_path() -> None:
    reader = InMemoryMetricReader()
    view = View(instrument_name="bridged", aggregation=ExponentialBucketHistogramAggregation())
    provider = MeterProvider(metric_readers=[reader], views=[view])
    bridged = BridgedHistogram(provider.get_meter("test"), "bridged", "", BOUNDS)
    assert not bridged.bridged
    for value in (0.5, 1.5, 2.5):
        bridged.record(value, "a", {"q": "a"})
    (point,) = points(reader, bridged).values()
    assert (point.count, point.sum) == (3, 4.5)
    assert hasattr(point, "scale")  # the view's exponential histogram, as configured
    provider.shutdown()


def test_a_reader_preferring_another_aggregation_uses_the_sdks_own_path() -> None:
    reader = InMemoryMetricReader(
        preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation()}
    )
    provider = MeterProvider(metric_readers=[reader])
    bridged = BridgedHistogram(provider.get_meter("test"), "bridged", "", BOUNDS)
    assert not bridged.bridged
    bridged.record(0.5, "a", {"q": "a"})
    (point,) = points(reader, bridged).values()
    assert point.count == 1
    provider.shutdown()
