"""The OpenTelemetry set-up of the peers' ``otel`` rows: the same as queue_core's.

queue_core's ``otel`` row takes its providers from ``bench/otel_overhead.py``
(``dropping_providers``), which imports queue_core and queue_otel and so cannot run in a
peer's venv; this module is that set-up again, on the OpenTelemetry SDK alone: every trace
sampled (``ALWAYS_ON``), spans through a ``BatchSpanProcessor`` (its defaults) into an
exporter that drops them, and, for an instrumentation that records metrics, a
``PeriodicExportingMetricReader`` that collects every second into an exporter that drops
them. The providers are also made the global ones, for the instrumentations that read only
those (RQ's) and so that every instrumentation sees the same.

One set-up per process (``providers()`` returns the same pair on later calls); a process
forked after it (RQ's work horse, a prefork pool) gets the SDK's own fork handling (the
processor's and the reader's threads are started again in the child).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

METRICS_INTERVAL_MS = 1000
SPANS_ENV = "BENCH_SPANS_FILE"  # the same name as _kit.SPANS_ENV
SETTINGS = (
    "ALWAYS_ON sampler, BatchSpanProcessor to a dropping exporter{metrics}, in producer and workers"
)


class DropSpans(SpanExporter):
    """Drops the spans; in a worker, appends how many to ``$BENCH_SPANS_FILE`` (one short
    line per export, so per batch of spans), which the harness adds up: the proof that the
    instrumentation was on."""

    def __init__(self) -> None:
        self.exported = 0
        self.path = os.environ.get(SPANS_ENV, "")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        if self.path:
            with contextlib.suppress(OSError):
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, b"%d\n" % len(spans))
                finally:
                    os.close(fd)
        return SpanExportResult.SUCCESS


class DropMetrics(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


_MADE: list[tuple[TracerProvider, MeterProvider | None]] = []  # this process's, once made


def providers(*, with_metrics: bool) -> tuple[TracerProvider, MeterProvider | None]:
    """This process's tracer provider and, ``with_metrics``, meter provider (else None),
    made on the first call and installed as the global ones."""
    if not _MADE:
        tracer_provider = TracerProvider(sampler=ALWAYS_ON)
        tracer_provider.add_span_processor(BatchSpanProcessor(DropSpans()))
        trace.set_tracer_provider(tracer_provider)
        meter_provider = None
        if with_metrics:
            reader = PeriodicExportingMetricReader(
                DropMetrics(), export_interval_millis=METRICS_INTERVAL_MS
            )
            meter_provider = MeterProvider(metric_readers=[reader])
            metrics.set_meter_provider(meter_provider)
        _MADE.append((tracer_provider, meter_provider))
    return _MADE[0]


def describe(package: str, how: str, *, with_metrics: bool) -> str:
    """The set-up in words, for a row's settings: the instrumentation's package and
    version, how it is turned on, the providers."""
    version = importlib.metadata.version(package)
    part = (
        f", metrics read every {METRICS_INTERVAL_MS / 1000:g} s into a dropping exporter"
        if with_metrics
        else " (the instrumentation records no metrics)"
    )
    return f"{package} {version} ({how}): " + SETTINGS.format(metrics=part)
