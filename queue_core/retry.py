"""How long a failed attempt waits before its retry, per the job's ``backoff`` option."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from queue_core.errors import InvalidOptionError
from queue_core.options import to_seconds

if TYPE_CHECKING:
    from queue_core.job import Job

__all__ = ["BackoffStrategy", "retry_delay"]

BackoffStrategy = Callable[[int, BaseException, "Job"], float | timedelta | None]
"""A custom backoff: ``(attempts_made, error, job) -> seconds | timedelta | None``.

``attempts_made`` counts the attempt that just failed (1 after the first failure).
Return ``None`` to stop retrying: the job then fails for good."""


def retry_delay(
    job: Job,
    error: BaseException,
    strategies: Mapping[str, BackoffStrategy],
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds until the retry of ``job`` after ``error``, or ``None`` when it must fail now."""
    attempts_made = job.attempts_made + 1
    if attempts_made >= job.options.attempts:
        return None
    backoff = job.options.backoff
    if backoff is None:
        return 0.0
    if backoff.kind == "custom":
        assert backoff.strategy is not None
        strategy = strategies.get(backoff.strategy)
        if strategy is None:
            raise InvalidOptionError(
                f"job {job.id} asks for backoff strategy {backoff.strategy!r}, "
                f"which this worker does not have (it has {sorted(strategies)})"
            )
        chosen = strategy(attempts_made, error, job)
        return None if chosen is None else to_seconds(chosen, "custom backoff delay")
    delay = backoff.delay
    if backoff.kind == "exponential":
        delay *= 2.0 ** (attempts_made - 1)
    if backoff.max_delay is not None:
        delay = min(delay, backoff.max_delay)
    if backoff.jitter:
        # Uniform over [delay * (1 - jitter), delay]: spreads a burst of retries.
        delay *= 1.0 - backoff.jitter * rand()
    return delay
