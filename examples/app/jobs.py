"""The processors of the example application: what the workers of each queue do.

- ``emails`` / ``welcome_email``: a simulated SMTP round trip; a rare temporary SMTP error
  (``SMTP_FAILURE_RATE``) is retried with exponential backoff.
- ``images`` / ``resize_image``: draws an image with Pillow and resizes it to each size
  asked for (CPU work, so a plain ``def`` that the worker runs in a thread).
- ``reports`` / ``build_report``: aggregates generated data in chunks, with progress.
- ``reports`` / ``weekly_report``: the same report over the week before its tick, made by
  the ``weekly-report`` job scheduler (``examples.app.schedules``).
- ``reports`` / ``cleanup``: made by the ``cleanup`` job scheduler: removes the jobs of
  every queue of the app that finished (completed or failed) longer ago than
  ``CLEANUP_GRACE_S``, and returns how many it removed.
- ``webhooks`` / ``deliver_webhook``: POSTs to the flaky receiver with httpx. Network
  errors, 5xx, 408 and 429 are retried with exponential backoff and jitter; any other 4xx
  raises ``WebhookRejectedError`` (an ``UnrecoverableError``): failed at once.
- ``reminders`` / ``signup_reminder``: the email a day after signup.

Processors are idempotent, since a job may run twice after a crash: the emails record a
"sent" time on the user and check it first; a webhook carries the job id as its
``Idempotency-Key``. Every line logged here with structlog carries the job's ``job_id``,
``queue``, ``attempt`` and (instrumented) ``trace_id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import statistics
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import redis.asyncio
import structlog
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from PIL import Image, ImageDraw

from examples.app.config import (
    BUILD_REPORT,
    CLEANUP,
    DELIVER_WEBHOOK,
    EMAILS,
    IMAGES,
    QUEUES,
    REMINDERS,
    REPORTS,
    RESIZE_IMAGE,
    SIGNUP_REMINDER,
    WEBHOOKS,
    WEEKLY_REPORT,
    WELCOME_EMAIL,
    Settings,
)
from examples.app.users import email_index, user_key
from queue_core import Job, Processor, Queue, UnrecoverableError

__all__ = [
    "Jobs",
    "SmtpTemporaryError",
    "WebhookDeliveryError",
    "WebhookRejectedError",
]

log = structlog.get_logger("examples.app.jobs")
tracer = trace.get_tracer("examples.app.jobs")

WEBHOOK_TIMEOUT_S: Final = 5.0
REPORT_CHUNK_DAYS: Final = 5
REPORT_EVENTS_PER_DAY: Final = 4000
RETRYABLE_STATUS: Final = frozenset({408, 425, 429})
WEEK_DAYS: Final = 7
CLEANED_STATES: Final = ("completed", "failed")
CLEANUP_LIMIT: Final = 100_000  # per queue and state and run: the next run takes the rest


class SmtpTemporaryError(Exception):
    """The (simulated) mail server said "try again later": a retry fixes it."""


class WebhookDeliveryError(Exception):
    """The receiver was unreachable or answered 5xx/408/429: retried with backoff."""


class WebhookRejectedError(UnrecoverableError):
    """The receiver answered another 4xx: retrying cannot help, the job fails at once."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _source_image(width: int, height: int, seed: int) -> Image.Image:
    """A photo stand-in: gradients, noise and a few shapes (real pixels to resize)."""
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = Image.effect_noise((width, height), 48)
    image = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(image)
    rng = random.Random(seed)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(8, max(9, min(width, height) // 4))
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return image


def _aggregate_days(seed: int, first: int, last: int) -> list[dict[str, float]]:
    """CPU work of a report: simulated events of each day, summarized."""
    rows = []
    for day in range(first, last):
        rng = random.Random(seed * 1000 + day)
        values = sorted(rng.expovariate(1 / 50) for _ in range(REPORT_EVENTS_PER_DAY))
        quantiles = statistics.quantiles(values, n=20)
        rows.append(
            {
                "day": day,
                "events": len(values),
                "total": round(sum(values), 2),
                "p50": round(quantiles[9], 2),
                "p95": round(quantiles[18], 2),
            }
        )
    return rows


@dataclass
class Jobs:
    """The processors, with what they share in one worker process."""

    settings: Settings
    redis: redis.asyncio.Redis  # decode_responses=True: the users' hashes
    http: httpx.AsyncClient
    rng: random.Random = field(default_factory=random.Random)

    def processors(self) -> dict[str, Mapping[str, Processor]]:
        """{queue: {job name: processor}}, what each queue's Worker runs."""
        return {
            EMAILS: {WELCOME_EMAIL: self.welcome_email},
            IMAGES: {RESIZE_IMAGE: self.resize_image},
            REPORTS: {
                BUILD_REPORT: self.build_report,
                WEEKLY_REPORT: self.weekly_report,
                CLEANUP: self.cleanup,
            },
            WEBHOOKS: {DELIVER_WEBHOOK: self.deliver_webhook},
            REMINDERS: {SIGNUP_REMINDER: self.signup_reminder},
        }

    # ------------------------------------------------------------------ emails

    async def _send_once(self, job: Job, field_name: str, what: str) -> dict[str, Any]:
        """Send an email to the job's user unless ``field_name`` says it was sent."""
        user_id = str(job.data["user_id"])
        key = user_key(self.settings.key_prefix, user_id)
        user = await self.redis.hgetall(key)
        if not user:
            if job.name == SIGNUP_REMINDER:  # the user left before the reminder was due
                log.info("email_skipped", what=what, user_id=user_id, reason="user deleted")
                return {"sent": False, "reason": "user deleted"}
            raise UnrecoverableError(f"user {user_id} does not exist")
        if user.get(field_name):
            log.info("email_skipped", what=what, user_id=user_id, reason="already sent")
            return {"sent": False, "reason": "already sent"}
        await asyncio.sleep(self.rng.uniform(0.05, 0.3))  # the SMTP round trip
        if self.rng.random() < self.settings.smtp_failure_rate:
            raise SmtpTemporaryError("421 4.7.0 try again later (simulated)")
        await self.redis.hsetnx(key, field_name, _now())
        log.info("email_sent", what=what, user_id=user_id)  # never the address itself
        return {"sent": True}

    async def welcome_email(self, job: Job) -> dict[str, Any]:
        return await self._send_once(job, "welcome_sent_at", "welcome")

    async def signup_reminder(self, job: Job) -> dict[str, Any]:
        return await self._send_once(job, "reminder_sent_at", "signup_reminder")

    # ------------------------------------------------------------------ images

    def resize_image(self, job: Job) -> dict[str, Any]:
        """A plain ``def``: the worker runs it in a thread, so Pillow's CPU work does not
        block the event loop (and the thread keeps the job's log and trace context)."""
        width, height = int(job.data["width"]), int(job.data["height"])
        image_format = str(job.data.get("format", "JPEG"))
        source = _source_image(width, height, zlib.crc32(job.id.encode()))
        variants = []
        for target_width, target_height in job.data["sizes"]:
            variant = source.copy()
            variant.thumbnail((int(target_width), int(target_height)), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            variant.save(buffer, format=image_format, quality=85)
            size = {"width": variant.width, "height": variant.height, "bytes": buffer.tell()}
            variants.append(size)
        log.info("image_resized", source=f"{width}x{height}", variants=len(variants))
        return {"source": [width, height], "variants": variants}

    # ----------------------------------------------------------------- reports

    async def build_report(self, job: Job) -> dict[str, Any]:
        kind = str(job.data.get("kind", "signups"))
        days = int(job.data.get("days", 30))
        return await self._report(job, kind, days, zlib.crc32(f"{kind}:{job.id}".encode()))

    async def weekly_report(self, job: Job) -> dict[str, Any]:
        """The scheduled report: the days before the tick it is for, seeded by that tick,
        so that a run retried (or recovered after a crash) builds the same report."""
        data = job.data if isinstance(job.data, dict) else {}
        kind = str(data.get("kind", "weekly"))
        days = int(data.get("days", WEEK_DAYS))
        tick = job.scheduled_for or job.enqueued_at  # enqueued by hand: no tick
        seed = zlib.crc32(f"{kind}:{tick.isoformat()}".encode())
        report = await self._report(job, kind, days, seed)
        return {**report, "period_end": tick.isoformat()}

    async def _report(self, job: Job, kind: str, days: int, seed: int) -> dict[str, Any]:
        digest = hashlib.sha256()
        rows: list[dict[str, float]] = []
        for first in range(0, days, REPORT_CHUNK_DAYS):
            last = min(days, first + REPORT_CHUNK_DAYS)
            chunk = await asyncio.to_thread(_aggregate_days, seed, first, last)
            rows.extend(chunk)
            digest.update(repr(chunk).encode())
            await job.update_progress(round(100 * last / days))
        users = await self.redis.hlen(email_index(self.settings.key_prefix))
        log.info("report_built", kind=kind, days=days, rows=len(rows))
        return {
            "kind": kind,
            "days": days,
            "users": users,
            "events": sum(int(row["events"]) for row in rows),
            "digest": digest.hexdigest()[:16],
        }

    # ----------------------------------------------------------------- cleanup

    async def cleanup(self, job: Job) -> dict[str, Any]:
        """Remove the finished jobs older than ``grace_s`` (the job's data, else
        ``CLEANUP_GRACE_S``) from every queue of the app. Retention trims the completed
        sets as jobs finish; this also ages out the failed sets, kept whole otherwise, and
        the queues that went quiet. Idempotent: a second run finds nothing more."""
        data = job.data if isinstance(job.data, dict) else {}
        grace = float(data.get("grace_s", self.settings.cleanup_grace))
        by_queue: dict[str, dict[str, int]] = {}
        for name in QUEUES:
            async with Queue(
                name, redis=self.settings.redis_url, prefix=self.settings.key_prefix
            ) as queue:
                for state in CLEANED_STATES:
                    removed = len(await queue.clean(state, grace, limit=CLEANUP_LIMIT))
                    if removed:
                        by_queue.setdefault(name, {})[state] = removed
        total = sum(sum(states.values()) for states in by_queue.values())
        log.info("jobs_cleaned", removed=total, grace_s=grace, by_queue=by_queue)
        return {"removed": total, "grace_s": grace, "by_queue": by_queue}

    # ---------------------------------------------------------------- webhooks

    async def deliver_webhook(self, job: Job) -> dict[str, Any]:
        url = str(job.data["url"])
        target = str(job.data.get("target", ""))
        body = {
            "event": job.data.get("event", "ping"),
            "payload": job.data.get("payload", {}),
            "delivery_id": job.id,
        }
        headers = {"Idempotency-Key": job.id, "X-Delivery-Attempt": str(job.attempt)}
        # No httpx instrumentation here: a CLIENT span by hand, whose context goes to the
        # receiver, so its SERVER span joins the job's trace.
        with tracer.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes={"http.request.method": "POST", "url.full": url},
        ) as span:
            propagate.inject(headers)
            try:
                response = await self.http.post(
                    url, json=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S
                )
            except httpx.HTTPError as exc:
                log.warning("webhook_unreachable", target=target, error=type(exc).__name__)
                raise WebhookDeliveryError(f"{type(exc).__name__}: {exc}") from exc
            status = response.status_code
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        if status < 300:
            log.info("webhook_delivered", target=target, status=status)
            return {"status": status, "attempt": job.attempt}
        if status >= 500 or status in RETRYABLE_STATUS:
            log.warning("webhook_attempt_failed", target=target, status=status)
            raise WebhookDeliveryError(f"the receiver answered {status}")
        log.error("webhook_rejected", target=target, status=status)
        raise WebhookRejectedError(f"the receiver answered {status}: permanent, not retried")
