"""Fixtures of the job browser's tests (tests/ui).

The browser tests are plain (sync) tests: Selenium blocks. What is async runs elsewhere:
the app is served by uvicorn in its own thread (``ui_serve``), workers run on an event
loop in another thread (``ui_workers``), and the tests read and write Redis through
``SyncQueue``. Every test gets its own key prefix (``ui_prefix``), so the overview lists
only that test's queues even though the session's Redis is shared with the other tests.

The fixtures of this file are named ``ui_*`` so that other helpers can add theirs.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from queue_core import EnqueueEvent, Hook, Job, SyncQueue, Worker
from queue_core.ui import TokenAuth, queue_ui
from tests.redis_server import free_port

T = TypeVar("T")

UI_TOKEN = "test-token"  # noqa: S105 - the test app's own token
UI_SECRET_KEY = "tests-ui-secret-key"  # noqa: S105 - signs the test app's cookies
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- processors run by ui_workers ---------------------------------------------------------


class ReportRenderError(Exception):
    """What ``render_report`` raises: the stack trace the job page must show."""


async def succeed(job: Job) -> dict[str, Any]:
    return {"echo": job.data}


async def render_report(job: Job) -> str:
    """Fails until an operator retried the job once (``manual_retries``), then succeeds."""
    if job.manual_retries == 0:
        raise ReportRenderError(f"cannot render report {job.data['report']}")
    return f"report {job.data['report']} rendered"


def run_until_cancelled(job: Job) -> str:
    """A long job (a plain def, run in a thread) that stops when it is cancelled."""
    deadline = time.monotonic() + 60
    while not job.cancelled.wait(0.05):
        if time.monotonic() > deadline:
            return "not cancelled"
    return "stopped"


UI_PROCESSORS: dict[str, Any] = {
    "succeed": succeed,
    "render_report": render_report,
    "run_until_cancelled": run_until_cancelled,
}


# --- trace context on enqueue ----------------------------------------------------------------


class Traceparent(Hook):
    """Writes a fixed W3C ``traceparent`` into every job it enqueues, as queue_otel would."""

    def __init__(self, trace_id: str) -> None:
        self.trace_id = trace_id

    @contextmanager
    def around_enqueue(self, event: EnqueueEvent) -> Iterator[None]:
        for job in event.jobs:
            job.headers["traceparent"] = f"00-{self.trace_id}-{uuid.uuid4().hex[:16]}-01"
        yield


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture
def ui_prefix() -> str:
    """A key prefix of this test's own: the overview shows only this test's queues."""
    return f"ui{uuid.uuid4().hex[:10]}"


@pytest.fixture
def ui_queue(redis_url: str, ui_prefix: str) -> Iterator[SyncQueue]:
    """The queue "reports" under this test's prefix (a name fit for screenshots)."""
    with SyncQueue("reports", redis=redis_url, prefix=ui_prefix) as queue:
        yield queue


# --- the app, served -----------------------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def closing_redis(ui: Starlette, mount: str | None = None) -> ASGIApp:
    """``ui`` (mounted at ``mount`` in a host app, if given) with a lifespan that closes
    its Redis client when uvicorn stops: the app has no lifespan of its own (a mounted
    app's never runs), and an unclosed client's ResourceWarning would fail a later test
    (filterwarnings = error)."""
    app = Starlette(routes=[Mount(mount, ui)]) if mount else ui

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await ui.state.browser.close()
                await send({"type": "lifespan.shutdown.complete"})
                return None

    return wrapped


@pytest.fixture
def ui_serve(redis_url: str, ui_prefix: str) -> Iterator[Callable[..., LiveServer]]:
    """Serve ``queue_ui(...)`` with uvicorn in a thread on a free port: token auth
    (``UI_TOKEN``), a fixed secret key and this test's prefix unless overridden. With
    ``mount="/queues"`` a host app mounts it there, and ``url`` ends with the mount."""
    servers: list[LiveServer] = []

    def serve(*, port: int | None = None, mount: str | None = None, **options: Any) -> LiveServer:
        options.setdefault("redis", redis_url)
        options.setdefault("prefix", ui_prefix)
        options.setdefault("auth", TokenAuth(UI_TOKEN))
        options.setdefault("secret_key", UI_SECRET_KEY)
        port = port or free_port()
        config = uvicorn.Config(
            closing_redis(queue_ui(**options), mount),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            # Open SSE streams must not hold the teardown for long.
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        live = LiveServer(f"http://127.0.0.1:{port}{mount or ''}", server, thread)
        servers.append(live)
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start within 20 s"
            time.sleep(0.02)
        return live

    yield serve
    for live in servers:
        live.stop()


@pytest.fixture
def ui_server(ui_serve: Callable[..., LiveServer]) -> LiveServer:
    """The app with the default options of ``ui_serve``."""
    return ui_serve()


# --- workers on an event loop in a thread --------------------------------------------------


class LoopThread:
    """An asyncio event loop in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ui-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def ui_workers(redis_url: str, ui_prefix: str) -> Iterator[Callable[..., Worker]]:
    """Start a worker with ``UI_PROCESSORS`` (or ``processors``) for a queue of this
    test's prefix; every worker is closed (forced) at teardown."""
    loop = LoopThread()
    workers: list[Worker] = []

    def start(queue: str, processors: Any = None, **options: Any) -> Worker:
        options.setdefault("redis", redis_url)
        options.setdefault("prefix", ui_prefix)
        options.setdefault("drain_delay", 1.0)
        options.setdefault("shutdown_timeout", 5.0)

        async def started() -> Worker:
            worker = Worker(queue, processors or UI_PROCESSORS, **options)
            await worker.__aenter__()
            return worker

        worker = loop.run(started())
        workers.append(worker)
        return worker

    yield start
    try:
        for worker in workers:
            loop.run(worker.close(force=True))
    finally:
        loop.close()


# --- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ui_browser() -> Iterator[WebDriver]:
    """Debian's headless Chromium through Selenium, shared by the session's browser tests.
    Skipped when Chromium or its driver is missing, except in CI (CI=true), which fails."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if missing:
        reason = f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the browser tests: {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        # A page left for another stays in the back/forward cache with its SSE streams
        # open; without it, leaving a page closes them and uvicorn stops at once.
        "--disable-features=BackForwardCache",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def ui_driver(ui_browser: WebDriver) -> Iterator[WebDriver]:
    """The shared browser, cleaned after each test: no cookies, one blank tab."""
    yield ui_browser
    for handle in ui_browser.window_handles[1:]:
        ui_browser.switch_to.window(handle)
        ui_browser.close()
    ui_browser.switch_to.window(ui_browser.window_handles[0])
    ui_browser.get("about:blank")  # closes the page's SSE streams before uvicorn stops
    ui_browser.delete_all_cookies()


# --- screenshots ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ui_artifacts() -> Path:
    """Where screenshots go: $QUEUE_CORE_UI_ARTIFACTS, else test-artifacts/ui in the
    checkout (git ignores it), kept after the run for whoever looks at a failure."""
    path = Path(os.environ.get("QUEUE_CORE_UI_ARTIFACTS") or REPO_ROOT / "test-artifacts" / "ui")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def ui_screenshot(
    ui_driver: WebDriver, ui_artifacts: Path, request: pytest.FixtureRequest
) -> Callable[[str], Path]:
    """Save a screenshot of the current page as <test name>-<label>.png."""

    def save(label: str) -> Path:
        test = re.sub(r"[^\w.-]+", "_", request.node.name)
        path = ui_artifacts / f"{test}-{label}.png"
        assert ui_driver.save_screenshot(str(path)), f"no screenshot saved at {path}"
        return path

    return save


def save_readme_screenshot(path: Path) -> None:
    """Copy a job page's screenshot to docs/images/job-browser.png, only when
    QUEUE_CORE_UI_SCREENSHOT names that file (the README shows it; refreshed by hand)."""
    configured = os.environ.get("QUEUE_CORE_UI_SCREENSHOT")
    if configured:
        target = REPO_ROOT / configured  # relative to the repository, like the README's link
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
