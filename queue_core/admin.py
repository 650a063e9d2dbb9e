"""What an operator's actions send and how their replies are read, without any I/O.

Each action is an ``Operation``: the script, its arguments and the parser of its reply.
``Queue`` runs it asynchronously and ``SyncQueue`` blocking (``_operate``), inside the
``around_operation`` hooks; the rules live in the scripts, one atomic script per action.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import orjson

from queue_core.errors import InvalidOptionError, JobNotFoundError, JobStateError
from queue_core.hooks import OperationEvent
from queue_core.options import RateLimit, check_int, to_ms
from queue_core.scripts import LuaScript, load_script

__all__ = [
    "MANUAL_LIMIT",
    "JobReply",
    "Operation",
    "QueueConfig",
    "job_reply",
    "parse_config",
    "pause",
    "set_limits",
]

T = TypeVar("T")

_PAUSE = load_script("pause")
_SET_LIMITS = load_script("set_limits")
_GET_SETTINGS = load_script("get_settings")

MANUAL_LIMIT: Final = 2**50  # the limiter value of a manual hold (includes/limits.lua)
DEFAULT_EVENTS_LENGTH: Final = 10_000  # includes/settings.lua
MAX_EVENTS_LENGTH: Final = 100_000_000


@dataclass(slots=True)
class Operation(Generic[T]):
    """One action: ``parse(reply, event)`` reads the script's reply and may fill the hook
    event (``headers``, ``count``); ``event`` is None when no hook listens. A read
    (``action=False``: settings, the worker list) changes nothing and is not an operator's
    action: it runs without the ``around_operation`` hooks."""

    name: str
    script: LuaScript
    args: list[Any]
    parse: Callable[[Any, OperationEvent | None], T]
    job_id: str | None = None
    action: bool = True
    # Builds the arguments again with headers that hooks wrote on entry (event.headers):
    # an action that stores a job template (upsert_scheduler) carries them in its runs.
    rebuild: Callable[[Mapping[str, str]], list[Any]] | None = None


def _changed(reply: Any, event: OperationEvent | None) -> bool:
    changed = int(reply) == 1
    if event is not None:
        event.count = int(changed)
    return changed


def pause(paused: bool) -> Operation[bool]:
    return Operation("pause" if paused else "resume", _PAUSE, [int(paused)], _changed)


# ----- queue-wide limits and settings


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """The settings of a queue that live in Redis, as every worker sees them.

    ``rate_limit_hold`` is how long (seconds) fetching is held right now by the rate limit
    or a manual hold (``worker.rate_limit()``, ``RateLimitError``); 0 when nothing holds.
    """

    paused: bool
    global_concurrency: int | None
    rate_limit: RateLimit | None
    events_max_length: int
    rate_limit_hold: float


def set_limits(operation: str, values: Mapping[str, int | None]) -> Operation[None]:
    args: list[Any] = []
    for name, value in values.items():
        args += [name, "" if value is None else value]
    return Operation(operation, _SET_LIMITS, args, lambda reply, event: None)


def global_concurrency(limit: int | None) -> Operation[None]:
    if limit is not None:
        check_int(limit, "global concurrency", 1, 1_000_000)
    return set_limits("set_global_concurrency", {"gcc": limit})


def rate_limit(limit: RateLimit | None) -> Operation[None]:
    if limit is not None and not isinstance(limit, RateLimit):
        raise InvalidOptionError(f"expected a RateLimit or None, not {type(limit).__name__}")
    if limit is None:
        return set_limits("set_rate_limit", {"rlm": None, "rld": None})
    return set_limits("set_rate_limit", {"rlm": limit.max, "rld": to_ms(limit.duration)})


def events_length(length: int | None) -> Operation[None]:
    if length is not None:
        check_int(length, "events max length", 0, MAX_EVENTS_LENGTH)
    return set_limits("set_events_max_length", {"evl": length})


def _int(raw: bytes | None) -> int | None:
    return None if raw is None else int(raw)


def parse_config(reply: Any, event: OperationEvent | None = None) -> QueueConfig:
    paused, gcc, rlm, rld, evl, count, ttl = reply
    limit = RateLimit(int(rlm), int(rld) / 1000) if rlm is not None and rld is not None else None
    used = _int(count) or 0
    held = used >= MANUAL_LIMIT or (limit is not None and used >= limit.max)
    return QueueConfig(
        paused=paused == b"1",
        global_concurrency=_int(gcc),
        rate_limit=limit,
        events_max_length=DEFAULT_EVENTS_LENGTH if evl is None else int(evl),
        rate_limit_hold=max(0, int(ttl)) / 1000 if held else 0.0,
    )


def get_config() -> Operation[QueueConfig]:
    return Operation("get_config", _GET_SETTINGS, [], parse_config, action=False)


# ----- actions on one job


@dataclass(frozen=True, slots=True)
class JobReply:
    """The reply of a one-job action: the state the job was found in, its headers."""

    state: str
    headers: Mapping[str, str] = field(default_factory=dict)


def job_reply(operation: str, job_id: str, queue: str) -> Callable[[Any, Any], JobReply]:
    """Parser of the {status, state, header line} reply that one-job scripts share
    (includes/job_action.lua): raises ``JobNotFoundError`` or ``JobStateError``."""

    def parse(reply: Any, event: OperationEvent | None) -> JobReply:
        status, state = int(reply[0]), reply[1].decode()
        if status == 0:
            raise JobNotFoundError(f"job {job_id!r} does not exist in queue {queue!r}")
        headers: dict[str, str] = {}
        if reply[2]:
            try:
                header = orjson.loads(reply[2])
                headers = dict(header.get("headers") or {})
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                headers = {}  # a corrupt envelope: the action still happened
        if event is not None:
            event.headers = headers
        if status == 2:
            raise JobStateError(job_id, state, operation)
        if event is not None:
            event.count = 1
        return JobReply(state, headers)

    return parse
