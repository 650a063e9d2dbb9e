"""The job browser's defences, over HTTP against the app served by uvicorn: no page,
stream or action without credentials, no action without the session's CSRF value or in
read-only mode, job text always escaped, and each kind of ``auth`` and ``redact``.

Every refused action is checked in Redis too: nothing changed.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from queue_core import Job, JobState, SyncQueue, Worker
from queue_core.ui import BasicAuth, hash_password
from tests.ui.conftest import UI_TOKEN, LiveServer
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'

JOB_ACTIONS = ("retry", "promote", "cancel", "remove")
BULK_ACTIONS = ("retry_failed", "clean", "pause", "resume", "drain")


class CsrfField(HTMLParser):
    """The value of the first <input name="csrf"> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.value: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        fields = dict(attrs)
        if tag == "input" and fields.get("name") == "csrf" and self.value is None:
            self.value = fields.get("value")


def csrf_of(html: str) -> str:
    parser = CsrfField()
    parser.feed(html)
    assert parser.value, "the page has no <input name=csrf>"
    return parser.value


@contextmanager
def signed_in(server: LiveServer) -> Iterator[httpx.Client]:
    """A client whose session cookie went through the login form."""
    with httpx.Client(base_url=server.url, timeout=20) as client:
        form = client.get("/login")
        assert form.status_code == 200
        reply = client.post("/login", data={"token": UI_TOKEN, "csrf": csrf_of(form.text)})
        assert reply.status_code == 303, reply.text
        yield client


def job_urls(
    queue: str, job_id: str
) -> tuple[list[str], list[str], list[tuple[str, dict[str, str]]]]:
    """The spec's pages, streams and actions for one queue and job."""
    pages = [
        "/",
        f"/q/{queue}",
        f"/q/{queue}?state=failed&page=1&order=oldest",
        f"/q/{queue}?search=report",
        f"/q/{queue}/jobs/{job_id}",
    ]
    streams = ["/sse/overview", f"/sse/q/{queue}", f"/sse/q/{queue}/jobs/{job_id}"]
    actions = [(f"/q/{queue}/jobs/{job_id}/action", {"action": a}) for a in JOB_ACTIONS]
    actions += [
        (f"/q/{queue}/bulk", {"action": a, "state": "completed", "grace": "0", "confirmed": "1"})
        for a in BULK_ACTIONS
    ]
    actions.append((f"/q/{queue}/jobs/{job_id}/action", {"action": "remove", "confirmed": "1"}))
    return pages, streams, actions


def stream_status(client: httpx.Client, url: str, **kwargs: Any) -> tuple[int, str]:
    with client.stream("GET", url, **kwargs) as reply:
        return reply.status_code, reply.headers.get("content-type", "")


@pytest.fixture
def delayed_job(ui_queue: SyncQueue) -> Job:
    """A delayed job: promote, cancel, remove and drain/clean would each change it."""
    ui_queue.add("report", {"n": 1})  # and a waiting one for drain
    return ui_queue.add("report", {"n": 2}, delay=3600)


def unchanged(queue: SyncQueue, job: Job) -> None:
    found = queue.get_job(job.id)
    assert found is not None and found.state == JobState.DELAYED, found
    assert not queue.is_paused()
    counts = queue.get_counts()
    assert (counts["waiting"], counts["delayed"]) == (1, 1), counts


def test_nothing_without_credentials(
    ui_server: LiveServer, ui_queue: SyncQueue, delayed_job: Job
) -> None:
    pages, streams, actions = job_urls(ui_queue.name, delayed_job.id)
    with httpx.Client(base_url=ui_server.url, timeout=20) as anonymous:
        for url in pages:
            for headers in ({}, {"Authorization": "Bearer wrong-token"}):
                reply = anonymous.get(url, headers=headers)
                assert reply.status_code == 401, (url, headers, reply.status_code)
                assert 'name="token"' in reply.text  # TokenAuth: the login form
        for url in streams:
            for headers in ({}, {"Authorization": "Bearer wrong-token"}):
                assert stream_status(anonymous, url, headers=headers)[0] == 401, url
        for url, form in actions:
            reply = anonymous.post(url, data=form)
            assert reply.status_code == 401, (url, form, reply.status_code)
            reply = anonymous.post(url, data=form, headers={"Authorization": "Bearer nope"})
            assert reply.status_code == 401, (url, form, reply.status_code)
        assert anonymous.post("/logout").status_code == 401
        assert anonymous.get("/login").status_code == 200
        assert anonymous.get("/static/htmx-2.0.11.min.js").status_code == 200
    unchanged(ui_queue, delayed_job)

    # The same URLs with the token as a bearer: every page and stream answers.
    bearer = {"Authorization": f"Bearer {UI_TOKEN}"}
    with httpx.Client(base_url=ui_server.url, timeout=20, headers=bearer) as client:
        for url in pages:
            assert client.get(url).status_code == 200, url
        for url in streams:
            status, kind = stream_status(client, url)
            assert (status, kind.split(";")[0]) == (200, "text/event-stream"), url


def test_actions_need_the_sessions_csrf_value(
    ui_server: LiveServer, ui_queue: SyncQueue, delayed_job: Job
) -> None:
    _, _, actions = job_urls(ui_queue.name, delayed_job.id)
    with signed_in(ui_server) as client:
        page = client.get(f"/q/{ui_queue.name}/jobs/{delayed_job.id}")
        assert page.status_code == 200
        csrf = csrf_of(page.text)
        with signed_in(ui_server) as other:  # another session's value is wrong here
            other_csrf = csrf_of(other.get("/").text)
        assert other_csrf != csrf
        for url, form in actions:
            for sent in ({}, {"csrf": ""}, {"csrf": "wrong"}, {"csrf": other_csrf}):
                reply = client.post(url, data={**form, **sent})
                assert reply.status_code == 403, (url, form, sent, reply.status_code)
        # A right value from another site's page is refused as well (Origin).
        reply = client.post(
            f"/q/{ui_queue.name}/bulk",
            data={"action": "pause", "confirmed": "1", "csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert reply.status_code == 403
        assert client.post("/logout").status_code == 403
        unchanged(ui_queue, delayed_job)

        # Without confirmed=1 a bulk action only asks.
        reply = client.post(f"/q/{ui_queue.name}/bulk", data={"action": "pause", "csrf": csrf})
        assert reply.status_code == 200 and 'name="confirmed"' in reply.text
        unchanged(ui_queue, delayed_job)
        # The right value acts.
        reply = client.post(
            f"/q/{ui_queue.name}/bulk", data={"action": "pause", "confirmed": "1", "csrf": csrf}
        )
        assert reply.status_code == 303
        assert ui_queue.is_paused()
        reply = client.post(
            f"/q/{ui_queue.name}/jobs/{delayed_job.id}/action",
            data={"action": "promote", "csrf": csrf},
        )
        assert reply.status_code == 303
        promoted = ui_queue.get_job(delayed_job.id)
        assert promoted is not None and promoted.state == JobState.WAITING


def test_job_text_is_escaped(
    ui_server: LiveServer,
    ui_queue: SyncQueue,
    ui_workers: Callable[..., Worker],
) -> None:
    ui_workers(ui_queue.name)
    # render_report fails with a message that holds the data's text: the stack trace too.
    job = ui_queue.add("render_report", {"report": SCRIPT, "title": IMG})
    wait_until(
        lambda: (found := ui_queue.get_job(job.id)) and found.state == JobState.FAILED,
        timeout=20,
        what="the job failed",
    )
    escaped_script = "&lt;script&gt;alert(1)&lt;/script&gt;"
    escaped_img = "&lt;img src=x onerror=alert(1)&gt;"
    with signed_in(ui_server) as client:
        page = client.get(f"/q/{ui_queue.name}/jobs/{job.id}").text
        assert SCRIPT not in page and "<img src=x" not in page
        assert page.count(escaped_script) >= 2  # data and stack trace
        assert escaped_img in page
        listing = client.get(f"/q/{ui_queue.name}?state=failed").text
        assert SCRIPT not in listing and "<img src=x" not in listing
        with client.stream("GET", f"/sse/q/{ui_queue.name}/jobs/{job.id}") as stream:
            event = ""
            for line in stream.iter_lines():
                event += line + "\n"
                if not line and "event: update" in event:
                    break
        assert SCRIPT not in event and "<img src=x" not in event
        assert escaped_script in event


def test_read_only_refuses_every_action(
    ui_serve: Callable[..., LiveServer], ui_queue: SyncQueue, delayed_job: Job
) -> None:
    server = ui_serve(read_only=True)
    pages, _, actions = job_urls(ui_queue.name, delayed_job.id)
    with signed_in(server) as client:
        for url in pages:
            page = client.get(url)
            assert page.status_code == 200, url
            assert 'name="action"' not in page.text, f"an action button on {url}"
        form_csrf = _any_csrf(client)  # a valid session and value: only read_only refuses
        for url, form in actions:
            reply = client.post(url, data={**form, "csrf": form_csrf})
            assert reply.status_code == 403, (url, form, reply.status_code)
        bearer = {"Authorization": f"Bearer {UI_TOKEN}"}
        for url, form in actions:
            assert client.post(url, data=form, headers=bearer).status_code == 403, url
    unchanged(ui_queue, delayed_job)


def _any_csrf(client: httpx.Client) -> str:
    """The session's CSRF value from the login form (read-only pages may hold no form)."""
    return csrf_of(client.get("/login").text)


def test_basic_auth_with_a_password_hash(
    ui_serve: Callable[..., LiveServer], ui_queue: SyncQueue
) -> None:
    ui_queue.add("report")
    server = ui_serve(auth=BasicAuth({"ada": hash_password("correct horse")}))

    def basic(user: str, password: str) -> dict[str, str]:
        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {encoded}"}

    with httpx.Client(base_url=server.url, timeout=20) as client:
        ok = client.get(f"/q/{ui_queue.name}", headers=basic("ada", "correct horse"))
        assert ok.status_code == 200
        assert "ada" in ok.text  # who is signed in
        for headers in ({}, basic("ada", "wrong"), basic("eve", "correct horse")):
            reply = client.get(f"/q/{ui_queue.name}", headers=headers)
            assert reply.status_code == 401, headers
            assert reply.headers["www-authenticate"].startswith('Basic realm="queue_core"')
        assert stream_status(client, "/sse/overview", headers=basic("ada", "x"))[0] == 401
    with pytest.raises(ValueError, match="hash"):
        BasicAuth({"ada": "plain text password"})


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_callable_auth(ui_serve: Callable[..., LiveServer], ui_queue: SyncQueue, kind: str) -> None:
    ui_queue.add("report")

    def user_of(request: Request) -> str | None:
        return "grace" if request.headers.get("x-user") == "grace" else None

    async def async_user_of(request: Request) -> str | None:
        return user_of(request)

    server = ui_serve(auth=user_of if kind == "sync" else async_user_of)
    with httpx.Client(base_url=server.url, timeout=20) as client:
        ok = client.get("/", headers={"x-user": "grace"})
        assert ok.status_code == 200
        assert ui_queue.name in ok.text and "grace" in ok.text
        assert client.get("/").status_code == 401
        assert client.get("/", headers={"x-user": "eve"}).status_code == 401
        reply = client.post(f"/q/{ui_queue.name}/bulk", data={"action": "pause", "confirmed": "1"})
        assert reply.status_code == 401
    assert not ui_queue.is_paused()


def test_redact_hides_a_field(ui_serve: Callable[..., LiveServer], ui_queue: SyncQueue) -> None:
    seen: list[str] = []

    def redact(value: Any, field: str, job: Job) -> Any:
        seen.append(field)
        if field == "data" and isinstance(value, dict) and "password" in value:
            return {**value, "password": "[redacted]"}
        return value

    server = ui_serve(redact=redact)
    job = ui_queue.add("sign_up", {"user": "ada", "password": "hunter2-secret"})
    with signed_in(server) as client:
        page = client.get(f"/q/{ui_queue.name}/jobs/{job.id}").text
        listing = client.get(f"/q/{ui_queue.name}").text
    assert "hunter2-secret" not in page and "hunter2-secret" not in listing
    assert "[redacted]" in page and "ada" in page
    assert "data" in seen


@pytest.mark.parametrize(
    "target", ["//evil.example/", "/\\evil.example/", "https://evil.example/", "/\t/evil.example/"]
)
def test_login_never_redirects_to_another_site(ui_server: LiveServer, target: str) -> None:
    with httpx.Client(base_url=ui_server.url, timeout=20) as client:
        form = client.get("/login")
        reply = client.post(
            "/login", data={"token": UI_TOKEN, "csrf": csrf_of(form.text), "next": target}
        )
        assert reply.status_code == 303
        # A browser reads "/\\x" and "/<tab>/x" as "//x": only a plain path stays on site.
        location = reply.headers["location"]
        assert re.fullmatch(r"/(?![/\\])[^\s\\]*", location), location
