# The example application's image: one image for the API and the workers (and the load
# generator); compose.yaml picks the command of each service:
#
#   api:      uvicorn examples.app.api:app --host 0.0.0.0 --port 8000
#   worker:   queue-core worker examples.app.worker:workers --health-port 8081
#             (the queue-core console script comes with the library)
#   loadgen:  python -m examples.app.loadgen --api http://api:8000 --rate 5
#   ui:       opentelemetry-instrument queue-core ui --host 0.0.0.0 --port 8080
#             (the job browser; QUEUE_CORE_UI_TOKEN required off loopback)
#
# Environment (see examples/app/config.py, examples/app/telemetry.py and
# examples/app/worker.py):
#   WORKER_QUEUES                the worker's queues (default: all five; a subset per
#                                service works too, e.g. images)
#   WORKER_CONCURRENCY           overrides each queue's own concurrency
#   WORKER_SHUTDOWN_TIMEOUT_S    seconds running jobs get after SIGTERM (30)
#   REDIS_URL                    redis://redis:6379/0
#   OTEL_EXPORTER_OTLP_ENDPOINT  http://otel-collector:4318 (OTLP over HTTP/protobuf)
#   OTEL_SERVICE_NAME            api, worker (default: api for the API, worker for workers)
#   METRICS_PORT                 9464: each process serves /metrics there (0 turns it off)
#   WEBHOOK_RECEIVER_URL         http://api:8000/hooks/receive (where webhooks are delivered;
#                                default: the URL the webhook request reached the API at)
#   HOOKS_FAILURE_RATE, SMTP_FAILURE_RATE, REMINDER_DELAY_S, WEBHOOK_ATTEMPTS,
#   WEBHOOK_BACKOFF_S            the story's knobs (defaults 0.2, 0.02, 86400, 4, 0.5)
#
# Build: docker build -t queue-core-example .   (the repository root is the context)
# The base image is pinned to a patch release: a rebuild gets the same Python; moving to a
# newer one is a change to this line.
FROM python:3.11.17-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QUEUE_CORE_LOG_FORMAT=json \
    METRICS_PORT=9464 \
    TELEMETRY_DIR=/tmp/telemetry

WORKDIR /app

# The library with the OpenTelemetry extras the app uses (otlp: queue_otel and the OTLP
# exporters; structlog-bridge: log lines over OTLP) and the job browser (ui), then what the
# app needs besides; the distro and the Starlette instrumentation serve the ui service,
# which runs under opentelemetry-instrument.
COPY pyproject.toml README.md LICENSE ./
COPY queue_core/ queue_core/
COPY queue_otel/ queue_otel/
RUN pip install ".[otlp,structlog-bridge,ui]" \
        "fastapi>=0.110" \
        "uvicorn>=0.29" \
        "httpx>=0.27" \
        "pillow>=10" \
        "opentelemetry-instrumentation-fastapi>=0.66b0" \
        "opentelemetry-distro>=0.66b0" \
        "opentelemetry-instrumentation-starlette>=0.66b0"

COPY examples/ examples/
RUN python -m compileall -q examples

RUN useradd --system --uid 10001 --no-create-home app
USER app

# 8000: the API; 9464: /metrics of each process; 8081: a worker's /livez and /readyz;
# 8080: the job browser.
EXPOSE 8000 8080 8081 9464
CMD ["uvicorn", "examples.app.api:app", "--host", "0.0.0.0", "--port", "8000"]
