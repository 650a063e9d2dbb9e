"""Option validation: every bad value is a typed error, raised before Redis is touched."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from queue_core import Backoff, InvalidOptionError, JobOptions, KeepJobs, RateLimit
from queue_core.options import DEFAULT_KEEP_COMPLETED


def test_defaults() -> None:
    options = JobOptions()
    assert options.attempts == 1
    assert options.backoff is None
    assert options.delay == 0.0
    assert options.priority == 0
    assert options.lifo is False
    assert options.job_id is None
    assert options.remove_on_complete == DEFAULT_KEEP_COMPLETED == KeepJobs(count=1000)
    assert options.remove_on_fail == KeepJobs()  # the dead-letter set keeps everything
    assert options.timeout is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.5, 1.5), (2, 2.0), (timedelta(milliseconds=250), 0.25), (0, 0.0)],
)
def test_durations_accept_seconds_and_timedelta(value: float | timedelta, expected: float) -> None:
    assert JobOptions(delay=value).delay == expected


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"attempts": 0}, "attempts must be between 1"),
        ({"attempts": True}, "attempts must be an int"),
        ({"attempts": 2.0}, "attempts must be an int"),
        ({"delay": -1}, "delay must be zero or more"),
        ({"delay": math.nan}, "finite"),
        ({"delay": math.inf}, "finite"),
        ({"delay": "5"}, "delay must be seconds"),
        ({"delay": 11 * 365 * 86400}, "at most ten years"),
        ({"timeout": 0}, "timeout must be more than zero"),
        ({"priority": 1_000_001}, "priority must be between"),
        ({"priority": -1_000_001}, "priority must be between"),
        ({"lifo": 1}, "lifo must be a bool"),
        ({"job_id": ""}, "job_id must be a string"),
        ({"job_id": "123"}, "all digits"),
        ({"job_id": "x" * 513}, "job_id must be a string of 1 to 512"),
        ({"job_id": 5}, "job_id must be a string"),
        ({"remove_on_complete": "yes"}, "remove_on_complete must be"),
        ({"remove_on_fail": -1}, "remove_on_fail must be between"),
        ({"backoff": "fast"}, "backoff must be"),
        ({"backoff": -2}, "backoff delay must be zero or more"),
    ],
)
def test_invalid_options_raise_typed_errors(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidOptionError, match=fragment):
        JobOptions(**options)  # type: ignore[arg-type]


def test_invalid_option_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="attempts"):
        JobOptions(attempts=-3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, KeepJobs(count=0)),
        (False, KeepJobs()),
        (50, KeepJobs(count=50)),
        (timedelta(hours=1), KeepJobs(age=3600.0)),
        (KeepJobs(count=3, age=60), KeepJobs(count=3, age=60.0)),
    ],
)
def test_retention_shorthands(value: object, expected: KeepJobs) -> None:
    assert JobOptions(remove_on_complete=value).remove_on_complete == expected  # type: ignore[arg-type]


def test_backoff_builders_and_validation() -> None:
    assert JobOptions(backoff=3).backoff == Backoff.fixed(3)
    exp = Backoff.exponential(timedelta(seconds=1), jitter=0.5, max_delay=60)
    assert (exp.kind, exp.delay, exp.jitter, exp.max_delay) == ("exponential", 1.0, 0.5, 60.0)
    assert Backoff.custom("webhook").strategy == "webhook"
    with pytest.raises(InvalidOptionError, match="jitter"):
        Backoff.fixed(1, jitter=1.5)
    with pytest.raises(InvalidOptionError, match="custom backoff needs"):
        Backoff("custom")
    with pytest.raises(InvalidOptionError, match="unknown backoff kind"):
        Backoff("linear", 1.0)  # type: ignore[arg-type]


def test_wire_round_trip_keeps_every_option() -> None:
    options = JobOptions(
        attempts=5,
        backoff=Backoff.exponential(0.5, jitter=0.2, max_delay=30),
        delay=2.5,
        priority=-7,
        lifo=True,
        job_id="order-7",
        remove_on_complete=KeepJobs(count=10, age=60),
        remove_on_fail=True,
        timeout=9,
    )
    assert JobOptions.from_wire(options.to_wire()) == options
    custom = JobOptions(backoff=Backoff.custom("s"))
    assert JobOptions.from_wire(custom.to_wire()) == custom


def test_replace_validates_and_rejects_unknown_names() -> None:
    base = JobOptions(attempts=3)
    assert base.replace(priority=5) == JobOptions(attempts=3, priority=5)
    with pytest.raises(InvalidOptionError, match="unknown job option"):
        base.replace(retries=3)
    with pytest.raises(InvalidOptionError, match="attempts"):
        base.replace(attempts=0)


def test_rate_limit_validation() -> None:
    assert RateLimit(max=50, duration=timedelta(minutes=1)).duration == 60.0
    with pytest.raises(InvalidOptionError):
        RateLimit(max=0, duration=1)
    with pytest.raises(InvalidOptionError):
        RateLimit(max=5, duration=0)
