"""Job, retention, backoff and rate-limit options, validated when they are built.

Durations are seconds (``int``/``float``) or ``timedelta`` everywhere; they are stored as
float seconds here and turned into whole milliseconds only at the Redis boundary.
Every invalid value raises ``InvalidOptionError`` before anything reaches Redis.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypedDict

from queue_core.errors import InvalidOptionError

__all__ = [
    "Backoff",
    "Dedup",
    "Duration",
    "JobOptions",
    "JobOptionsKwargs",
    "KeepJobs",
    "RateLimit",
    "Retention",
]

Duration = float | int | timedelta
"""Seconds as a number, or a ``timedelta``."""

MAX_DURATION_S = 10 * 365 * 24 * 3600.0
MIN_PRIORITY = -1_000_000
MAX_PRIORITY = 1_000_000
MAX_ATTEMPTS = 1_000_000
MAX_ID_LENGTH = 512
MAX_DEDUP_KEY_LENGTH = 256
_NAME_RE = re.compile(r"^[^\x00-\x1f{}]{1,200}$")


def to_seconds(value: object, name: str, *, allow_zero: bool = True) -> float:
    """Normalize a duration option to float seconds, rejecting anything ambiguous."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidOptionError(
            f"{name} must be seconds (int or float) or a timedelta, not {type(value).__name__}"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise InvalidOptionError(f"{name} must be a finite duration, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise InvalidOptionError(f"{name} must be {bound} seconds, got {seconds!r}")
    if seconds > MAX_DURATION_S:
        raise InvalidOptionError(f"{name} must be at most ten years, got {seconds!r} seconds")
    return seconds


def to_ms(seconds: float) -> int:
    """Whole milliseconds, rounded up so that a positive duration never becomes zero."""
    return math.ceil(seconds * 1000)


def check_int(value: object, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidOptionError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidOptionError(f"{name} must be between {low} and {high}, got {value}")
    return value


def check_name(value: object, what: str) -> str:
    """Queue names and job names: 1-200 printable characters, no braces (hash tags)."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise InvalidOptionError(
            f"{what} must be a string of 1 to 200 printable characters without braces, "
            f"got {value!r}"
        )
    return value


def check_job_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidOptionError(f"job_id must be a string of 1 to {MAX_ID_LENGTH} characters")
    if value.isdigit():
        # Generated ids are integers; a numeric custom id could collide with one of them.
        raise InvalidOptionError(
            f"job_id {value!r} is all digits, which is reserved for generated ids; "
            "add a prefix such as 'user-42'"
        )
    return value


@dataclass(frozen=True, slots=True)
class KeepJobs:
    """Which finished jobs to keep: the newest ``count``, none older than ``age``.

    ``KeepJobs()`` keeps everything; ``KeepJobs(count=0)`` removes a job as soon as it
    finishes. Trimming happens when a job finishes, never on a timer, and is amortized:
    a set is trimmed only once it is a slack past the policy, then back to it in one go.
    ``count``: between ``count`` and ``count + slack`` of the newest jobs are kept, never
    fewer than ``count``; the slack is a tenth of ``count``, at least 10 and at most 1,000
    (``count=1000`` keeps 1,000 to 1,100). ``age``: a job younger than ``age`` is never
    removed; one older than ``age + slack`` (a tenth of ``age``, at most a minute) is
    removed at the next finish of a job with this policy (up to 10,000 per finish).
    """

    count: int | None = None
    age: float | None = None  # seconds (a timedelta is accepted and normalized)

    def __post_init__(self) -> None:
        if self.count is not None:
            check_int(self.count, "KeepJobs.count", 0, 2**31)
        if self.age is not None:
            object.__setattr__(self, "age", to_seconds(self.age, "KeepJobs.age"))


Retention = bool | int | timedelta | KeepJobs
"""``True`` removes at once, ``False`` keeps all, an int keeps that many, a timedelta is a
maximum age, ``KeepJobs`` combines a count and an age."""


def to_keep_jobs(value: object, name: str) -> KeepJobs:
    if isinstance(value, KeepJobs):
        return value
    if value is True:
        return KeepJobs(count=0)
    if value is False:
        return KeepJobs()
    if isinstance(value, int):
        return KeepJobs(count=check_int(value, name, 0, 2**31))
    if isinstance(value, timedelta):
        return KeepJobs(age=to_seconds(value, name))
    raise InvalidOptionError(
        f"{name} must be True, False, a count (int), a maximum age (timedelta) or KeepJobs, "
        f"not {type(value).__name__}"
    )


BackoffKind = Literal["fixed", "exponential", "custom"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retrying a failed attempt.

    - ``Backoff.fixed(5)``: 5 s before every retry.
    - ``Backoff.exponential(1, max_delay=60)``: 1, 2, 4, 8 ... s, capped at 60 s.
    - ``jitter`` in [0, 1] spreads each delay uniformly over ``[delay * (1 - jitter), delay]``.
    - ``Backoff.custom("name")``: the worker's ``backoff_strategies["name"]`` decides.
    """

    kind: BackoffKind
    delay: float = 0.0
    jitter: float = 0.0
    max_delay: float | None = None
    strategy: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "exponential", "custom"):
            raise InvalidOptionError(f"unknown backoff kind {self.kind!r}")
        object.__setattr__(self, "delay", to_seconds(self.delay, "backoff delay"))
        jitter = self.jitter
        if (
            not isinstance(jitter, int | float)
            or isinstance(jitter, bool)
            or not 0.0 <= jitter <= 1.0
        ):
            raise InvalidOptionError(f"backoff jitter must be a number in [0, 1], got {jitter!r}")
        object.__setattr__(self, "jitter", float(jitter))
        if self.max_delay is not None:
            object.__setattr__(self, "max_delay", to_seconds(self.max_delay, "backoff max_delay"))
        if self.kind == "custom":
            if not isinstance(self.strategy, str) or not self.strategy:
                raise InvalidOptionError("a custom backoff needs the name of a worker strategy")
        elif self.strategy is not None:
            raise InvalidOptionError("only a custom backoff takes a strategy name")

    @classmethod
    def fixed(cls, delay: Duration, *, jitter: float = 0.0) -> Backoff:
        return cls("fixed", to_seconds(delay, "backoff delay"), jitter)

    @classmethod
    def exponential(
        cls, delay: Duration, *, jitter: float = 0.0, max_delay: Duration | None = None
    ) -> Backoff:
        cap = None if max_delay is None else to_seconds(max_delay, "backoff max_delay")
        return cls("exponential", to_seconds(delay, "backoff delay"), jitter, cap)

    @classmethod
    def custom(cls, strategy: str) -> Backoff:
        return cls("custom", strategy=strategy)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"type": self.kind}
        if self.kind == "custom":
            wire["strategy"] = self.strategy
            return wire
        wire["delay"] = self.delay
        if self.jitter:
            wire["jitter"] = self.jitter
        if self.max_delay is not None:
            wire["max"] = self.max_delay
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Backoff:
        return cls(
            wire["type"],
            wire.get("delay", 0.0),
            wire.get("jitter", 0.0),
            wire.get("max"),
            wire.get("strategy"),
        )


def to_backoff(value: object) -> Backoff | None:
    if value is None or isinstance(value, Backoff):
        return value
    if isinstance(value, int | float | timedelta) and not isinstance(value, bool):
        return Backoff.fixed(value)
    raise InvalidOptionError(
        f"backoff must be a Backoff, a number of seconds or a timedelta, not {type(value).__name__}"
    )


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``max`` jobs started per ``duration`` across every worker of a queue."""

    max: int
    duration: float

    def __post_init__(self) -> None:
        check_int(self.max, "RateLimit.max", 1, 2**31)
        object.__setattr__(
            self, "duration", to_seconds(self.duration, "RateLimit.duration", allow_zero=False)
        )


@dataclass(frozen=True, slots=True)
class Dedup:
    """Deduplication by a key of your own: while the key is held, an add that carries it
    creates nothing and returns the job that holds it (``job.deduplicated`` is True).

    - ``ttl=None``: the key is held until its job finishes (completed or failed) or is
      removed.
    - ``ttl`` (seconds or ``timedelta``): the key is held for ``ttl`` from the add,
      whatever happens to the job meanwhile (a throttle: one job per key per ``ttl``).
    - ``extend=True`` (needs ``ttl``): each blocked add restarts the ttl from now.
    - ``replace=True`` (needs a ``delay`` on the job, checked by ``JobOptions``): a
      debounce. While the holding job is still delayed and has never started, a blocked
      add replaces it (its data, name, options and headers become the new add's) and
      restarts its delay from now with the new add's delay; so rapid adds run once, late,
      with the last data. A holder already waiting, running or finished just deduplicates.

    The holding add decides how long the key is held (until its job finishes, or a ttl);
    adds that share a key should share the same ``Dedup`` settings.
    """

    key: str
    ttl: float | None = None  # seconds (a timedelta is accepted and normalized)
    extend: bool = False
    replace: bool = False

    def __post_init__(self) -> None:
        key = self.key
        if not isinstance(key, str) or not key or len(key) > MAX_DEDUP_KEY_LENGTH:
            got = f"{len(key)} characters" if isinstance(key, str) else type(key).__name__
            raise InvalidOptionError(
                f"Dedup.key must be a string of 1 to {MAX_DEDUP_KEY_LENGTH} characters, not {got}"
            )
        if self.ttl is not None:
            ttl = to_seconds(self.ttl, "Dedup.ttl", allow_zero=False)
            object.__setattr__(self, "ttl", ttl)
        for flag in ("extend", "replace"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidOptionError(f"Dedup.{flag} must be a bool")
        if self.extend and self.ttl is None:
            raise InvalidOptionError("Dedup.extend restarts a ttl: give the Dedup a ttl")

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"key": self.key}
        if self.ttl is not None:
            wire["ttl"] = self.ttl
        if self.extend:
            wire["extend"] = True
        if self.replace:
            wire["replace"] = True
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Dedup:
        return cls(
            wire["key"], wire.get("ttl"), wire.get("extend", False), wire.get("replace", False)
        )


DEFAULT_KEEP_COMPLETED = KeepJobs(count=1000)
"""Completed jobs kept by default: enough to inspect recent work, bounded so Redis does not
grow forever. Failed jobs (the dead-letter set) are all kept by default."""


class JobOptionsKwargs(TypedDict, total=False):
    """The keyword options of ``Queue.add`` (each one overrides the queue's defaults)."""

    attempts: int
    backoff: Backoff | Duration | None
    delay: Duration
    priority: int
    lifo: bool
    job_id: str | None
    remove_on_complete: Retention
    remove_on_fail: Retention
    timeout: Duration | None
    dedup: Dedup | None


@dataclass(frozen=True, slots=True, init=False)
class JobOptions:
    """Per-job options. Build with keywords; every value is checked here.

    ``attempts`` counts every try, the first included. ``priority`` runs higher values
    first (default 0; negative is below normal) and is FIFO within one priority; ``lifo``
    puts a job ahead of the others of its priority. ``timeout`` bounds each attempt.
    ``dedup`` deduplicates by a key of your own, beyond ``job_id`` (see ``Dedup``).
    """

    attempts: int
    backoff: Backoff | None
    delay: float
    priority: int
    lifo: bool
    job_id: str | None
    remove_on_complete: KeepJobs
    remove_on_fail: KeepJobs
    timeout: float | None
    dedup: Dedup | None

    def __init__(
        self,
        *,
        attempts: int = 1,
        backoff: Backoff | Duration | None = None,
        delay: Duration = 0.0,
        priority: int = 0,
        lifo: bool = False,
        job_id: str | None = None,
        remove_on_complete: Retention = DEFAULT_KEEP_COMPLETED,
        remove_on_fail: Retention = False,
        timeout: Duration | None = None,
        dedup: Dedup | None = None,
    ) -> None:
        setter = object.__setattr__
        setter(self, "attempts", check_int(attempts, "attempts", 1, MAX_ATTEMPTS))
        setter(self, "backoff", to_backoff(backoff))
        setter(self, "delay", to_seconds(delay, "delay"))
        setter(self, "priority", check_int(priority, "priority", MIN_PRIORITY, MAX_PRIORITY))
        if not isinstance(lifo, bool):
            raise InvalidOptionError(f"lifo must be a bool, not {type(lifo).__name__}")
        setter(self, "lifo", lifo)
        setter(self, "job_id", None if job_id is None else check_job_id(job_id))
        setter(self, "remove_on_complete", to_keep_jobs(remove_on_complete, "remove_on_complete"))
        setter(self, "remove_on_fail", to_keep_jobs(remove_on_fail, "remove_on_fail"))
        setter(
            self,
            "timeout",
            None if timeout is None else to_seconds(timeout, "timeout", allow_zero=False),
        )
        if dedup is not None and not isinstance(dedup, Dedup):
            raise InvalidOptionError(f"dedup must be a Dedup, not {type(dedup).__name__}")
        if dedup is not None and dedup.replace and not self.delay:
            # Only a delayed holder is replaced: without a delay there is nothing to debounce.
            raise InvalidOptionError("Dedup.replace debounces a delayed job: give it a delay")
        setter(self, "dedup", dedup)

    def replace(self, **changes: Any) -> JobOptions:
        """A copy with some options changed, validated like the constructor."""
        unknown = set(changes) - set(JobOptionsKwargs.__annotations__)
        if unknown:
            raise InvalidOptionError(f"unknown job option(s): {', '.join(sorted(unknown))}")
        current = {name: getattr(self, name) for name in JobOptionsKwargs.__annotations__}
        return JobOptions(**{**current, **changes})

    def to_wire(self) -> dict[str, Any]:
        """The options a worker needs, as stored in the job's envelope (defaults omitted)."""
        wire: dict[str, Any] = {"attempts": self.attempts}
        if self.backoff is not None:
            wire["backoff"] = self.backoff.to_wire()
        if self.delay:
            wire["delay"] = self.delay
        if self.priority:
            wire["priority"] = self.priority
        if self.lifo:
            wire["lifo"] = True
        if self.job_id is not None:
            wire["job_id"] = self.job_id
        if self.timeout is not None:
            wire["timeout"] = self.timeout
        if self.dedup is not None:
            wire["dedup"] = self.dedup.to_wire()
        wire["keep_completed"] = [self.remove_on_complete.count, self.remove_on_complete.age]
        wire["keep_failed"] = [self.remove_on_fail.count, self.remove_on_fail.age]
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> JobOptions:
        """Options as stored in an envelope. Jobs share a handful of option sets, so each
        distinct set is validated once and the (immutable) result reused."""
        key = _wire_key(wire)
        cached = _FROM_WIRE.get(key)
        if cached is None:
            cached = cls._from_wire(wire)
            if len(_FROM_WIRE) < 4096:  # custom job ids make every set distinct
                _FROM_WIRE[key] = cached
        return cached

    @classmethod
    def _from_wire(cls, wire: dict[str, Any]) -> JobOptions:
        backoff = wire.get("backoff")
        keep_completed = wire.get("keep_completed", [None, None])
        keep_failed = wire.get("keep_failed", [None, None])
        dedup = wire.get("dedup")
        return cls(
            attempts=wire.get("attempts", 1),
            backoff=None if backoff is None else Backoff.from_wire(backoff),
            delay=wire.get("delay", 0.0),
            priority=wire.get("priority", 0),
            lifo=wire.get("lifo", False),
            job_id=wire.get("job_id"),
            remove_on_complete=KeepJobs(*keep_completed),
            remove_on_fail=KeepJobs(*keep_failed),
            timeout=wire.get("timeout"),
            dedup=None if dedup is None else Dedup.from_wire(dedup),
        )


_FROM_WIRE: dict[tuple[Any, ...], JobOptions] = {}


def _wire_key(wire: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        (k, tuple(v) if isinstance(v, list) else tuple(v.items()) if isinstance(v, dict) else v)
        for k, v in wire.items()
    )
