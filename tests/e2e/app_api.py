"""The end-to-end test's web API: ``POST /users`` enqueues a ``welcome`` job.

Run it as a real server: ``uvicorn tests.e2e.app_api:app``. Settings come from the
environment: ``E2E_QUEUE`` (the queue), ``REDIS_URL``, and ``E2E_OTLP_HTTP_ENDPOINT`` (an
OTLP/HTTP receiver, e.g. ``http://127.0.0.1:4318``). Instrumented in code with the SDK:
FastAPI's instrumentation makes the SERVER span, queue_otel the ``send`` span; traces,
metrics and logs go out over OTLP/HTTP. Shutting down (SIGTERM to uvicorn) flushes them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic import BaseModel

from queue_core import Backoff, Queue, configure_logging
from queue_otel import QueueInstrumentor

SERVICE_NAME = "e2e-api"
QUEUE = os.environ["E2E_QUEUE"]
REDIS_URL = os.environ["REDIS_URL"]
OTLP = os.environ["E2E_OTLP_HTTP_ENDPOINT"].rstrip("/")

resource = Resource.create({"service.name": SERVICE_NAME})
tracer_provider = TracerProvider(resource=resource)
tracer_provider.add_span_processor(
    BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{OTLP}/v1/traces"), schedule_delay_millis=100)
)
meter_provider = MeterProvider(
    resource=resource,
    metric_readers=[
        PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{OTLP}/v1/metrics"), export_interval_millis=500
        )
    ],
)
logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(
    BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{OTLP}/v1/logs"), schedule_delay_millis=100)
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

log = structlog.get_logger("e2e.api")


class NewUser(BaseModel):
    email: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    queue = Queue(QUEUE, redis=REDIS_URL)
    app.state.queue = queue
    try:
        yield
    finally:
        await queue.close()
        for provider in (tracer_provider, meter_provider, logger_provider):
            provider.force_flush()
            provider.shutdown()


app = FastAPI(lifespan=lifespan)


@app.post("/users", status_code=202)
async def create_user(user: NewUser) -> dict[str, Any]:
    log.info("user_signup_accepted")
    queue: Queue = app.state.queue
    job = await queue.add("welcome", {"email": user.email}, attempts=2, backoff=Backoff.fixed(0.2))
    return {"job_id": job.id, "enqueued_at": job.enqueued_at.isoformat()}


FastAPIInstrumentor.instrument_app(
    app, tracer_provider=tracer_provider, meter_provider=meter_provider
)
