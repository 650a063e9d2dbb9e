# The example application's image: one image for the API and the workers (and the load
# generator); compose.yaml picks the command of each service:
#
#   api:      uvicorn examples.app.api:app --host 0.0.0.0 --port 8000
#   worker:   python -m examples.app.worker --queues emails,images,reports,webhooks,reminders
#             (or a subset per service, e.g. --queues images --concurrency 2)
#   loadgen:  python -m examples.app.loadgen --api http://api:8000 --rate 5
#
# Environment (see examples/app/config.py and examples/app/telemetry.py):
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
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QUEUE_CORE_LOG_FORMAT=json \
    METRICS_PORT=9464 \
    TELEMETRY_DIR=/tmp/telemetry

WORKDIR /app

# The library with its otel extra, then what the example application needs besides.
COPY pyproject.toml README.md ./
COPY queue_core/ queue_core/
COPY queue_otel/ queue_otel/
RUN pip install ".[otel]" \
        "fastapi>=0.110" \
        "uvicorn>=0.29" \
        "httpx>=0.27" \
        "pillow>=10" \
        "opentelemetry-instrumentation-fastapi>=0.66b0"

COPY examples/ examples/
RUN python -m compileall -q examples

RUN useradd --system --uid 10001 --no-create-home app
USER app

EXPOSE 8000 9464
CMD ["uvicorn", "examples.app.api:app", "--host", "0.0.0.0", "--port", "8000"]
