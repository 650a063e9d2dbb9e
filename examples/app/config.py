"""Names and settings shared by the example application's processes.

Queue and job names follow docs/observability-stack.md: dashboards and alert rules filter
on them. Settings come from the environment, so the same image serves every compose
service and the demo:

| variable | meaning | default |
|---|---|---|
| ``REDIS_URL`` | the Redis of the queues and of the users | ``redis://127.0.0.1:6379/0`` |
| ``KEY_PREFIX`` | prefix of the app's keys: ``<prefix>:{emails}:*``, ``<prefix>:app:*`` | ``qc`` |
| ``METRICS_PORT`` | port of this process's ``/metrics`` (0: none) | 9464 |
| ``METRICS_HOST`` | address ``/metrics`` listens on | ``0.0.0.0`` |
| ``WEBHOOK_RECEIVER_URL`` | base URL webhooks are delivered to | the API's own ``/hooks/receive`` |
| ``HOOKS_FAILURE_RATE`` | fraction of receiver requests that fail at random (503) | 0.2 |
| ``SMTP_FAILURE_RATE`` | fraction of simulated SMTP sends that fail (retried) | 0.02 |
| ``REMINDER_DELAY_S`` | delay of the signup reminder, in seconds | 86400 (24 h) |
| ``WEBHOOK_ATTEMPTS`` | tries per webhook delivery | 4 |
| ``WEBHOOK_BACKOFF_S`` | first retry delay of a webhook (exponential, with jitter) | 0.5 |
| ``WEEKLY_REPORT_CRON`` | when the weekly report runs (5-field cron) | ``0 7 * * MON`` |
| ``WEEKLY_REPORT_TZ`` | the IANA zone of that cron expression | ``UTC`` |
| ``CLEANUP_EVERY_S`` | period of the cleanup of old finished jobs, in seconds | 3600 |
| ``CLEANUP_GRACE_S`` | age at which the cleanup removes a finished job, in s | 604800 (7 d) |

Telemetry has its own variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``,
``TELEMETRY_DIR``): see ``examples.app.telemetry``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EMAILS: Final = "emails"
IMAGES: Final = "images"
REPORTS: Final = "reports"
WEBHOOKS: Final = "webhooks"
REMINDERS: Final = "reminders"
QUEUES: Final = (EMAILS, IMAGES, REPORTS, WEBHOOKS, REMINDERS)

WELCOME_EMAIL: Final = "welcome_email"
RESIZE_IMAGE: Final = "resize_image"
BUILD_REPORT: Final = "build_report"
DELIVER_WEBHOOK: Final = "deliver_webhook"
SIGNUP_REMINDER: Final = "signup_reminder"
WEEKLY_REPORT: Final = "weekly_report"  # scheduled, on REPORTS
CLEANUP: Final = "cleanup"  # scheduled, on REPORTS
JOB_NAMES: Final = {
    EMAILS: WELCOME_EMAIL,
    IMAGES: RESIZE_IMAGE,
    REPORTS: BUILD_REPORT,
    WEBHOOKS: DELIVER_WEBHOOK,
    REMINDERS: SIGNUP_REMINDER,
}

# The job schedulers of REPORTS (examples.app.schedules), by id.
WEEKLY_REPORT_SCHEDULER: Final = "weekly-report"
CLEANUP_SCHEDULER: Final = "cleanup"

DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_KEY_PREFIX: Final = "qc"  # queue_core's default prefix
DEFAULT_METRICS_PORT: Final = 9464


class SettingsError(ValueError):
    """An environment variable holds something unusable; the message names it."""


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, not {raw}")
    return value


def _prefix(env: Mapping[str, str], name: str, default: str) -> str:
    """What queue_core accepts as a prefix: 1 to 64 characters, no braces."""
    value = env.get(name, "").strip() or default
    if len(value) > 64 or "{" in value or "}" in value:
        raise SettingsError(f"{name} must be 1 to 64 characters without braces, not {value!r}")
    return value


def _cron(env: Mapping[str, str], name: str, default: str) -> str:
    """The field count only: the scheduler's upsert checks the rest at start-up."""
    value = " ".join(env.get(name, "").split()) or default
    if len(value.split()) != 5:
        raise SettingsError(f"{name} must be a 5-field cron expression, not {value!r}")
    return value


def _zone(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip() or default
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{name} must be an IANA time zone, not {value!r}") from None
    return value


@dataclass(frozen=True)  # no slots: from_env reads the defaults off the class
class Settings:
    redis_url: str = DEFAULT_REDIS_URL
    key_prefix: str = DEFAULT_KEY_PREFIX
    metrics_port: int = DEFAULT_METRICS_PORT
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from other containers
    webhook_receiver_url: str | None = None
    hooks_failure_rate: float = 0.2
    smtp_failure_rate: float = 0.02
    reminder_delay: float = 24 * 3600.0
    webhook_attempts: int = 4
    webhook_backoff: float = 0.5
    weekly_report_cron: str = "0 7 * * MON"
    weekly_report_tz: str = "UTC"
    cleanup_every: float = 3600.0
    cleanup_grace: float = 7 * 86400.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        receiver = env.get("WEBHOOK_RECEIVER_URL", "").strip().rstrip("/")
        return cls(
            redis_url=env.get("REDIS_URL", "").strip() or DEFAULT_REDIS_URL,
            key_prefix=_prefix(env, "KEY_PREFIX", cls.key_prefix),
            metrics_port=int(_number(env, "METRICS_PORT", DEFAULT_METRICS_PORT, 0, 65535)),
            metrics_host=env.get("METRICS_HOST", "").strip() or cls.metrics_host,
            webhook_receiver_url=receiver or None,
            hooks_failure_rate=_number(env, "HOOKS_FAILURE_RATE", cls.hooks_failure_rate, 0, 1),
            smtp_failure_rate=_number(env, "SMTP_FAILURE_RATE", cls.smtp_failure_rate, 0, 1),
            reminder_delay=_number(env, "REMINDER_DELAY_S", cls.reminder_delay, 0, 365 * 86400),
            webhook_attempts=int(_number(env, "WEBHOOK_ATTEMPTS", cls.webhook_attempts, 1, 100)),
            webhook_backoff=_number(env, "WEBHOOK_BACKOFF_S", cls.webhook_backoff, 0, 3600),
            weekly_report_cron=_cron(env, "WEEKLY_REPORT_CRON", cls.weekly_report_cron),
            weekly_report_tz=_zone(env, "WEEKLY_REPORT_TZ", cls.weekly_report_tz),
            cleanup_every=_number(env, "CLEANUP_EVERY_S", cls.cleanup_every, 0.1, 30 * 86400),
            cleanup_grace=_number(env, "CLEANUP_GRACE_S", cls.cleanup_grace, 0, 365 * 86400),
        )
