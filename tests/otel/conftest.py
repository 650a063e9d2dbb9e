"""In-memory OpenTelemetry providers, instrumented for one test at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from queue_otel import QueueInstrumentor


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    instrumentor: QueueInstrumentor

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        found = sorted(self.exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
        return [s for s in found if name is None or s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out: list[Any] = []
        if data is None:
            return out
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for found in scope_metrics.metrics:
                    if found.name == metric:
                        out.extend(found.data.data_points)
        return out

    def total(self, metric: str, where: dict[str, Any] | None = None) -> float:
        """Sum of a counter, or count of a histogram, over points matching ``where``."""
        result = 0.0
        for point in self.points(metric):
            if all(point.attributes.get(k) == v for k, v in (where or {}).items()):
                result += point.count if hasattr(point, "bucket_counts") else point.value
        return result


@pytest.fixture
def instrument() -> Iterator[Callable[..., Telemetry]]:
    """Instrument with in-memory providers; options go to ``instrument()``, but
    ``sampler``, the tracer provider's (the SDK's default when not given)."""
    instrumentor = QueueInstrumentor()

    def start(*, sampler: Sampler | None = None, **options: Any) -> Telemetry:
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider(sampler=sampler)
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        options.setdefault("export_logs", False)
        instrumentor.instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider, **options
        )
        return Telemetry(exporter, reader, tracer_provider, meter_provider, instrumentor)

    yield start
    instrumentor.uninstrument()


@pytest.fixture
def telemetry(instrument: Callable[..., Telemetry]) -> Telemetry:
    return instrument()
