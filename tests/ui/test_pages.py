"""The job browser's pages and actions in-process (httpx's ASGI transport, a real Redis):
what each action changes in Redis, the confirmation step of bulk actions, who acted (log
line and ``OperationEvent.actor``), paging and search, the job page's parts, and mounting
under a host app's path. Browser-driven tests are in test_browser.py, the refusals
(401/403, escaping) in test_security.py."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI

from queue_core import (
    Hook,
    JobSpec,
    OperationEvent,
    Queue,
    register_hook,
    unregister_hook,
)
from queue_core.keys import QueueKeys
from queue_core.ui import BasicAuth, TokenAuth, hash_password, queue_ui
from tests.conftest import wait_counts
from tests.log_capture import capture_logs
from tests.redis_server import free_port
from tests.ui.conftest import Traceparent

TOKEN = "pages-token-123"  # noqa: S105 - the test app's own token
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def prefix() -> str:
    return f"uip{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def ui_queue(redis_url: str, prefix: str) -> AsyncIterator[Queue]:
    queue = Queue("mail:outbox", redis=redis_url, prefix=prefix)  # ':' in a name on purpose
    yield queue
    await queue.close()


@pytest.fixture
async def client(redis_url: str, prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    app = queue_ui(redis=redis_url, prefix=prefix, auth=TokenAuth(TOKEN), trace_url=TRACE)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
        yield http
    await app.state.browser.close()


TRACE = "https://grafana.example/explore?trace={trace_id}&q={queue}"


async def signed_in(http: httpx.AsyncClient, path: str = "/") -> str:
    """Sign in through the login form; the CSRF value of the session."""
    form = await http.get("/login")
    csrf = csrf_of(form.text)
    reply = await http.post("/login", data={"token": TOKEN, "csrf": csrf, "next": path})
    assert reply.status_code == 303, reply.text
    return csrf


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


class Recorder(Hook):
    def __init__(self) -> None:
        self.events: list[OperationEvent] = []

    @contextmanager
    def around_operation(self, event: OperationEvent) -> Iterator[None]:
        yield
        self.events.append(event)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    hook = Recorder()
    register_hook(hook)
    yield hook
    unregister_hook(hook)


async def test_a_bulk_action_asks_first_then_acts_and_names_who_did_it(
    client: httpx.AsyncClient, ui_queue: Queue, recorder: Recorder
) -> None:
    await ui_queue.add("send", {"to": "a"})
    csrf = await signed_in(client)
    path = "/q/mail:outbox/bulk"

    asked = await client.post(path, data={"csrf": csrf, "action": "pause"})
    assert asked.status_code == 200 and 'id="confirm"' in asked.text
    assert "Pause mail:outbox?" in asked.text
    assert not await ui_queue.is_paused()  # asking changes nothing

    with capture_logs() as logs:
        done = await client.post(path, data={"csrf": csrf, "action": "pause", "confirmed": "1"})
    assert done.status_code == 303
    assert done.headers["location"] == "/q/mail%3Aoutbox?done=pause"
    assert await ui_queue.is_paused()
    assert [(e.operation, e.actor) for e in recorder.events] == [("pause", "token")]
    (line,) = [e for e in logs if e["event"] == "ui action"]
    assert (line["user"], line["action"], line["queue"]) == ("token", "pause", "mail:outbox")

    page = await client.get(done.headers["location"])
    assert "Paused: workers take no new jobs" in page.text
    assert 'id="paused-flag"' in page.text and 'id="bulk-resume"' in page.text

    await client.post(path, data={"csrf": csrf, "action": "resume", "confirmed": "1"})
    assert not await ui_queue.is_paused()


async def test_drain_clean_and_retry_all_failed_change_redis(
    client: httpx.AsyncClient, ui_queue: Queue, make_worker: Any, prefix: str
) -> None:
    async def processor(job: Any) -> str:
        if job.name == "bad" and job.manual_retries == 0:
            raise RuntimeError("bad job")
        return "ok"

    for i in range(3):
        await ui_queue.add("good", {"i": i})
        await ui_queue.add("bad", {"i": i})
    async with make_worker(processor, queue_name=ui_queue.name, prefix=prefix):
        await wait_counts(ui_queue, completed=3, failed=3)
    csrf = await signed_in(client)
    bulk = "/q/mail:outbox/bulk"

    # Clean: only jobs finished before the grace; a day's grace keeps these.
    kept = await client.post(
        bulk,
        data={"csrf": csrf, "action": "clean", "state": "completed", "grace": "86400"},
    )
    assert "Remove the completed jobs of mail:outbox finished older than 1 day?" in kept.text
    fields = {"csrf": csrf, "action": "clean", "state": "completed", "confirmed": "1"}
    await client.post(bulk, data={**fields, "grace": "86400"})
    assert (await ui_queue.get_counts())["completed"] == 3
    await client.post(bulk, data={**fields, "grace": "0"})
    assert (await ui_queue.get_counts())["completed"] == 0

    retried = await client.post(
        bulk, data={"csrf": csrf, "action": "retry_failed", "confirmed": "1"}
    )
    assert retried.status_code == 303
    counts = await ui_queue.get_counts()
    assert (counts["failed"], counts["waiting"]) == (0, 3)

    await client.post(bulk, data={"csrf": csrf, "action": "drain", "confirmed": "1"})
    assert (await ui_queue.get_counts())["waiting"] == 0

    refused = await client.post(
        bulk, data={"csrf": csrf, "action": "clean", "state": "active", "confirmed": "1"}
    )
    assert refused.status_code == 403
    unknown = await client.post(bulk, data={"csrf": csrf, "action": "obliterate"})
    assert unknown.status_code == 403


async def test_job_actions_and_their_refusals(
    client: httpx.AsyncClient, ui_queue: Queue, recorder: Recorder
) -> None:
    delayed = await ui_queue.add("later", {"n": 1}, delay=3600)
    waiting = await ui_queue.add("now", {"n": 2})
    csrf = await signed_in(client)

    def action(job_id: str) -> str:
        return f"/q/mail:outbox/jobs/{job_id}/action"

    promoted = await client.post(action(delayed.id), data={"csrf": csrf, "action": "promote"})
    assert promoted.status_code == 303
    assert promoted.headers["location"].endswith(f"/jobs/{delayed.id}?done=promote")
    assert (await ui_queue.get_counts())["delayed"] == 0

    # Promoting it again: the queue refuses (it waits already); the page says why.
    again = await client.post(action(delayed.id), data={"csrf": csrf, "action": "promote"})
    assert again.status_code == 403 and "cannot promote" in again.text

    asked = await client.post(action(waiting.id), data={"csrf": csrf, "action": "remove"})
    assert 'id="confirm"' in asked.text and await ui_queue.get_job(waiting.id) is not None
    removed = await client.post(
        action(waiting.id), data={"csrf": csrf, "action": "remove", "confirmed": "1"}
    )
    assert removed.headers["location"] == "/q/mail%3Aoutbox?done=remove"
    assert await ui_queue.get_job(waiting.id) is None

    cancelled = await client.post(action(delayed.id), data={"csrf": csrf, "action": "cancel"})
    assert cancelled.status_code == 303
    job = await ui_queue.get_job(delayed.id)
    assert job is not None and job.state.value == "failed"
    assert job.failed_reason is not None and "cancelled by token" in job.failed_reason
    assert [(e.operation, e.actor) for e in recorder.events] == [
        ("promote", "token"),
        ("promote", "token"),
        ("remove", "token"),
        ("cancel", "token"),
    ]

    missing = await client.get("/q/mail:outbox/jobs/nope")
    assert missing.status_code == 404 and "No job &#39;nope&#39;" in missing.text


async def test_the_queue_page_pages_sorts_and_searches_from_redis(
    client: httpx.AsyncClient, ui_queue: Queue
) -> None:
    await ui_queue.add_bulk(
        JobSpec("invoice" if i % 10 == 0 else "receipt", {"i": i}) for i in range(120)
    )
    await signed_in(client)

    def ids(html: str) -> list[str]:
        return re.findall(r'data-job-id="([^"]+)"', html)

    first = await client.get("/q/mail:outbox?state=waiting&per_page=50")
    assert "page 1 of 3 (120 jobs)" in first.text and 'id="next"' in first.text
    newest = ids(first.text)
    oldest = ids((await client.get("/q/mail:outbox?state=waiting&per_page=50&order=oldest")).text)
    last = ids((await client.get("/q/mail:outbox?state=waiting&per_page=50&page=3")).text)
    assert len(newest) == len(oldest) == 50 and len(last) == 20
    assert set(newest).isdisjoint(last)
    assert oldest[0] == newest[-1] or oldest[0] in last  # the two ends of one order

    found = ids((await client.get("/q/mail:outbox?state=waiting&search=INVOICE")).text)
    assert len(found) == 12
    by_id = ids((await client.get(f"/q/mail:outbox?state=waiting&search={newest[3]}")).text)
    assert by_id[0] == newest[3]
    nothing = await client.get("/q/mail:outbox?state=waiting&search=no-such-thing")
    assert ids(nothing.text) == [] and "matches" in nothing.text


async def test_the_job_page_shows_its_parts_and_folds_large_values(
    client: httpx.AsyncClient, ui_queue: Queue, make_worker: Any, prefix: str, redis_url: str
) -> None:
    trace_id = uuid.uuid4().hex
    big = {"rows": ["x" * 100 for _ in range(100)]}
    async with Queue(
        ui_queue.name, redis=redis_url, prefix=prefix, hooks=[Traceparent(trace_id)]
    ) as traced:
        job = await traced.add("export", big, attempts=2)

    async def processor(j: Any) -> None:
        await j.log("step one <b>done</b>")
        await j.update_progress({"pct": 50})
        raise LookupError(f"no row {j.attempt}")

    async with make_worker(processor, queue_name=ui_queue.name, prefix=prefix):
        await wait_counts(ui_queue, failed=1)
    await signed_in(client)

    page = (await client.get(f"/q/mail:outbox/jobs/{job.id}")).text
    assert 'id="state" class="state failed"' in page
    assert '<details class="fold" id="data">' in page  # 10 kB of data: folded
    assert "step one &lt;b&gt;done&lt;/b&gt;" in page
    assert "&#34;pct&#34;: 50" in page or "&quot;pct&quot;: 50" in page
    assert page.count('class="stacktrace"') == 2  # both attempts, each with its trace
    assert "no row 1" in page and "no row 2" in page and "LookupError" in page
    trace = re.search(r'id="open-trace" href="([^"]+)"', page)
    assert trace and trace.group(1) == (
        f"https://grafana.example/explore?trace={trace_id}&amp;q=mail%3Aoutbox"
    )
    assert f'<code id="trace-id">{trace_id}</code>' in page
    assert 'id="action-retry"' in page and 'id="action-cancel"' not in page


async def test_mounted_under_a_host_app_path(redis_url: str, prefix: str, ui_queue: Queue) -> None:
    job = await ui_queue.add("send", {})
    users = {"ops": hash_password("correct horse")}
    ui = queue_ui(redis=redis_url, prefix=prefix, auth=BasicAuth(users))
    host = FastAPI()
    host.mount("/admin/queues", ui)
    transport = httpx.ASGITransport(app=host)
    auth = httpx.BasicAuth("ops", "correct horse")
    async with httpx.AsyncClient(transport=transport, base_url="http://h", auth=auth) as http:
        overview = await http.get("/admin/queues/")
        assert overview.status_code == 200
        assert 'href="/admin/queues/q/mail%3Aoutbox"' in overview.text
        assert 'src="/admin/queues/static/htmx-2.0.11.min.js"' in overview.text
        assert 'sse-connect="/admin/queues/sse/overview?v=' in overview.text
        cookie = overview.headers["set-cookie"]
        assert "Path=/admin/queues/" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
        assert (await http.get("/admin/queues/static/ui.css")).status_code == 200
        csrf = csrf_of((await http.get(f"/admin/queues/q/mail:outbox/jobs/{job.id}")).text)
        done = await http.post(
            f"/admin/queues/q/mail:outbox/jobs/{job.id}/action",
            data={"csrf": csrf, "action": "cancel"},
        )
        assert done.status_code == 303
        assert done.headers["location"].startswith("/admin/queues/q/mail%3Aoutbox/jobs/")
    await ui.state.browser.close()


async def test_odd_queries_show_a_page_and_an_unknown_queue_is_404(
    client: httpx.AsyncClient, ui_queue: Queue
) -> None:
    await ui_queue.add("send", {})
    await signed_in(client)
    for query in ("page=999999", "page=-1&per_page=7&state=bogus&order=x", "page=abc"):
        reply = await client.get(f"/q/mail:outbox?{query}")
        assert reply.status_code == 200, query
    long = await client.get("/q/mail:outbox?search=" + "x" * 500)
    assert long.status_code == 200
    missing = await client.get("/q/mail:inbox")
    assert missing.status_code == 404 and "No queue &#39;mail:inbox&#39;" in missing.text


async def test_redis_down_is_a_page_that_says_so() -> None:
    app = queue_ui(redis=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ui.test") as http:
        reply = await http.get("/")
    await app.state.browser.close()
    assert reply.status_code == 503
    assert "Redis did not answer" in reply.text


async def test_a_corrupt_record_is_shown_as_such_and_breaks_no_page(
    client: httpx.AsyncClient, ui_queue: Queue, redis_url: str, prefix: str
) -> None:
    good = await ui_queue.add("send", {"to": "a"})
    bad = await ui_queue.add("send", {"to": "b"})
    raw = redis.asyncio.Redis.from_url(redis_url)
    try:
        await raw.hset(QueueKeys(ui_queue.name, prefix)["state"], bad.id, b"\xff not json")
    finally:
        await raw.aclose()
    await signed_in(client)

    overview = await client.get("/")
    assert overview.status_code == 200 and 'data-queue="mail:outbox"' in overview.text
    listing = await client.get("/q/mail:outbox?state=waiting")
    assert listing.status_code == 200
    assert f'data-job-id="{good.id}"' in listing.text
    page = await client.get(f"/q/mail:outbox/jobs/{bad.id}")
    assert page.status_code == 200 and 'id="read-error"' in page.text
    assert (await client.get(f"/q/mail:outbox/jobs/{good.id}")).status_code == 200
