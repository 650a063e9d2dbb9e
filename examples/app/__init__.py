"""The example application: a FastAPI API that hands slow work to queue_core workers.

- ``examples.app.api``: ``POST /users`` (a welcome email now, a reminder in 24 h),
  ``POST /images``, ``POST /reports``, ``POST /webhooks``, a deliberately flaky webhook
  receiver (``POST /hooks/receive/{target}``), ``GET /queues``, ``GET /healthz``.
- ``examples.app.jobs``: the processors of the five queues.
- ``examples.app.worker``: ``queue-core worker examples.app.worker:workers`` (a factory
  of the Workers of ``$WORKER_QUEUES``), or ``python -m examples.app.worker --queues
  emails,webhooks``.
- ``examples.app.loadgen``: steady traffic against the API.
- ``examples.app.telemetry``: OpenTelemetry set-up shared by the API and the workers.

``python -m examples.demo`` (``make demo``) runs all of it on one machine.
"""
