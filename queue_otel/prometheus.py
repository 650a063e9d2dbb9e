"""A Prometheus ``/metrics`` endpoint for the OpenTelemetry metrics, with exemplars.

``PrometheusReader`` is an OpenTelemetry metric reader that prometheus-client serves. It
names metrics the way the OpenTelemetry-to-Prometheus compatibility rules do, which is
what a Collector's Prometheus exporter (and Prometheus's own OTLP receiver) produce from
the OTLP stream: dots become underscores, the unit becomes a suffix (``s`` ->
``_seconds``), counters end in ``_total``, histograms give ``_bucket``/``_sum``/``_count``.
So one set of dashboards serves both paths: scrape the workers directly, or send OTLP
through a Collector.

The official ``opentelemetry-exporter-prometheus`` drops exemplars; this reader keeps
them: histogram buckets (and synchronous counters) carry the ``trace_id`` and ``span_id``
of a recent measurement, which Grafana turns into links to the trace. They appear in the OpenMetrics
format, which Prometheus negotiates when scraping.

    reader = PrometheusReader()
    MeterProvider(metric_readers=[reader])
    start_metrics_server(9464, reader=reader)

With ``opentelemetry-instrument``, set ``OTEL_METRICS_EXPORTER=queue_core_prometheus``
(host and port from ``OTEL_EXPORTER_PROMETHEUS_HOST`` / ``_PORT``, default localhost:9464).
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.core import (
    Metric as PrometheusMetric,
)
from prometheus_client.samples import Exemplar

__all__ = ["AutoPrometheusReader", "PrometheusReader", "metric_name", "start_metrics_server"]

_NAME_RE: Final = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_RE: Final = re.compile(r"[^a-zA-Z0-9]+")
_ANNOTATION_RE: Final = re.compile(r"{.*}")
# The compatibility spec's unit table (the names a Collector's exporter gives them too).
_UNITS: Final = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
    "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes", "KBy": "kilobytes",
    "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes", "m": "meters", "V": "volts",
    "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius",
    "Hz": "hertz", "1": "", "%": "percent",
}  # fmt: skip
_PER_UNITS: Final = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week",
                     "mo": "month", "y": "year"}  # fmt: skip


def _leading_digit(text: str) -> str:
    return "_" + text[1:] if text and text[0].isdigit() else text


def metric_name(name: str) -> str:
    """An OpenTelemetry metric name as a Prometheus family name (before unit and _total)."""
    return _NAME_RE.sub("_", _leading_digit(name))


def label_name(key: str) -> str:
    return _LABEL_RE.sub("_", _leading_digit(key))


def unit_suffix(unit: str) -> str:
    unit = _ANNOTATION_RE.sub("", unit)
    if unit in _UNITS:
        return _UNITS[unit]
    top, slash, bottom = unit.partition("/")
    bottom = _NAME_RE.sub("_", bottom)
    if slash and bottom:
        top = _NAME_RE.sub("_", top)
        top = _UNITS.get(top, top)
        per = _PER_UNITS.get(bottom, bottom)
        return f"{top}_per_{per}" if top else f"per_{per}"
    return _NAME_RE.sub("_", unit).strip("_")


def _label_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _exemplar(point: Any, value_filter: Any = None) -> Exemplar | None:
    """The newest exemplar with a trace (optionally within a bucket) as OpenMetrics wants."""
    best = None
    for candidate in getattr(point, "exemplars", ()) or ():
        if not candidate.trace_id or not candidate.span_id:
            continue
        if value_filter is not None and not value_filter(candidate.value):
            continue
        if best is None or candidate.time_unix_nano >= best.time_unix_nano:
            best = candidate
    if best is None:
        return None
    labels = {"trace_id": f"{best.trace_id:032x}", "span_id": f"{best.span_id:016x}"}
    return Exemplar(labels, float(best.value), best.time_unix_nano / 1e9)


class _Translator:
    """One collection: OpenTelemetry metrics in, Prometheus families out.

    ``remembered`` keeps the last exemplar of each bucket and counter across collections:
    the SDK forgets exemplars once collected, and every scrape collects, so without it a
    second scraper (an HA pair of Prometheus, a curl) would take them from the first.
    """

    def __init__(self, remembered: dict[tuple[Any, ...], Exemplar]) -> None:
        self.families: dict[tuple[str, str], PrometheusMetric] = {}
        self._remembered = remembered

    def _keep(self, key: tuple[Any, ...], fresh: Exemplar | None) -> Exemplar | None:
        if fresh is not None:
            self._remembered[key] = fresh
            return fresh
        return self._remembered.get(key)

    def _buckets(self, series: tuple[Any, ...], point: HistogramDataPoint) -> list[Any]:
        bounds = list(point.explicit_bounds)
        buckets: list[Any] = []
        total = 0
        for index, count in enumerate(point.bucket_counts):
            total += count
            upper = bounds[index] if index < len(bounds) else float("inf")
            lower = bounds[index - 1] if index > 0 else float("-inf")
            le = "+Inf" if upper == float("inf") else repr(float(upper))
            fresh = _exemplar(point, lambda v, lo=lower, hi=upper: lo < v <= hi)
            exemplar = self._keep((*series, le), fresh)
            buckets.append((le, total, exemplar) if exemplar is not None else (le, total))
        return buckets

    def _family(self, kind: type[Any], name: str, doc: str, unit: str,
                labels: Sequence[str]) -> Any:  # fmt: skip
        key = (kind.__name__, name + "|" + unit)
        family = self.families.get(key)
        if family is None:
            family = kind(name, doc, labels=labels, unit=unit)
            self.families[key] = family
        return family

    def add(self, metric: Metric, scope_labels: Mapping[str, str]) -> None:
        name = metric_name(metric.name)
        unit = unit_suffix(metric.unit or "")
        doc = metric.description or ""
        data = metric.data
        points: list[Any] = list(data.data_points)
        keys = sorted({label_name(k) for p in points for k in p.attributes} | set(scope_labels))

        def row(point: Any) -> list[str]:
            labels = dict(scope_labels)
            labels.update({label_name(k): _label_value(v) for k, v in point.attributes.items()})
            return [labels.get(k, "") for k in keys]

        if isinstance(data, Sum) and data.is_monotonic:
            family = self._family(CounterMetricFamily, name, doc, unit, keys)
            for point in points:
                assert isinstance(point, NumberDataPoint)
                labels = row(point)
                exemplar = self._keep((name, *labels), _exemplar(point))
                family.add_metric(labels, point.value, exemplar=exemplar)
        elif isinstance(data, Sum | Gauge):
            family = self._family(GaugeMetricFamily, name, doc, unit, keys)
            for point in points:
                assert isinstance(point, NumberDataPoint)
                family.add_metric(row(point), point.value)
        elif isinstance(data, HistogramData):
            family = self._family(HistogramMetricFamily, name, doc, unit, keys)
            for point in points:
                assert isinstance(point, HistogramDataPoint)
                labels = row(point)
                family.add_metric(labels, self._buckets((name, *labels), point), point.sum)


class _Collector:
    """The prometheus-client side: each scrape collects the OpenTelemetry metrics."""

    def __init__(self, reader: PrometheusReader) -> None:
        self._reader = reader

    def collect(self) -> Iterator[PrometheusMetric]:
        with self._reader.lock:
            yield from self._translate()

    def _translate(self) -> list[PrometheusMetric]:
        data = self._reader.read()
        if data is None:
            return []
        translator = _Translator(self._reader.exemplars)
        resource: dict[str, str] = {}
        for resource_metrics in data.resource_metrics:
            resource.update(
                {
                    label_name(k): _label_value(v)
                    for k, v in resource_metrics.resource.attributes.items()
                }
            )
            for scope_metrics in resource_metrics.scope_metrics:
                scope = scope_metrics.scope
                scope_labels = {
                    "otel_scope_name": scope.name or "",
                    "otel_scope_version": scope.version or "",
                    "otel_scope_schema_url": scope.schema_url or "",
                }
                for key, value in (scope.attributes or {}).items():
                    scope_labels[label_name("otel_scope_" + key)] = _label_value(value)
                for metric in scope_metrics.metrics:
                    translator.add(metric, scope_labels)
        families: list[PrometheusMetric] = []
        if resource and not self._reader.disable_target_info:
            info = InfoMetricFamily("target", "Target metadata", labels=sorted(resource))
            info.add_metric(sorted(resource), resource)
            families.append(info)
        families.extend(translator.families.values())
        return families


class PrometheusReader(MetricReader):
    """An OpenTelemetry metric reader that a prometheus-client registry serves."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, disable_target_info: bool = False
    ) -> None:
        cumulative = AggregationTemporality.CUMULATIVE
        super().__init__(
            preferred_temporality={
                Counter: cumulative,
                UpDownCounter: cumulative,
                Histogram: cumulative,
                ObservableCounter: cumulative,
                ObservableUpDownCounter: cumulative,
                ObservableGauge: cumulative,
            }
        )
        self.registry = registry if registry is not None else CollectorRegistry()
        self.disable_target_info = disable_target_info
        self.lock = threading.RLock()  # one collection and translation at a time
        self.exemplars: dict[tuple[Any, ...], Exemplar] = {}
        self._latest: MetricsData | None = None
        self._collector = _Collector(self)
        self.registry.register(self._collector)

    def read(self) -> MetricsData | None:
        """Collect now and return what was collected (called at each scrape)."""
        with self.lock:
            self._latest = None
            self.collect()
            return self._latest

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.registry.unregister(self._collector)


def start_metrics_server(
    port: int,
    addr: str = "0.0.0.0",  # noqa: S104 - scraped from other hosts; bind narrower if need be
    *,
    reader: PrometheusReader,
) -> Any:
    """Serve ``reader`` on ``http://addr:port/metrics`` from a daemon thread.

    Returns prometheus-client's server (call ``shutdown()`` on it to stop).
    """
    server, _thread = start_http_server(port, addr, registry=reader.registry)
    return server


class AutoPrometheusReader(PrometheusReader):
    """For ``OTEL_METRICS_EXPORTER=queue_core_prometheus`` under ``opentelemetry-instrument``."""

    def __init__(self) -> None:
        super().__init__()
        host = os.environ.get("OTEL_EXPORTER_PROMETHEUS_HOST", "localhost")
        port = int(os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"))
        self.server = start_metrics_server(port, host, reader=self)
