"""``queue-core ui``: serve the job browser (``queue_core.ui``, the ``[ui]`` extra) with
uvicorn.

It listens on 127.0.0.1 unless told otherwise, and refuses any address that is not a
loopback one without authentication (``--token`` or ``--user``): the browser shows job
data (often personal data) and can retry, remove and drain jobs. Passwords are given as
hashes (``queue_core.ui.hash_password``), never in the clear.

Exit codes: 0 stopped by SIGINT or SIGTERM; 2 bad arguments, no authentication off
loopback, the ``[ui]`` extra missing, or the address cannot be listened on; 3 the app
failed to start.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import sys
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from queue_core.cli.app import app
from queue_core.cli.common import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    EXIT_USAGE,
    PrefixOpt,
    RedisOpt,
    fail,
)
from queue_core.connection import create_sync_client
from queue_core.errors import InvalidOptionError
from queue_core.keys import QueueKeys

if TYPE_CHECKING:
    from queue_core.ui import BasicAuth, TokenAuth

__all__ = ["is_loopback", "parse_users", "ui"]

# What `pip install 'queue-core[ui]'` brings; an ImportError of any other module is a bug.
_UI_MODULES: Final = frozenset(
    {"starlette", "jinja2", "multipart", "python_multipart", "itsdangerous", "uvicorn"}
)
_AUTH = "Authentication"
_LINKS = "Links"
_HOW_TO_AUTHENTICATE = (
    "pass --token (or set QUEUE_CORE_UI_TOKEN) for a shared token of 8 characters or more, "
    "or --user NAME:HASH (or QUEUE_CORE_UI_USERS) for basic auth, the hash from "
    "python -c \"from queue_core.ui import hash_password; print(hash_password('...'))\"; "
    "or listen on 127.0.0.1"
)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or ``localhost``: reachable from this machine only. Any other name
    counts as public (it may resolve to anything)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_users(values: Sequence[str]) -> dict[str, str]:
    """``NAME:HASH`` values (each may hold several, comma-separated) as a mapping."""
    users: dict[str, str] = {}
    for value in values:
        for item in value.split(","):
            name, sep, hashed = item.strip().partition(":")
            if not (name and sep and hashed):
                raise typer.BadParameter(
                    f"{item.strip()!r} is not NAME:HASH (the hash from "
                    "queue_core.ui.hash_password)",
                    param_hint="--user",
                )
            if name in users:
                raise typer.BadParameter(f"user {name!r} is given twice", param_hint="--user")
            users[name] = hashed
    return users


@app.command()
def ui(
    *,
    host: Annotated[
        str,
        typer.Option(help="Address to listen on; any but a loopback one needs --token or --user."),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = 8080,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="QUEUE_CORE_UI_TOKEN",
            show_envvar=True,
            help="A shared token: sent as 'Authorization: Bearer <token>', or typed into "
            "the login page.",
            rich_help_panel=_AUTH,
        ),
    ] = None,
    user: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME:HASH",
            envvar="QUEUE_CORE_UI_USERS",
            show_envvar=True,
            help="A user for HTTP basic auth (repeat, or comma-separate in the variable), "
            "the hash from queue_core.ui.hash_password.",
            rich_help_panel=_AUTH,
        ),
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            envvar="QUEUE_CORE_UI_SECRET",
            show_envvar=True,
            help="Key that signs the session cookie; default: random, so sessions end when "
            "the process does.",
            rich_help_panel=_AUTH,
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show the queues; refuse every action.")
    ] = False,
    trace_url: Annotated[
        str | None,
        typer.Option(
            help="Link to a job's trace, with {trace_id} ('' for none).",
            show_default="Grafana's Explore on Tempo at http://localhost:3000",
            rich_help_panel=_LINKS,
        ),
    ] = None,
    logs_url: Annotated[
        str | None,
        typer.Option(
            help="Link to a job's logs, with {trace_id}, {job_id} or {queue} ('' for none).",
            show_default="Grafana's Explore on Loki at http://localhost:3000",
            rich_help_panel=_LINKS,
        ),
    ] = None,
    root_path: Annotated[
        str, typer.Option(help="The path a reverse proxy serves the browser under (/queues).")
    ] = "",
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Serve the job browser: queues, jobs, traces and logs, and actions on them.

    Without --token or --user it serves loopback addresses only. Exit codes: 0 stopped;
    2 bad arguments, no authentication off loopback, the ui extra missing, or the
    address in use; 3 the app failed to start.
    """
    if token is not None and user:
        raise typer.BadParameter(
            "give --token or --user, not both (QUEUE_CORE_UI_TOKEN counts as --token)",
            param_hint="--token",
        )
    users = parse_users(user or ())
    if token is None and not users and not is_loopback(host):
        fail(
            EXIT_USAGE,
            f"refusing to serve the job browser on {host} without authentication: anyone "
            "who reaches that address could read job data and retry, remove or drain "
            f"jobs; {_HOW_TO_AUTHENTICATE}",
        )
    try:
        QueueKeys("x", prefix)  # the prefix's own check
        create_sync_client(redis).close()  # parses the URL; connects to nothing
    except (ValueError, InvalidOptionError) as exc:
        fail(EXIT_USAGE, f"bad --redis or --prefix: {exc}")
    try:
        import uvicorn  # noqa: PLC0415 - the [ui] extra; other commands start without it

        from queue_core.ui import queue_ui  # noqa: PLC0415
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _UI_MODULES:
            raise
        fail(
            EXIT_USAGE,
            f"the job browser needs the [ui] extra ({exc.name} is missing): "
            "pip install 'queue-core[ui]'",
        )
    options: dict[str, Any] = {}
    if trace_url is not None:
        options["trace_url"] = trace_url or None
    if logs_url is not None:
        options["logs_url"] = logs_url or None
    browser = queue_ui(
        redis,
        prefix=prefix,
        auth=_auth(token, users),
        read_only=read_only,
        secret_key=secret,
        **options,
    )
    sock = _listen(host, port)
    config = uvicorn.Config(browser, root_path=root_path, timeout_graceful_shutdown=5)
    url = _url(host, sock.getsockname()[1])

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                where = f" (listening on every address of {host})" if _unspecified(host) else ""
                typer.echo(f"Job browser: {url}{where}")
                if root_path:
                    typer.echo(f"Links assume a reverse proxy serving it under {root_path}")
                sys.stdout.flush()

        @contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            # uvicorn re-raises the signal once shut down, so the process dies of it; a
            # command exits 0 after a graceful stop. A second Ctrl-C forces the stop.
            signals = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    try:
        Server(config).run(sockets=[sock])
    finally:
        sock.close()


def _auth(token: str | None, users: dict[str, str]) -> TokenAuth | BasicAuth | None:
    from queue_core.ui import BasicAuth, TokenAuth  # noqa: PLC0415 - imported by now

    try:
        if token is not None:
            return TokenAuth(token)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--token") from None
    try:
        return BasicAuth(users) if users else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--user") from None


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (uvicorn listens on it), or exit 2."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot listen on {host}:{port}: {exc}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fail(EXIT_USAGE, f"cannot listen on {host}:{port}: {exc}")
    return sock


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


def _url(host: str, port: int) -> str:
    """The URL to open on this machine (a wildcard address is reached on loopback)."""
    if _unspecified(host):
        host = "::1" if ":" in host else "127.0.0.1"
    if ":" in host.strip("[]"):
        host = f"[{host.strip('[]')}]"
    return f"http://{host}:{port}/"
