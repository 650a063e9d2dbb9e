"""What every admin command shares: the connection options, exit codes, one-line errors,
confirmations, queue discovery and the formatting of ages, times and values."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, NoReturn
from urllib.parse import urlsplit, urlunsplit

import redis
import typer
from rich.console import Console

from queue_core.connection import (
    DEFAULT_REDIS_TIMEOUT,
    DEFAULT_REDIS_URL,
    create_sync_client,
    redis_errors,
)
from queue_core.discovery import discover_queues_sync
from queue_core.errors import (
    ClusterClientRequiredError,
    InvalidOptionError,
    JobNotFoundError,
    JobStateError,
    QueueBusyError,
    QueueError,
    RedisFullError,
    RedisUnavailableError,
)
from queue_core.hooks import Hook, OperationEvent
from queue_core.keys import QueueKeys
from queue_core.sync import SyncQueue

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_URL",
    "EXIT_ABORTED",
    "EXIT_NOT_FOUND",
    "EXIT_NO_QUEUE",
    "EXIT_REDIS",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "Admin",
    "ChunkProgress",
    "JsonOpt",
    "PrefixOpt",
    "RedisOpt",
    "YesOpt",
    "ago",
    "confirm",
    "err",
    "fail",
    "out",
    "parse_duration",
    "plural",
    "print_json",
    "safe_url",
    "seconds",
    "to_jsonable",
]

# Exit codes (the module docstring of ``cli.admin`` and the README list them).
EXIT_ABORTED: Final = 1  # a confirmation answered no; any other unexpected error
EXIT_USAGE: Final = 2  # bad arguments (Click's own code), or --yes missing off a terminal
EXIT_REDIS: Final = 3  # Redis unreachable, timing out, full, or a Cluster redirect
EXIT_NO_QUEUE: Final = 4  # the queue has no keys at all under the prefix
EXIT_NOT_FOUND: Final = 5  # no such job (or scheduler)
EXIT_REFUSED: Final = 6  # the job's state forbids the action, or obliterate saw active jobs

# Markup off: queue names, job names and data are printed as they are, never as styles.
# Piped or redirected, a table is as wide as it needs (up to 200), not cut at 80 columns.
_PIPED_WIDTH: Final = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200
out = Console(markup=False, highlight=False, width=_PIPED_WIDTH)
err = Console(stderr=True, markup=False, highlight=False)

RedisOpt = Annotated[
    str,
    typer.Option(
        "--redis",
        envvar="REDIS_URL",
        show_envvar=True,
        help="Redis URL.",
        rich_help_panel="Connection",
    ),
]
PrefixOpt = Annotated[
    str, typer.Option("--prefix", help="Key prefix of the queues.", rich_help_panel="Connection")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do it without asking for confirmation.")]
DEFAULT_URL: Final = DEFAULT_REDIS_URL
DEFAULT_PREFIX: Final = "qc"


def fail(code: int, message: str) -> NoReturn:
    """Print ``error: message`` on stderr, one line, and exit with ``code``."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Admin:
    """One command's connection: a blocking client, and ``SyncQueue``s on it.

    Used as a context manager, it turns queue_core's errors into one-line messages and
    the exit codes above."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._client: redis.Redis | None = None
        self._queues: dict[str, SyncQueue] = {}

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._client is not None:
            self._client.close()
        if isinstance(exc, QueueError | redis.RedisError):
            self.fail_with(exc)

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            try:
                QueueKeys("x", self.prefix)  # the prefix's own check
                self._client = create_sync_client(self.url, DEFAULT_REDIS_TIMEOUT)
            except (ValueError, InvalidOptionError) as exc:
                fail(EXIT_USAGE, f"bad --redis or --prefix: {exc}")
        return self._client

    def fail_with(self, exc: BaseException) -> NoReturn:
        fail(*self.explain(exc))

    def explain(self, exc: BaseException) -> tuple[int, str]:
        """The exit code and message of a queue_core (or Redis) error."""
        if isinstance(exc, RedisUnavailableError | RedisFullError | ClusterClientRequiredError):
            return EXIT_REDIS, f"Redis at {safe_url(self.url)}: {exc}"
        if isinstance(exc, redis.RedisError):  # a raw read outside redis_errors
            return EXIT_REDIS, f"Redis at {safe_url(self.url)}: {type(exc).__name__}: {exc}"
        if isinstance(exc, InvalidOptionError):
            return EXIT_USAGE, str(exc)
        if isinstance(exc, JobNotFoundError):
            return EXIT_NOT_FOUND, str(exc)
        if isinstance(exc, JobStateError | QueueBusyError):
            return EXIT_REFUSED, str(exc)
        return EXIT_ABORTED, f"{type(exc).__name__}: {exc}"

    def queue(self, name: str, *, check: bool = True, hooks: tuple[Hook, ...] = ()) -> SyncQueue:
        """A ``SyncQueue`` for ``name``; with ``check``, exit 4 if it has no key at all
        (a typo should not read as an empty queue, nor create one by pausing it)."""
        queue = self._queues.get(name) if not hooks else None
        if queue is None:
            queue = SyncQueue(name, redis=self.client, prefix=self.prefix, hooks=hooks)
            # A queue checks the server and loads every script on its first call: once per
            # client is enough (`stats` reads many queues, and again at each refresh).
            queue._checked = any(q._checked for q in self._queues.values())
            if not hooks:
                self._queues[name] = queue
        if check and not self.exists(name):
            fail(EXIT_NO_QUEUE, f"no queue {name!r} under prefix {self.prefix!r}")
        return queue

    def exists(self, name: str) -> bool:
        keys = QueueKeys(name, self.prefix)
        with redis_errors("exists", DEFAULT_REDIS_TIMEOUT):
            return bool(self.client.exists(*keys.all()))

    def discover(self) -> list[str]:
        """Every queue under the prefix, by name (queue_core.discovery: read only)."""
        with redis_errors("scan", DEFAULT_REDIS_TIMEOUT):
            return discover_queues_sync(self.client, self.prefix)


def confirm(question: str, yes: bool) -> None:
    """Ask ``question`` (default no) unless ``--yes``; off a terminal, refuse (exit 2)."""
    if yes:
        return
    if not sys.stdin.isatty():
        fail(
            EXIT_USAGE,
            f"{question.rstrip('?')}: not without confirmation, and stdin is not a "
            "terminal to ask on; pass --yes",
        )
    # Asked on stderr and read here: click.confirm would write a space to stdout, which
    # may be a file or a pipe that a script reads.
    sys.stderr.write(f"{question} [y/N]: ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        fail(EXIT_ABORTED, "aborted; nothing was changed")


_UNITS: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``1h30m``, ``7d``... as a timedelta (``BadParameter``
    names ``--grace``, its one use)."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        value += "s"
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise typer.BadParameter(
            f"{text!r} is not a duration such as 90s, 15m, 1h30m or 7d", param_hint="--grace"
        )
    try:
        return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
    except OverflowError:
        raise typer.BadParameter(f"{text!r} is too long", param_hint="--grace") from None


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def seconds(value: float | None) -> str:
    """A duration for a table: ``850ms``, ``12.5s``, ``4m05s``, ``3h12m``, ``2d04h``."""
    if value is None or math.isnan(value):
        return "-"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    if value < 60:
        return f"{value:.1f}s"
    whole = int(value)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """``12.5s ago`` or ``in 4m05s``; ``-`` for None."""
    if when is None:
        return "-"
    delta = ((now or datetime.now(UTC)) - when).total_seconds()
    return f"{seconds(delta)} ago" if delta >= 0 else f"in {seconds(-delta)}"


def to_jsonable(value: Any) -> Any:
    """Values for ``--json``: datetimes as ISO 8601, durations in seconds, the rest as is
    (anything JSON cannot hold becomes its ``repr``)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def print_json(value: Any) -> None:
    """One JSON document on one line of stdout (``jq`` reads it; so does ``--watch``)."""
    sys.stdout.write(json.dumps(to_jsonable(value), ensure_ascii=False) + "\n")
    sys.stdout.flush()


class ChunkProgress(Hook):
    """Reports each chunk of a bulk action (drain, clean, obliterate: one operation per
    chunk for ``around_operation`` hooks) to ``advance(count)``."""

    def __init__(self, advance: Callable[[int], object]) -> None:
        self.advance = advance

    def around_operation(self, event: OperationEvent) -> AbstractContextManager[object]:
        return _after(lambda: self.advance(event.count or 0))


@contextmanager
def _after(call: Callable[[], object]) -> Iterator[None]:
    yield
    call()
