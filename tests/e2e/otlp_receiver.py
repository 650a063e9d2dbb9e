"""A small, real OTLP receiver for tests: OTLP/gRPC and OTLP/HTTP (protobuf), in memory.

    with OtlpReceiver() as receiver:
        ...  # point exporters at receiver.grpc_endpoint or receiver.http_endpoint
        receiver.wait_for(lambda: receiver.spans_named("send q"), timeout=10, what="...")

Everything received is flattened as it arrives (resource and scope attached to each
item; ids as lowercase hex, ``None`` when absent) and kept, thread-safe, until the end.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

__all__ = [
    "DataPoint",
    "Exemplar",
    "OtlpReceiver",
    "ReceivedLog",
    "ReceivedSpan",
    "SpanLink",
    "latest",
]

T = TypeVar("T")
Attributes = dict[str, Any]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(items: Any) -> Attributes:
    pairs: list[KeyValue] = list(items)
    return {kv.key: _value(kv.value) for kv in pairs}


def _hex(raw: bytes) -> str | None:
    return raw.hex() if raw and any(raw) else None


@dataclass(frozen=True, slots=True)
class SpanLink:
    trace_id: str | None
    span_id: str | None
    attributes: Attributes


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    trace_id: str | None
    span_id: str | None
    parent_span_id: str | None
    name: str
    kind: str  # "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"
    start_ns: int
    end_ns: int
    attributes: Attributes
    links: tuple[SpanLink, ...]
    status_code: str  # "UNSET", "OK", "ERROR"
    status_message: str
    events: tuple[str, ...]
    scope: str
    resource: Attributes


@dataclass(frozen=True, slots=True)
class Exemplar:
    value: float
    trace_id: str | None
    span_id: str | None


@dataclass(frozen=True, slots=True)
class DataPoint:
    metric: str
    type: str  # "sum", "gauge", "histogram", ...
    attributes: Attributes
    time_ns: int
    value: float | None  # sums and gauges
    count: int | None  # histograms
    sum: float | None  # histograms
    exemplars: tuple[Exemplar, ...]
    scope: str
    resource: Attributes


@dataclass(frozen=True, slots=True)
class ReceivedLog:
    body: Any
    severity_text: str
    attributes: Attributes
    trace_id: str | None
    span_id: str | None
    time_ns: int
    scope: str
    resource: Attributes


class OtlpReceiver:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._changed = threading.Condition(threading.RLock())
        self._spans: list[ReceivedSpan] = []
        self._points: list[DataPoint] = []
        self._logs: list[ReceivedLog] = []
        self.requests: dict[str, int] = {}  # "grpc traces" -> number of export requests
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def start(self) -> Self:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(self), server)
        self.grpc_port = server.add_insecure_port(f"{self.host}:0")
        server.start()
        self._grpc = server

        http = ThreadingHTTPServer((self.host, 0), _HttpHandler)
        http.daemon_threads = True
        http.receiver = self  # type: ignore[attr-defined]
        self.http_port = int(http.server_address[1])
        self._http = http
        self._http_thread = threading.Thread(
            target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._http_thread.start()
        return self

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ reading

    def spans(self) -> list[ReceivedSpan]:
        with self._changed:
            return list(self._spans)

    def spans_named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans() if s.name == name]

    def metric_points(self, name: str) -> list[DataPoint]:
        with self._changed:
            return [p for p in self._points if p.metric == name]

    def metric_names(self) -> set[str]:
        with self._changed:
            return {p.metric for p in self._points}

    def logs(self) -> list[ReceivedLog]:
        with self._changed:
            return list(self._logs)

    def wait_for(
        self,
        predicate: Callable[[], T],
        *,
        timeout: float,
        what: str,
        check: Callable[[], None] | None = None,
    ) -> T:
        """Wait until ``predicate()`` is truthy (re-checked whenever data arrives) and return
        it. ``check`` runs between tries (e.g. to fail at once when a process died)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate()
                if result:
                    return result
                if check is not None:
                    check()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self._changed.wait(min(remaining, 0.25))

    # ------------------------------------------------------------ storing

    def _count(self, transport: str, signal: str) -> None:
        key = f"{transport} {signal}"
        self.requests[key] = self.requests.get(key, 0) + 1

    def add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest, via: str) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(_span(span, scope_spans.scope.name, resource))
        with self._changed:
            self._count(via, "traces")
            self._spans.extend(received)
            self._changed.notify_all()

    def add_metrics(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, via: str
    ) -> None:
        received = []
        for resource_metrics in request.resource_metrics:
            resource = _attributes(resource_metrics.resource.attributes)
            for scope_metrics in resource_metrics.scope_metrics:
                scope = scope_metrics.scope.name
                for metric in scope_metrics.metrics:
                    received.extend(_points(metric, scope, resource))
        with self._changed:
            self._count(via, "metrics")
            self._points.extend(received)
            self._changed.notify_all()

    def add_logs(self, request: logs_service_pb2.ExportLogsServiceRequest, via: str) -> None:
        received = []
        for resource_logs in request.resource_logs:
            resource = _attributes(resource_logs.resource.attributes)
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    received.append(
                        ReceivedLog(
                            body=_value(record.body),
                            severity_text=record.severity_text,
                            attributes=_attributes(record.attributes),
                            trace_id=_hex(record.trace_id),
                            span_id=_hex(record.span_id),
                            time_ns=record.time_unix_nano or record.observed_time_unix_nano,
                            scope=scope_logs.scope.name,
                            resource=resource,
                        )
                    )
        with self._changed:
            self._count(via, "logs")
            self._logs.extend(received)
            self._changed.notify_all()


def _span(span: Span, scope: str, resource: Attributes) -> ReceivedSpan:
    return ReceivedSpan(
        trace_id=_hex(span.trace_id),
        span_id=_hex(span.span_id),
        parent_span_id=_hex(span.parent_span_id),
        name=span.name,
        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes=_attributes(span.attributes),
        links=tuple(
            SpanLink(_hex(link.trace_id), _hex(link.span_id), _attributes(link.attributes))
            for link in span.links
        ),
        status_code=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
        status_message=span.status.message,
        events=tuple(event.name for event in span.events),
        scope=scope,
        resource=resource,
    )


def _points(metric: Any, scope: str, resource: Attributes) -> list[DataPoint]:
    kind = metric.WhichOneof("data")
    points: list[DataPoint] = []
    for point in getattr(metric, kind).data_points:
        histogram = kind in ("histogram", "exponential_histogram")
        value: float | None = None
        if not histogram and point.WhichOneof("value") is not None:
            value = getattr(point, point.WhichOneof("value"))
        points.append(
            DataPoint(
                metric=metric.name,
                type=kind,
                attributes=_attributes(point.attributes),
                time_ns=point.time_unix_nano,
                value=value,
                count=point.count if histogram else None,
                sum=point.sum if histogram else None,
                exemplars=tuple(
                    Exemplar(
                        getattr(e, e.WhichOneof("value") or "as_double"),
                        _hex(e.trace_id),
                        _hex(e.span_id),
                    )
                    for e in getattr(point, "exemplars", ())
                ),
                scope=scope,
                resource=resource,
            )
        )
    return points


def latest(points: Iterable[DataPoint]) -> list[DataPoint]:
    """The last export of each (resource, attribute set): with cumulative temporality (the
    SDK's default) it holds the whole count."""
    last: dict[str, DataPoint] = {}
    for point in points:
        key = json.dumps([point.resource, point.attributes], sort_keys=True, default=str)
        if key not in last or point.time_ns >= last[key].time_ns:
            last[key] = point
    return list(last.values())


# ---------------------------------------------------------------- gRPC


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.add_traces(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.add_metrics(request, "grpc")
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self.receiver.add_logs(request, "grpc")
        return logs_service_pb2.ExportLogsServiceResponse()


# ---------------------------------------------------------------- HTTP

_ROUTES: dict[str, tuple[type[Message], type[Message], str]] = {
    "/v1/traces": (
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
        "add_traces",
    ),
    "/v1/metrics": (
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
        "add_metrics",
    ),
    "/v1/logs": (
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
        "add_logs",
    ),
}


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        route = _ROUTES.get(self.path.split("?", 1)[0])
        if route is None:
            self._reply(404, b"", "text/plain")
            return
        if self.headers.get_content_type() != "application/x-protobuf":
            self._reply(415, b"only application/x-protobuf", "text/plain")
            return
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request_type, response_type, method = route
            request = request_type.FromString(body)
        except (OSError, zlib.error, DecodeError) as exc:
            self._reply(400, str(exc).encode(), "text/plain")
            return
        getattr(self.server.receiver, method)(request, "http")  # type: ignore[attr-defined]
        self._reply(200, response_type().SerializeToString(), "application/x-protobuf")

    def _reply(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass
