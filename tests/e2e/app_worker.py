"""The end-to-end test's worker process: ``python -m tests.e2e.app_worker``.

It runs the ``welcome`` jobs of ``$E2E_QUEUE`` (Redis at ``$REDIS_URL``) until SIGTERM,
instrumented in code with the SDK; traces, metrics and logs go over OTLP/gRPC to
``$E2E_OTLP_GRPC_ENDPOINT``. The processor logs one line with structlog, fails its first
attempt (so the job is retried) and succeeds on the second. After the worker stopped, the
providers are flushed and shut down, so nothing recorded is lost.
"""

from __future__ import annotations

import asyncio
import os

import structlog
from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from queue_core import Job, Worker, configure_logging
from queue_otel import QueueInstrumentor

SERVICE_NAME = "e2e-worker"
JOB_LOG_LINE = "welcome_email_sending"


class MailServerDownError(Exception):
    """The first attempt's failure (its message holds none of the job's data)."""


log = structlog.get_logger("e2e.worker")


async def send_welcome(job: Job) -> dict[str, bool]:
    log.info(JOB_LOG_LINE)
    if job.attempts_started == 1:
        raise MailServerDownError("the mail server did not answer")
    return {"delivered": True}


def main() -> None:
    queue = os.environ["E2E_QUEUE"]
    redis_url = os.environ["REDIS_URL"]
    otlp = os.environ["E2E_OTLP_GRPC_ENDPOINT"]

    resource = Resource.create({"service.name": SERVICE_NAME})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=otlp, insecure=True), schedule_delay_millis=100
        )
    )
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[
            PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=otlp, insecure=True), export_interval_millis=500
            )
        ],
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=otlp, insecure=True), schedule_delay_millis=100
        )
    )
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    set_logger_provider(logger_provider)

    configure_logging("json")
    QueueInstrumentor().instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
    )
    worker = Worker(queue, send_welcome, redis=redis_url, drain_delay=1.0, shutdown_timeout=5.0)
    try:
        asyncio.run(worker.run())  # until SIGTERM: the worker handles the signal itself
    finally:
        for provider in (tracer_provider, meter_provider, logger_provider):
            provider.force_flush()
            provider.shutdown()


if __name__ == "__main__":
    main()
