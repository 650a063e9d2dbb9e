"""The example application's HTTP API: it accepts work, answers at once, and enqueues.

    uvicorn examples.app.api:app --host 0.0.0.0 --port 8000
    python -m examples.app.api            # the same, with $HOST (0.0.0.0) and $PORT (8000)

Endpoints:

- ``POST /users``: creates a user (a Redis hash), enqueues ``welcome_email`` on ``emails``
  and ``signup_reminder`` on ``reminders``, delayed by ``REMINDER_DELAY_S`` (24 h). The
  same email again returns the first user and enqueues nothing new (stable job ids).
- ``GET /users/{id}``: the user, with the times its emails were sent.
- ``POST /images``: enqueues ``resize_image`` on ``images``.
- ``POST /reports``: enqueues ``build_report`` on ``reports``, low priority unless urgent.
- ``POST /webhooks``: enqueues ``deliver_webhook`` on ``webhooks``, to the receiver
  ``$WEBHOOK_RECEIVER_URL/{target}`` (default: this API's ``/hooks/receive/{target}``).
- ``POST /hooks/receive/{target}``: the deliberately flaky receiver (below).
- ``GET /hooks/stats``: what the receiver answered, per target.
- ``GET /jobs/{queue}/{job_id}``: a job's state, attempts, result or error.
- ``GET /queues``: counts per state and the oldest waiting job's age, per queue.
- ``GET /healthz``: 200 when Redis answers, else 503.

The receiver fails a fraction (``HOOKS_FAILURE_RATE``) of requests at random with 503,
and by target id: ``flaky-*`` fails the first two deliveries of each job (then succeeds,
so retries visibly help), ``down-*`` always answers 503 (the job ends in the failed set
once its attempts are used up), ``gone-*`` always answers 410 (the job fails at once,
without retries). Any other target only sees the random failures.

The app is created on first access to ``app`` (``default_app()``): importing the module
starts nothing. It is instrumented with FastAPI's instrumentation (the SERVER span of each
request) and queue_otel (the ``send`` spans), and, being the single API process, it
reports queue depth and oldest-job age for all five queues.
"""

from __future__ import annotations

import os
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import redis.asyncio
import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel, Field
from redis.typing import EncodableT, FieldT

from examples.app.config import (
    BUILD_REPORT,
    DELIVER_WEBHOOK,
    EMAILS,
    IMAGES,
    QUEUES,
    REMINDERS,
    REPORTS,
    RESIZE_IMAGE,
    SIGNUP_REMINDER,
    WEBHOOKS,
    WELCOME_EMAIL,
    Settings,
)
from examples.app.telemetry import Telemetry, setup_telemetry
from examples.app.users import email_index, user_key
from queue_core import Backoff, Job, Queue, QueueError

__all__ = ["create_app", "default_app"]

log = structlog.get_logger("examples.app.api")

REPORT_PRIORITY: Final = -10  # below everything at the default 0
URGENT_REPORT_PRIORITY: Final = 10
FLAKY_FAILURES: Final = 2  # deliveries of each job a flaky-* target fails
RECEIVER_MEMORY_S: Final = 3600  # how long the receiver remembers a delivery id


class NewUser(BaseModel):
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    name: str = Field(default="", max_length=200)


class ImageRequest(BaseModel):
    width: int = Field(default=1600, ge=16, le=4000)
    height: int = Field(default=1200, ge=16, le=4000)
    sizes: list[tuple[int, int]] = Field(
        default=[(800, 600), (320, 240), (64, 64)], min_length=1, max_length=8
    )
    format: str = Field(default="JPEG", pattern="^(JPEG|PNG|WEBP)$")


class ReportRequest(BaseModel):
    kind: str = Field(default="signups", pattern=r"^[a-z_]{1,40}$")
    days: int = Field(default=30, ge=1, le=366)
    urgent: bool = False


class WebhookRequest(BaseModel):
    target: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    event: str = Field(default="user.created", max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _accepted(job: Job) -> dict[str, Any]:
    return {"queue": job.queue_name, "job_id": job.id, "state": job.state.value}


def _job_view(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue_name,
        "state": job.state.value,
        "attempts_made": job.attempts_made,
        "max_attempts": job.options.attempts,
        "progress": job.progress,
        "enqueued_at": job.enqueued_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "delayed_until": job.delayed_until.isoformat() if job.delayed_until else None,
        "return_value": job.return_value,
        "failed_reason": job.failed_reason,
        "error_type": job.error_type,
    }


@dataclass
class AppState:
    """What the endpoints share: set up by the lifespan, one per app."""

    settings: Settings
    queues: dict[str, Queue]
    redis: redis.asyncio.Redis  # decode_responses=True: the users' hashes
    receiver_stats: dict[str, Counter[int]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.app
    return state


State = Annotated[AppState, Depends(_state)]
router = APIRouter()


@router.post("/users", status_code=201)
async def create_user(new: NewUser, response: Response, app: State) -> dict[str, Any]:
    email = new.email.lower()
    user_id = uuid.uuid4().hex[:12]
    prefix = app.settings.key_prefix
    if not await app.redis.hsetnx(email_index(prefix), email, user_id):
        existing = await app.redis.hget(email_index(prefix), email)
        if existing is None:  # removed between the two calls
            raise HTTPException(409, "signup raced with a deletion; try again")
        user_id = str(existing)
        response.status_code = 200  # a repeated signup: the first user, nothing new
    else:
        created: dict[FieldT, EncodableT] = {
            "id": user_id,
            "email": email,
            "name": new.name,
            "created_at": _now(),
        }
        await app.redis.hset(user_key(prefix, user_id), mapping=created)
    # Stable job ids: a retried request (or a repeated signup) enqueues nothing twice.
    welcome = await app.queues[EMAILS].add(
        WELCOME_EMAIL,
        {"user_id": user_id},
        job_id=f"welcome-{user_id}",
        attempts=5,
        backoff=Backoff.exponential(1.0, jitter=0.3, max_delay=60),
        timeout=30,
    )
    reminder = await app.queues[REMINDERS].add(
        SIGNUP_REMINDER,
        {"user_id": user_id},
        job_id=f"reminder-{user_id}",
        delay=app.settings.reminder_delay,
        attempts=3,
        backoff=Backoff.exponential(60, jitter=0.3),
    )
    log.info("user_signed_up", user_id=user_id)
    due = reminder.delayed_until.isoformat() if reminder.delayed_until else None
    return {
        "user_id": user_id,
        "welcome_email": _accepted(welcome),
        "signup_reminder": {**_accepted(reminder), "due_at": due},
    }


@router.get("/users/{user_id}")
async def get_user(user_id: str, app: State) -> dict[str, str]:
    user = await app.redis.hgetall(user_key(app.settings.key_prefix, user_id))
    if not user:
        raise HTTPException(404, f"no user {user_id}")
    return {str(k): str(v) for k, v in user.items()}


@router.post("/images", status_code=202)
async def resize_image(request: ImageRequest, app: State) -> dict[str, Any]:
    job = await app.queues[IMAGES].add(
        RESIZE_IMAGE,
        request.model_dump(),
        attempts=3,
        backoff=Backoff.exponential(2.0, jitter=0.5),
        timeout=60,
    )
    return _accepted(job)


@router.post("/reports", status_code=202)
async def build_report(request: ReportRequest, app: State) -> dict[str, Any]:
    job = await app.queues[REPORTS].add(
        BUILD_REPORT,
        {"kind": request.kind, "days": request.days},
        priority=URGENT_REPORT_PRIORITY if request.urgent else REPORT_PRIORITY,
        attempts=2,
        timeout=300,
    )
    return _accepted(job)


@router.post("/webhooks", status_code=202)
async def deliver_webhook(request: WebhookRequest, http: Request, app: State) -> dict[str, Any]:
    base = app.settings.webhook_receiver_url or f"{str(http.base_url).rstrip('/')}/hooks/receive"
    job = await app.queues[WEBHOOKS].add(
        DELIVER_WEBHOOK,
        {
            "url": f"{base}/{request.target}",
            "target": request.target,
            "event": request.event,
            "payload": request.payload,
        },
        attempts=app.settings.webhook_attempts,
        backoff=Backoff.exponential(app.settings.webhook_backoff, jitter=0.5, max_delay=300),
        timeout=30,
    )
    return _accepted(job)


async def _receiver_status(app: AppState, target: str, delivery: str) -> int:
    if target.startswith("gone-"):
        return 410
    if target.startswith("down-"):
        return 503
    if target.startswith("flaky-"):
        key = f"{app.settings.key_prefix}:app:hooks:attempts:{delivery}"
        seen = int(await app.redis.incr(key))
        await app.redis.expire(key, RECEIVER_MEMORY_S)
        if seen <= FLAKY_FAILURES:
            return 503
    if app.rng.random() < app.settings.hooks_failure_rate:
        return 503
    return 200


@router.post("/hooks/receive/{target}")
async def receive_hook(
    target: str,
    response: Response,
    app: State,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """The flaky receiver (see the module docstring)."""
    delivery = idempotency_key or uuid.uuid4().hex
    status = await _receiver_status(app, target, delivery)
    result = "rejected"
    if status == 200:
        # Idempotent receipt: a delivery seen before is acknowledged, not applied twice.
        key = f"{app.settings.key_prefix}:app:hooks:received:{delivery}"
        first = await app.redis.set(key, "1", nx=True, ex=RECEIVER_MEMORY_S)
        result = "accepted" if first else "duplicate"
    app.receiver_stats.setdefault(target, Counter())[status] += 1
    response.status_code = status
    return {"target": target, "delivery_id": delivery, "result": result}


@router.get("/hooks/stats")
async def hook_stats(app: State) -> dict[str, dict[str, int]]:
    return {
        target: {str(status): n for status, n in sorted(counts.items())}
        for target, counts in sorted(app.receiver_stats.items())
    }


@router.get("/jobs/{queue_name}/{job_id}")
async def get_job(queue_name: str, job_id: str, app: State) -> dict[str, Any]:
    if queue_name not in app.queues:
        raise HTTPException(404, f"no queue {queue_name}")
    job = await app.queues[queue_name].get_job(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id} in {queue_name}")
    return _job_view(job)


@router.get("/queues")
async def queues_summary(app: State) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, queue in app.queues.items():
        stats = await queue.get_stats()
        summary[name] = {"counts": stats.counts, "oldest_waiting_age_s": stats.oldest_waiting_age}
    return summary


@router.get("/healthz")
async def healthz(response: Response, app: State) -> dict[str, str]:
    try:
        await app.queues[EMAILS].get_counts()
    except QueueError as exc:
        response.status_code = 503
        return {"status": "unavailable", "error": str(exc)}
    return {"status": "ok"}


def create_app(settings: Settings | None = None, telemetry: Telemetry | None = None) -> FastAPI:
    """The API. ``telemetry``: instrument with these providers and shut them down with
    the app (``default_app`` passes a fresh ``setup_telemetry``); None leaves the app
    uninstrumented."""
    chosen = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        queues = {
            name: Queue(name, redis=chosen.redis_url, prefix=chosen.key_prefix) for name in QUEUES
        }
        users = redis.asyncio.Redis.from_url(chosen.redis_url, decode_responses=True)
        app.state.app = AppState(chosen, queues, users)
        log.info("api_started", queues=list(QUEUES))
        try:
            yield
        finally:
            for queue in queues.values():
                await queue.close()
            await users.aclose()
            log.info("api_stopped")
            if telemetry is not None:
                telemetry.shutdown()

    app = FastAPI(title="queue_core example", lifespan=lifespan)
    app.include_router(router)
    if telemetry is not None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor  # noqa: PLC0415

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            excluded_urls="healthz",
            exclude_spans=["receive", "send"],
        )
    return app


_app: FastAPI | None = None


def default_app() -> FastAPI:
    """The app ``uvicorn examples.app.api:app`` serves: settings from the environment,
    instrumented, observing all five queues. Created once, on first use."""
    global _app  # noqa: PLW0603 - one app per process, made lazily
    if _app is None:
        settings = Settings.from_env()
        telemetry = setup_telemetry("api", settings, observe_queues=QUEUES)
        _app = create_app(settings, telemetry)
    return _app


def __getattr__(name: str) -> Any:
    """``examples.app.api.app`` is built on first access, so importing starts nothing."""
    if name == "app":
        return default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    import uvicorn  # noqa: PLC0415

    uvicorn.run(
        default_app(),
        host=os.environ.get("HOST", "0.0.0.0"),  # noqa: S104 - a container's API
        port=int(os.environ.get("PORT", "8000")),
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
