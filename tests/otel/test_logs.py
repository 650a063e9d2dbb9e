"""Logs carry trace and span ids; OTLP export sends each line once."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
import structlog
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.instrumentation.structlog import StructlogInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from queue_core import Job, Queue, Worker, configure_logging
from queue_otel import add_trace_context
from tests.conftest import wait_counts
from tests.log_capture import restored_logging
from tests.otel.conftest import Telemetry


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """queue_core's JSON logging, captured."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with restored_logging():
        configure_logging("json")
        yield stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]


def test_processor_adds_ids_only_inside_a_span(telemetry: Telemetry) -> None:
    tracer = telemetry.tracer_provider.get_tracer("t")
    assert add_trace_context(None, "info", {"event": "outside"}) == {"event": "outside"}
    with tracer.start_as_current_span("s") as span:
        event = add_trace_context(None, "info", {"event": "inside"})
    assert event["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert event["span_id"] == f"{span.get_span_context().span_id:016x}"


async def test_every_line_in_a_job_or_enqueue_has_the_trace(
    json_logs: io.StringIO,
    telemetry: Telemetry,
    queue: Queue,
    make_worker: Callable[..., Worker],
) -> None:
    log = structlog.get_logger("app")

    async def process(job: Job) -> None:
        log.info("sending email")

    job = await queue.add("welcome")
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    (attempt,) = telemetry.spans(f"process {queue.name}")
    (line,) = [e for e in lines(json_logs) if e["event"] == "sending email"]
    assert line["trace_id"] == f"{attempt.context.trace_id:032x}"
    assert line["span_id"] == f"{attempt.context.span_id:016x}"
    assert (line["job_id"], line["queue"], line["attempt"]) == (job.id, queue.name, 1)


async def test_uninstrumenting_removes_the_ids(
    json_logs: io.StringIO, telemetry: Telemetry
) -> None:
    telemetry.instrumentor.uninstrument()
    tracer = telemetry.tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("s"):
        structlog.get_logger().info("plain")
    (line,) = [e for e in lines(json_logs) if e["event"] == "plain"]
    assert "trace_id" not in line


@pytest.fixture
def log_records() -> tuple[LoggerProvider, InMemoryLogRecordExporter]:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider, exporter


async def test_otlp_log_export_once_per_line(
    json_logs: io.StringIO,
    instrument: Callable[..., Telemetry],
    log_records: tuple[LoggerProvider, InMemoryLogRecordExporter],
    queue: Queue,
    make_worker: Callable[..., Worker],
) -> None:
    provider, exporter = log_records
    telemetry = instrument(logger_provider=provider, export_logs=True)
    log = structlog.get_logger("app")

    async def process(job: Job) -> None:
        log.info("resizing", width=640)

    job = await queue.add("resize")
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    (attempt,) = telemetry.spans(f"process {queue.name}")
    records = [r for r in exporter.get_finished_logs() if r.log_record.body == "resizing"]
    assert len(records) == 1
    (started,) = [r for r in exporter.get_finished_logs() if r.log_record.body == "worker_started"]
    assert dict(started.log_record.attributes or {})["queue"] == queue.name
    record = records[0].log_record
    assert record.trace_id == attempt.context.trace_id
    assert record.span_id == attempt.context.span_id
    attributes = dict(record.attributes or {})
    assert (attributes["job_id"], attributes["queue"], attributes["width"]) == (
        job.id,
        queue.name,
        640,
    )


async def test_no_second_export_when_the_structlog_instrumentation_is_on(
    instrument: Callable[..., Telemetry],
    log_records: tuple[LoggerProvider, InMemoryLogRecordExporter],
    queue: Queue,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    provider, exporter = log_records
    monkeypatch.setattr("sys.stderr", io.StringIO())
    structlog_instrumentor = StructlogInstrumentor()
    with restored_logging():
        structlog_instrumentor.instrument(logger_provider=provider)
        try:
            configure_logging("json")  # the structlog instrumentation adds its processor here
            instrument(logger_provider=provider, export_logs=True)  # must not add another
            log = structlog.get_logger("app")

            async def process(job: Job) -> None:
                log.info("exported once")

            await queue.add("x")
            async with make_worker(process):
                await wait_counts(queue, completed=1)
        finally:
            structlog_instrumentor.uninstrument()
    bodies = [r.log_record.body for r in exporter.get_finished_logs()]
    assert bodies.count("exported once") == 1
    # queue_core's own lines are logging records, which the structlog instrumentation
    # never sees: the instrumentor exports them.
    assert bodies.count("worker_started") == 1


async def test_no_second_export_when_a_logging_handler_exports(
    instrument: Callable[..., Telemetry],
    log_records: tuple[LoggerProvider, InMemoryLogRecordExporter],
    make_worker: Callable[..., Worker],
    queue: Queue,
) -> None:
    """queue_core's lines are logging records: OpenTelemetry's logging handler (what
    opentelemetry-instrumentation-logging puts on the root logger) exports them, and the
    instrumentor does not export them again."""
    provider, exporter = log_records
    instrument(logger_provider=provider, export_logs=True)
    root, queue_core = logging.getLogger(), logging.getLogger("queue_core")
    handler, level = LoggingHandler(logger_provider=provider), queue_core.level
    root.addHandler(handler)
    queue_core.setLevel(logging.INFO)
    try:

        async def process(job: Job) -> None:
            pass

        async with make_worker(process):
            pass
    finally:
        root.removeHandler(handler)
        queue_core.setLevel(level)
    (started,) = [
        r.log_record
        for r in exporter.get_finished_logs()
        if "worker_started" in (r.log_record.body, dict(r.log_record.attributes or {}).get("event"))
    ]
    assert dict(started.attributes or {})["queue"] == queue.name
    assert str(started.body).startswith("worker_started ")  # the handler's: the message
