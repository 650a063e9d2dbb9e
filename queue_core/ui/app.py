"""``queue_ui``: the job browser as one Starlette application, to mount into a host app
(``app.mount("/queues", queue_ui(...))``) or to serve alone (``queue-core ui``).

Every request passes ``Browser.guard`` first: who is asking (``auth``), their session and,
for a POST, the CSRF check. Nothing needs the lifespan (a mounted app's is never run): the
Redis client is made on the first request, in the loop that serves it; served alone, the
lifespan's end closes it (mounted: ``app.state.browser.close()``, if the host cares).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from markupsafe import Markup
from redis import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from queue_core.connection import AsyncClient, byte_client, create_async_client
from queue_core.errors import RedisFullError, RedisUnavailableError
from queue_core.job import Job
from queue_core.log import get_logger
from queue_core.queue import Queue
from queue_core.ui import actions, live, views
from queue_core.ui.auth import Auth, TokenAuth, authenticate
from queue_core.ui.links import DEFAULT_LOGS_URL, DEFAULT_TRACE_URL
from queue_core.ui.render import base_of, digest, environment
from queue_core.ui.session import Session, SessionStore

__all__ = ["Browser", "Caller", "queue_ui"]

Redact = Callable[[Any, str, Job], Any]
log = get_logger("queue_core.ui")


@dataclass
class Caller:
    """The request's user and session; ``bearer``: authenticated by header, so no cookie
    (and no CSRF risk) is involved."""

    user: str
    session: Session
    bearer: bool = False


class Browser:
    """The settings and shared state of one ``queue_ui`` app."""

    def __init__(
        self,
        redis: str | AsyncClient | None,
        *,
        prefix: str,
        auth: Auth | None,
        read_only: bool,
        redact: Redact | None,
        trace_url: str | None,
        logs_url: str | None,
        queues: Sequence[str] | None,
        secret_key: str | None,
        title: str,
    ) -> None:
        self._redis = redis
        self._client: AsyncClient | None = None
        self.prefix = prefix
        self.auth = auth
        self.read_only = read_only
        self.redact = redact
        self.trace_url = trace_url
        self.logs_url = logs_url
        self.queue_names = tuple(queues) if queues is not None else None
        self.title = title
        self.sessions = SessionStore(secret_key)
        self.templates = environment()
        self._queues: dict[str, Queue] = {}

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            redis = self._redis
            if redis is None or isinstance(redis, str):
                self._client = create_async_client(redis)
            else:
                self._client = byte_client(redis)[0]
        return self._client

    def queue(self, name: str) -> Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = Queue(name, redis=self.client, prefix=self.prefix)
        return queue

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.close()
        if self._client is not None and (self._redis is None or isinstance(self._redis, str)):
            await self._client.aclose()
        self._client = None
        self._queues.clear()

    # ----- requests

    async def guard(
        self, request: Request, *, action: bool = False, writes: bool = True
    ) -> Caller | Response:
        """The caller, or the response that refuses them: 401 without credentials, 403 for
        an action without the session's CSRF value, or one that ``writes`` to the queues
        in read-only mode."""
        session = self.sessions.load(request)
        user = await authenticate(self.auth, request, session.user)
        if user is None:
            return self.unauthorized(request, session)
        bearer = isinstance(self.auth, TokenAuth) and request.headers.get(
            "authorization", ""
        ).lower().startswith("bearer ")
        caller = Caller(user, session, bearer)
        if action:
            if self.read_only and writes:
                return self.refuse(request, caller, "This job browser is read-only.")
            if not bearer:
                form = await request.form()
                sent = form.get("csrf")
                if not (isinstance(sent, str) and session.csrf_ok(sent)) or not same_origin(
                    request
                ):
                    return self.refuse(
                        request, caller, "The form was stale or came from another site."
                    )
        return caller

    def unauthorized(self, request: Request, session: Session) -> Response:
        headers = {}
        if self.auth is not None and not isinstance(self.auth, TokenAuth | type(None)):
            realm = getattr(self.auth, "realm", None)
            if realm is not None:
                headers["WWW-Authenticate"] = f'Basic realm="{realm}", charset="UTF-8"'
        login = isinstance(self.auth, TokenAuth)
        response = self.page(
            request,
            "login.html" if login else "error.html",
            {"message": "Sign in to see the queues.", "next": request.url.path},
            status_code=401,
            session=session,
        )
        response.headers.update(headers)
        return response

    def refuse(self, request: Request, caller: Caller, message: str) -> Response:
        return self.page(
            request, "error.html", {"message": message}, status_code=403, caller=caller
        )

    def page(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        status_code: int = 200,
        caller: Caller | None = None,
        session: Session | None = None,
    ) -> HTMLResponse:
        session = caller.session if caller is not None else session
        base = base_of(request)
        html = self.templates.get_template(template).render(
            base=base,
            title=self.title,
            user=caller.user if caller else None,
            csrf=session.csrf if session else "",
            read_only=self.read_only,
            login_form=isinstance(self.auth, TokenAuth),
            **context,
        )
        response = HTMLResponse(html, status_code=status_code)
        if session is not None:
            self.sessions.save(request, response, session)
        return response

    def fragment(
        self, request: Request, template: str, context: dict[str, Any], caller: Caller
    ) -> str:
        """A page's live part (what ``live.py`` sends again when it changes)."""
        return self.templates.get_template(template).render(
            base=base_of(request),
            read_only=self.read_only,
            csrf=caller.session.csrf,
            **context,
        )

    def live_page(
        self,
        request: Request,
        template: str,
        fragment: str,
        context: dict[str, Any],
        caller: Caller,
    ) -> HTMLResponse:
        """A page around its live fragment; the fragment's digest goes with its stream's
        URL, so the stream sends it again only if it changed meanwhile."""
        html = self.fragment(request, fragment, context, caller)
        live = {"live": Markup(html), "live_digest": digest(html)}  # noqa: S704 - rendered by our autoescaping template
        return self.page(request, template, {**context, **live}, caller=caller)

    def redirect(self, request: Request, path: str, caller: Caller) -> Response:
        base = base_of(request)
        response = RedirectResponse(base + path, status_code=303)
        self.sessions.save(request, response, caller.session)
        return response


def same_origin(request: Request) -> bool:
    """A browser's POST names its page's origin; one from another site is refused even
    with a valid form (defence in depth behind the CSRF value)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    return urlparse(origin).netloc == request.headers.get("host", request.url.netloc)


def queue_ui(
    redis: str | AsyncClient | None = None,
    *,
    prefix: str = "qc",
    auth: Auth | None = None,
    read_only: bool = False,
    redact: Redact | None = None,
    trace_url: str | None = DEFAULT_TRACE_URL,
    logs_url: str | None = DEFAULT_LOGS_URL,
    queues: Sequence[str] | None = None,
    secret_key: str | None = None,
    title: str = "queue_core",
) -> Starlette:
    """The job browser for the queues under ``prefix`` (or just ``queues``).

    ``auth``: ``TokenAuth(token)``, ``BasicAuth({name: hash_password(...)})`` or a
    callable given the request that returns the user's name or None (it may be async),
    to reuse the host app's sign-in. None lets anyone in: only for a loopback address.
    ``redact(value, field, job)`` returns what to show of a job's ``data``,
    ``return_value`` and ``progress``. ``trace_url`` and ``logs_url`` are templates with
    ``{trace_id}``, ``{job_id}`` and ``{queue}`` (default: the compose stack's Grafana).
    ``secret_key`` signs session cookies (default: random, sessions end with the process).
    """
    browser = Browser(
        redis,
        prefix=prefix,
        auth=auth,
        read_only=read_only,
        redact=redact,
        trace_url=trace_url,
        logs_url=logs_url,
        queues=queues,
        secret_key=secret_key,
        title=title,
    )

    def bind(
        handler: Callable[[Browser, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            return await handler(browser, request)

        return endpoint

    routes = [
        Route("/", bind(views.overview), name="overview"),
        Route(
            "/q/{queue:path}/jobs/{job_id:path}/action", bind(actions.job_action), methods=["POST"]
        ),
        Route("/q/{queue:path}/jobs/{job_id:path}", bind(views.job_page), name="job"),
        Route("/q/{queue:path}/bulk", bind(actions.bulk_action), methods=["POST"]),
        Route("/q/{queue:path}", bind(views.queue_page), name="queue"),
        Route("/sse/overview", bind(live.overview_stream)),
        Route("/sse/q/{queue:path}/jobs/{job_id:path}", bind(live.job_stream)),
        Route("/sse/q/{queue:path}", bind(live.queue_stream)),
        Route("/login", bind(views.login_page), methods=["GET"]),
        Route("/login", bind(actions.login), methods=["POST"]),
        Route("/logout", bind(actions.logout), methods=["POST"]),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await browser.close()  # served alone; a host app's lifespan never reaches a mount

    async def unavailable(request: Request, exc: Exception) -> Response:
        """Redis down, full or too slow: a page that says so (503), not a bare 500."""
        log.warning("ui redis error", path=request.url.path, error=repr(exc))
        message = f"Redis did not answer: {type(exc).__name__}: {exc}. Try again shortly."
        return browser.page(request, "error.html", {"message": message}, status_code=503)

    failures = (RedisError, RedisUnavailableError, RedisFullError, TimeoutError)
    handlers: dict[Any, Any] = dict.fromkeys(failures, unavailable)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.browser = browser
    return app
