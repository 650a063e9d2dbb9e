"""OpenTelemetry set-up shared by the example API and workers.

``setup_telemetry("worker", settings)`` builds SDK providers for one process:

- a resource named by ``$OTEL_SERVICE_NAME`` (else the default given), plus whatever
  ``$OTEL_RESOURCE_ATTRIBUTES`` adds (``service.instance.id=...``);
- with ``$OTEL_EXPORTER_OTLP_ENDPOINT`` set (e.g. ``http://otel-collector:4318``): OTLP
  over HTTP/protobuf for traces, metrics and logs (the exporters read the standard
  ``OTEL_EXPORTER_OTLP_*`` variables themselves; metrics every 10 s unless
  ``OTEL_METRIC_EXPORT_INTERVAL`` says otherwise);
- otherwise traces and logs are appended as JSON lines (the SDK's own JSON, one span or
  log record per line) to ``$TELEMETRY_DIR/<service>-<pid>.traces.jsonl`` and
  ``<service>-<pid>.logs.jsonl`` (default directory: ``.demo/telemetry``);
- metrics are always served on ``http://$METRICS_HOST:$METRICS_PORT/metrics`` by
  queue_otel's ``PrometheusReader`` (``METRICS_PORT=0`` turns it off), besides OTLP;
- ``configure_logging()`` for structlog, and ``QueueInstrumentor`` with these providers,
  so log lines inside jobs carry ``trace_id``/``span_id`` and are exported too.

``Telemetry.shutdown()`` flushes everything; call it when the process stops.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import structlog
from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    LogRecordExporter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from examples.app.config import Settings
from queue_core import configure_logging
from queue_otel import PrometheusReader, QueueInstrumentor, start_metrics_server

__all__ = ["Telemetry", "setup_telemetry"]

DEFAULT_TELEMETRY_DIR: Final = ".demo/telemetry"
_BATCH_DELAY_MS: Final = 500  # the demo reads the files while it runs

log = structlog.get_logger("examples.app.telemetry")


def _span_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + "\n"


def _log_line(record: ReadableLogRecord) -> str:
    return record.to_json(indent=None) + "\n"


def _file_safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


@dataclass
class Telemetry:
    """The providers of one process, and where its signals go."""

    service_name: str
    resource: Resource
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    otlp_endpoint: str | None
    traces_path: Path | None
    logs_path: Path | None
    metrics_url: str | None
    _instrumentor: QueueInstrumentor
    _files: list[IO[str]] = field(default_factory=list)
    _server: Any = None
    _closed: bool = False

    def describe(self) -> dict[str, str]:
        """Where each signal goes, for a start-up log line."""
        where = {"service": self.service_name}
        if self.otlp_endpoint:
            where["otlp"] = self.otlp_endpoint
        if self.traces_path is not None:
            where["traces"] = str(self.traces_path)
        if self.logs_path is not None:
            where["logs"] = str(self.logs_path)
        if self.metrics_url:
            where["metrics"] = self.metrics_url
        return where

    def shutdown(self) -> None:
        """Flush and stop every provider, then close the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._instrumentor.uninstrument()
        if self._server is not None:
            self._server.shutdown()
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            provider.force_flush()
            provider.shutdown()
        for handle in self._files:
            handle.close()


def _resource(default_service: str, env: Mapping[str, str]) -> Resource:
    name = env.get("OTEL_SERVICE_NAME", "").strip() or default_service
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES, and adds a service.instance.id.
    return Resource.create({SERVICE_NAME: name})


@dataclass
class _Sinks:
    """Where spans, log records and (besides /metrics) metrics go."""

    spans: SpanExporter
    logs: LogRecordExporter
    readers: list[MetricReader] = field(default_factory=list)
    traces_path: Path | None = None
    logs_path: Path | None = None
    handles: list[IO[str]] = field(default_factory=list)

    @classmethod
    def otlp(cls, env: Mapping[str, str]) -> _Sinks:
        """OTLP/HTTP; the exporters read OTEL_EXPORTER_OTLP_* themselves. Metrics every
        10 s unless OTEL_METRIC_EXPORT_INTERVAL says otherwise (the SDK's 60 s is slow
        for dashboards)."""
        interval = float(env.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip() or 10_000)
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(), export_interval_millis=interval
        )
        return cls(OTLPSpanExporter(), OTLPLogExporter(), [reader])

    @classmethod
    def files(cls, env: Mapping[str, str], service: str) -> _Sinks:
        """JSON lines in $TELEMETRY_DIR/<service>-<pid>.{traces,logs}.jsonl."""
        directory = Path(env.get("TELEMETRY_DIR", "").strip() or DEFAULT_TELEMETRY_DIR)
        directory.mkdir(parents=True, exist_ok=True)
        stem = directory / _file_safe(f"{service}-{os.getpid()}")
        traces_path, logs_path = Path(f"{stem}.traces.jsonl"), Path(f"{stem}.logs.jsonl")
        traces = traces_path.open("a", encoding="utf-8", buffering=1)
        logs = logs_path.open("a", encoding="utf-8", buffering=1)
        return cls(
            ConsoleSpanExporter(out=traces, formatter=_span_line),
            ConsoleLogRecordExporter(out=logs, formatter=_log_line),
            traces_path=traces_path,
            logs_path=logs_path,
            handles=[traces, logs],
        )


def setup_telemetry(
    default_service: str,
    settings: Settings,
    *,
    observe_queues: Sequence[str] = (),
    set_global: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Telemetry:
    """Providers, exporters, ``/metrics``, structlog and the queue instrumentation.

    ``observe_queues``: report queue depth and oldest-job age for these queues from this
    process (one process per fleet: the API). ``set_global``: also install the providers
    as OpenTelemetry's global ones (what a real process wants).
    """
    env = os.environ if environ is None else environ
    resource = _resource(default_service, env)
    service = str(resource.attributes[SERVICE_NAME])
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None

    sinks = _Sinks.otlp(env) if endpoint is not None else _Sinks.files(env, service)
    readers = [*sinks.readers]
    prometheus = PrometheusReader()
    readers.append(prometheus)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(sinks.spans, schedule_delay_millis=_BATCH_DELAY_MS)
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(sinks.logs, schedule_delay_millis=_BATCH_DELAY_MS)
    )
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        set_logger_provider(logger_provider)

    configure_logging()
    instrumentor = QueueInstrumentor()
    options: dict[str, Any] = {}
    if observe_queues:
        options.update(
            observe_queues=list(observe_queues),
            observe_redis_url=settings.redis_url,
            observe_prefix=settings.key_prefix,
        )
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        **options,
    )

    server: Any = None
    metrics_url: str | None = None
    if settings.metrics_port:
        server = start_metrics_server(
            settings.metrics_port, settings.metrics_host, reader=prometheus
        )
        metrics_url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"

    telemetry = Telemetry(
        service_name=service,
        resource=resource,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        otlp_endpoint=endpoint,
        traces_path=sinks.traces_path,
        logs_path=sinks.logs_path,
        metrics_url=metrics_url,
        _instrumentor=instrumentor,
        _files=sinks.handles,
        _server=server,
    )
    log.info("telemetry_configured", **telemetry.describe())
    return telemetry
