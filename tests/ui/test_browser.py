"""The job browser driven in a real headless Chromium against a real Redis and workers.

Each test logs in through /login with the token, then works the pages as an operator
would: the overview updating live (SSE), a failed job's stack trace and its retry, the
cancel of a running job, a bulk pause/resume with its confirmation page, and the link
to the job's trace. Outcomes are checked in the page and in Redis.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TypeVar

import pytest
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from queue_core import Job, JobState, SyncQueue, Worker
from tests.redis_server import free_port
from tests.ui.conftest import UI_TOKEN, LiveServer, Traceparent, save_readme_screenshot
from tests.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]

T = TypeVar("T")

TIMEOUT = 20  # seconds; generous: 2 cores shared with other test runs


def waiter(driver: WebDriver) -> WebDriverWait[WebDriver]:
    # htmx swaps elements: a stale reference is retried like a missing one
    return WebDriverWait(
        driver,
        TIMEOUT,
        poll_frequency=0.1,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    )


def unstale(call: Callable[[], T]) -> T:
    """``call()``, again while it meets a stale element: each SSE update swaps the page's
    live fragment (the first one right after the page loaded), so an element found a
    moment ago may have been replaced by its twin."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return call()
        except StaleElementReferenceException:
            if time.monotonic() > deadline:
                raise


def text_of(driver: WebDriver, selector: str) -> str:
    return unstale(lambda: str(driver.find_element(By.CSS_SELECTOR, selector).text))


def attribute(driver: WebDriver, selector: str, name: str) -> str | None:
    return unstale(lambda: driver.find_element(By.CSS_SELECTOR, selector).get_attribute(name))


def click(driver: WebDriver, selector: str) -> None:
    unstale(lambda: driver.find_element(By.CSS_SELECTOR, selector).click())


def wait_text(driver: WebDriver, selector: str, expected: str) -> str:
    """Wait until the element's text contains ``expected`` (case-insensitive)."""
    try:
        return str(
            waiter(driver).until(
                lambda d: (t := text_of(d, selector)) and expected.lower() in t.lower() and t
            )
        )
    except Exception as exc:
        try:
            last = text_of(driver, selector)
        except NoSuchElementException:
            last = "<no such element>"
        raise AssertionError(f"{selector} never showed {expected!r}; last text {last!r}") from exc


def count_cell(driver: WebDriver, queue: str, state: str) -> int | None:
    cell = f'tr[data-queue="{queue}"] td.count[data-state="{state}"]'
    digits = re.sub(r"\D", "", text_of(driver, cell))
    return int(digits) if digits else None


def login(driver: WebDriver, server: LiveServer, token: str = UI_TOKEN) -> None:
    driver.get(f"{server.url}/login")
    field = driver.find_element(By.NAME, "token")
    field.send_keys(token, Keys.ENTER)
    if token == UI_TOKEN:
        waiter(driver).until(lambda d: "/login" not in d.current_url)
    else:  # the refusal is a new page: wait for it, not for the form it replaces
        waiter(driver).until(
            lambda d: any("not right" in e.text for e in d.find_elements(By.CSS_SELECTOR, ".error"))
        )


def click_action(driver: WebDriver, action: str) -> None:
    """Click button[name=action][value=<action>], accepting a confirm() if one opens."""
    click(driver, f'button[name="action"][value="{action}"]')
    with suppress(NoAlertPresentException):
        driver.switch_to.alert.accept()


def wait_state(queue: SyncQueue, job_id: str, state: JobState) -> Job:
    """Wait until the job is in ``state`` in Redis; return it."""
    found: list[Job] = []

    def reached() -> bool:
        job = queue.get_job(job_id)
        found[:] = [job] if job is not None else []
        return job is not None and job.state == state

    wait_until(reached, timeout=TIMEOUT, what=f"job {job_id} {state.value}")
    return found[0]


def test_login_then_the_overview_updates_live(
    ui_server: LiveServer,
    ui_driver: WebDriver,
    ui_queue: SyncQueue,
    ui_workers: Callable[..., Worker],
    ui_screenshot: Callable[[str], Path],
) -> None:
    for i in range(3):
        ui_queue.add("succeed", {"n": i})

    login(ui_driver, ui_server, token="not-the-token")  # noqa: S106 - a wrong one
    assert ui_driver.find_elements(By.NAME, "token"), "a wrong token must not log in"
    login(ui_driver, ui_server)
    ui_driver.get(f"{ui_server.url}/")
    row = f'tr[data-queue="{ui_queue.name}"]'
    waiter(ui_driver).until(lambda d: d.find_element(By.CSS_SELECTOR, row))
    assert count_cell(ui_driver, ui_queue.name, "waiting") == 3
    assert count_cell(ui_driver, ui_queue.name, "completed") in (0, None)
    ui_screenshot("overview-before")

    ui_driver.execute_script("window.uiTestMarker = 'no reload';")
    ui_workers(ui_queue.name)
    try:
        waiter(ui_driver).until(lambda d: count_cell(d, ui_queue.name, "completed") == 3)
    except Exception as exc:
        raise AssertionError(
            f"the completed cell did not reach 3 live; counts in Redis {ui_queue.get_counts()}"
        ) from exc
    assert count_cell(ui_driver, ui_queue.name, "waiting") in (0, None)
    assert ui_driver.execute_script("return window.uiTestMarker;") == "no reload"
    ui_screenshot("overview-after")


def test_failed_job_stack_trace_then_retry(
    ui_server: LiveServer,
    ui_driver: WebDriver,
    ui_queue: SyncQueue,
    ui_workers: Callable[..., Worker],
    ui_screenshot: Callable[[str], Path],
) -> None:
    ui_workers(ui_queue.name)
    ui_queue.hooks.add(Traceparent(uuid.uuid4().hex))  # the links to trace and logs show
    job = ui_queue.add("render_report", {"report": "q3-sales"})
    wait_state(ui_queue, job.id, JobState.FAILED)

    login(ui_driver, ui_server)
    ui_driver.get(f"{ui_server.url}/q/{ui_queue.name}?state=failed")
    ui_screenshot("queue-failed")
    click(ui_driver, f'tr[data-job-id="{job.id}"] a[href*="/jobs/{job.id}"]')
    waiter(ui_driver).until(lambda d: f"/q/{ui_queue.name}/jobs/{job.id}" in d.current_url)

    assert "failed" in text_of(ui_driver, "#state").lower()
    trace = text_of(ui_driver, "pre.stacktrace")
    assert "cannot render report q3-sales" in trace
    assert "render_report" in trace  # the processor's frame
    assert "ReportRenderError" in trace
    assert attribute(ui_driver, "a#open-trace", "href")
    assert attribute(ui_driver, "a#open-logs", "href")
    save_readme_screenshot(ui_screenshot("job-failed"))

    click_action(ui_driver, "retry")  # a form POST: the job page again, then SSE updates
    done = wait_state(ui_queue, job.id, JobState.COMPLETED)
    assert done.return_value == "report q3-sales rendered"
    assert done.manual_retries == 1
    wait_text(ui_driver, "#state", "completed")
    wait_text(ui_driver, "#return-value", "report q3-sales rendered")
    ui_screenshot("job-retried")


def test_cancel_a_running_job(
    ui_server: LiveServer,
    ui_driver: WebDriver,
    ui_queue: SyncQueue,
    ui_workers: Callable[..., Worker],
    ui_screenshot: Callable[[str], Path],
) -> None:
    ui_workers(ui_queue.name)
    job = ui_queue.add("run_until_cancelled")
    wait_state(ui_queue, job.id, JobState.ACTIVE)

    login(ui_driver, ui_server)
    ui_driver.get(f"{ui_server.url}/q/{ui_queue.name}/jobs/{job.id}")
    assert "active" in text_of(ui_driver, "#state").lower()
    ui_screenshot("job-active")
    click_action(ui_driver, "cancel")

    failed = wait_state(ui_queue, job.id, JobState.FAILED)
    assert failed.error_type == "JobCancelledError"
    wait_text(ui_driver, "#state", "failed")
    waiter(ui_driver).until(lambda d: "JobCancelledError" in text_of(d, "body"))
    ui_screenshot("job-cancelled")


def bulk(
    driver: WebDriver,
    server: LiveServer,
    queue: SyncQueue,
    action: str,
    screenshot: Callable[[str], Path],
) -> None:
    """Run a bulk action from the queue page through its confirmation page."""
    driver.get(f"{server.url}/q/{queue.name}")
    # Each bulk action is its own form: a hidden action field and button#bulk-<action>.
    click(driver, f"#bulk form button#bulk-{action}")
    waiter(driver).until(lambda d: d.find_element(By.CSS_SELECTOR, "form#confirm"))
    assert attribute(driver, 'form#confirm input[name="action"]', "value") == action
    assert queue.is_paused() is (action == "resume"), "the confirmation page changed nothing"
    screenshot(f"confirm-{action}")
    click(driver, "form#confirm button#confirm-button")


def test_pause_and_resume_a_queue_with_confirmation(
    ui_server: LiveServer,
    ui_driver: WebDriver,
    ui_queue: SyncQueue,
    ui_screenshot: Callable[[str], Path],
) -> None:
    ui_queue.add("succeed")  # the queue exists in Redis
    login(ui_driver, ui_server)

    bulk(ui_driver, ui_server, ui_queue, "pause", ui_screenshot)
    wait_until(ui_queue.is_paused, timeout=TIMEOUT, what="the queue paused")
    ui_screenshot("paused")
    ui_driver.get(f"{ui_server.url}/")
    paused_cell = text_of(ui_driver, f'tr[data-queue="{ui_queue.name}"] td.paused')
    assert paused_cell.strip(), "td.paused shows nothing for a paused queue"

    bulk(ui_driver, ui_server, ui_queue, "resume", ui_screenshot)
    wait_until(lambda: not ui_queue.is_paused(), timeout=TIMEOUT, what="the queue resumed")


def test_open_trace_links_to_the_jobs_trace(
    ui_serve: Callable[..., LiveServer],
    ui_driver: WebDriver,
    ui_queue: SyncQueue,
    ui_screenshot: Callable[[str], Path],
) -> None:
    trace_id = uuid.uuid4().hex
    port = free_port()
    # A URL of the live server itself: whatever it answers, the browser lands there.
    server = ui_serve(port=port, trace_url=f"http://127.0.0.1:{port}/trace-viewer/{{trace_id}}")
    ui_queue.hooks.add(Traceparent(trace_id))
    job = ui_queue.add("succeed", {"traced": True})
    assert job.headers["traceparent"].split("-")[1] == trace_id

    login(ui_driver, server)
    ui_driver.get(f"{server.url}/q/{ui_queue.name}/jobs/{job.id}")
    assert trace_id in str(attribute(ui_driver, "a#open-trace", "href"))
    ui_screenshot("job-traced")
    click(ui_driver, "a#open-trace")
    if len(ui_driver.window_handles) > 1:  # target=_blank
        ui_driver.switch_to.window(ui_driver.window_handles[-1])
    waiter(ui_driver).until(lambda d: trace_id in d.current_url)
    assert ui_driver.current_url.startswith(f"{server.url}/trace-viewer/")


def test_mounted_under_a_path(
    ui_serve: Callable[..., LiveServer],
    ui_driver: WebDriver,
    ui_queue: SyncQueue,
    ui_screenshot: Callable[[str], Path],
) -> None:
    """``app.mount("/queues", queue_ui(...))``: links, forms and the confirmation page
    stay under /queues."""
    server = ui_serve(mount="/queues")
    ui_queue.add("succeed")
    login(ui_driver, server)
    assert ui_driver.current_url.startswith(server.url)
    bulk(ui_driver, server, ui_queue, "pause", ui_screenshot)
    try:  # the confirmation form must post under /queues too
        waiter(ui_driver).until(lambda d: "done=pause" in d.current_url)
    except TimeoutException:
        raise AssertionError(f"confirming went to {ui_driver.current_url}") from None
    assert ui_driver.current_url.startswith(f"{server.url}/q/{ui_queue.name}")
    assert ui_queue.is_paused()
    click(ui_driver, f'a[href="/queues/q/{ui_queue.name}"]')
    waiter(ui_driver).until(lambda d: d.current_url == f"{server.url}/q/{ui_queue.name}")
