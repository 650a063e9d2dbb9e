"""The example application's recurring jobs: job schedulers on the ``reports`` queue.

- ``weekly-report``: ``weekly_report`` on ``WEEKLY_REPORT_CRON`` (Mondays at 07:00) in
  ``WEEKLY_REPORT_TZ`` (UTC); the zone's DST moves the tick with the wall clock.
- ``cleanup``: ``cleanup`` every ``CLEANUP_EVERY_S`` (an hour), removing the finished jobs
  older than ``CLEANUP_GRACE_S`` (7 days) from every queue.

The workers of ``reports`` upsert them at each start (``examples.app.worker``), not the
API: a schedule lives with the code that runs its jobs, so a deployment that adds or
changes a processor changes its schedule too, and a fleet runs its schedules even with no
API (or with several). Upserting is atomic and safe to repeat: every worker process and
every restart does it, and an unchanged schedule keeps its next run (no extra run, none
skipped); a changed one takes over from its next run.
"""

from __future__ import annotations

from typing import Final

from examples.app.config import (
    CLEANUP,
    CLEANUP_SCHEDULER,
    WEEKLY_REPORT,
    WEEKLY_REPORT_SCHEDULER,
    Settings,
)
from queue_core import JobOptions, Queue, SchedulerInfo

__all__ = ["CLEANUP_OPTIONS", "WEEKLY_REPORT_OPTIONS", "upsert_schedules"]

# Above the on-demand reports (-10), below the urgent ones (10).
WEEKLY_REPORT_OPTIONS: Final = JobOptions(attempts=2, timeout=300)
CLEANUP_OPTIONS: Final = JobOptions(attempts=2, timeout=120)


async def upsert_schedules(queue: Queue, settings: Settings) -> list[SchedulerInfo]:
    """Create or update the schedulers of ``queue`` (the ``reports`` queue); returns them
    as stored. Raises ``InvalidScheduleError`` for a bad cron expression, writing
    nothing of that scheduler."""
    weekly = await queue.upsert_scheduler(
        WEEKLY_REPORT_SCHEDULER,
        cron=settings.weekly_report_cron,
        tz=settings.weekly_report_tz,
        name=WEEKLY_REPORT,
        data={"kind": "weekly", "days": 7},
        options=WEEKLY_REPORT_OPTIONS,
    )
    cleanup = await queue.upsert_scheduler(
        CLEANUP_SCHEDULER,
        every=settings.cleanup_every,
        name=CLEANUP,
        data={"grace_s": settings.cleanup_grace},
        options=CLEANUP_OPTIONS,
    )
    return [weekly, cleanup]
