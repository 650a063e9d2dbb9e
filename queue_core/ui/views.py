"""The pages: the overview of every queue, a queue's jobs, one job, the login form.

Each reads only what it shows (``data.py``: counts and pages straight from Redis). The
live parts of a page are fragments that ``live.py`` renders again on every change.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from queue_core.job import JobState
from queue_core.keys import QueueKeys
from queue_core.ui import data
from queue_core.ui.links import fill

if TYPE_CHECKING:
    from queue_core.ui.app import Browser

__all__ = [
    "STATES",
    "job_context",
    "job_page",
    "login_page",
    "overview",
    "overview_context",
    "queue_context",
    "queue_page",
]

STATES = tuple(s.value for s in JobState if s is not JobState.UNKNOWN)
PER_PAGE = (20, 50, 100, 200)
NOTICES = {  # what ?done= may say after an action (never echoed from the request)
    "retry": "Retried: the job is waiting to run again.",
    "promote": "Promoted: the job is waiting to run now.",
    "cancel": "Cancel requested.",
    "remove": "Removed.",
    "retry_failed": "Failed jobs sent back to run.",
    "clean": "Finished jobs removed.",
    "pause": "Paused: workers take no new jobs from this queue.",
    "resume": "Resumed.",
    "drain": "Waiting jobs removed.",
}


async def queue_names(browser: Browser) -> list[str]:
    if browser.queue_names is not None:
        return list(browser.queue_names)
    return await data.discover_queues(browser.client, browser.prefix)


async def overview_context(browser: Browser) -> dict[str, Any]:
    summaries = await data.queue_summaries(
        browser.client, browser.prefix, await queue_names(browser)
    )
    return {"summaries": summaries, "states": STATES}


async def overview(browser: Browser, request: Request) -> Response:
    caller = await browser.guard(request)
    if isinstance(caller, Response):
        return caller
    context = await overview_context(browser)
    return browser.live_page(request, "overview.html", "_overview_table.html", context, caller)


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(value))) if value else default
    except ValueError:
        return default


def queue_query(request: Request) -> dict[str, Any]:
    params = request.query_params
    state = params.get("state", "waiting")
    per_page = _int(params.get("per_page"), 50, 1, 200)
    return {
        "state": state if state in STATES else "waiting",
        "page": _int(params.get("page"), 1, 1, 10**9),
        "per_page": per_page if per_page in PER_PAGE else 50,
        "order": "oldest" if params.get("order") == "oldest" else "newest",
        "search": params.get("search", "").strip()[:200],
    }


async def queue_context(browser: Browser, name: str, query: dict[str, Any]) -> dict[str, Any]:
    queue = browser.queue(name)
    (summary,) = await data.queue_summaries(browser.client, browser.prefix, [name])
    if query["search"]:
        jobs = await data.search_jobs(queue, query["state"], query["search"])
        page = None
    else:
        page = await data.list_jobs(
            queue,
            query["state"],
            page=query["page"],
            per_page=query["per_page"],
            order=query["order"],
        )
        jobs = page.jobs
    return {
        "queue": name,
        "summary": summary,
        "jobs": jobs,
        "job_page": page,
        "query": query,
        "states": STATES,
        "per_page_choices": PER_PAGE,
    }


async def queue_page(browser: Browser, request: Request) -> Response:
    caller = await browser.guard(request)
    if isinstance(caller, Response):
        return caller
    name = request.path_params["queue"]
    if not await browser.client.exists(*QueueKeys(name, browser.prefix).all()):
        missing = {"message": f"No queue {name!r} under prefix {browser.prefix!r}."}
        return browser.page(request, "error.html", missing, status_code=404, caller=caller)
    context = await queue_context(browser, name, queue_query(request))
    context["notice"] = NOTICES.get(request.query_params.get("done", ""))
    return browser.live_page(request, "queue.html", "_queue_live.html", context, caller)


def _shown(browser: Browser, value: Any, field: str, job: Any) -> Any:
    return browser.redact(value, field, job) if browser.redact is not None else value


async def job_context(browser: Browser, name: str, job_id: str) -> dict[str, Any] | None:
    detail = await data.job_detail(browser.queue(name), job_id)
    if detail is None:
        return None
    job = detail.job
    attempts = list(getattr(job, "errors", None) or [])
    return {
        "queue": name,
        "detail": detail,
        "job": job,
        "data": _shown(browser, job.data, "data", job),
        "return_value": _shown(browser, job.return_value, "return_value", job),
        "progress": _shown(browser, job.progress, "progress", job),
        "attempts": attempts,
        "options": {
            k: v for k, v in dataclasses.asdict(job.options).items() if v not in (None, {}, ())
        },
        "trace_link": fill(browser.trace_url, trace_id=detail.trace_id, job_id=job.id, queue=name),
        "logs_link": fill(browser.logs_url, trace_id=detail.trace_id, job_id=job.id, queue=name),
        "can": {
            "retry": job.state in (JobState.FAILED, JobState.COMPLETED),
            "promote": job.state is JobState.DELAYED,
            "cancel": job.state
            in (JobState.WAITING, JobState.ACTIVE, JobState.DELAYED, JobState.WAITING_CHILDREN),
            "remove": job.state is not JobState.ACTIVE,
        },
    }


async def job_page(browser: Browser, request: Request) -> Response:
    caller = await browser.guard(request)
    if isinstance(caller, Response):
        return caller
    name, job_id = request.path_params["queue"], request.path_params["job_id"]
    context = await job_context(browser, name, job_id)
    if context is None:
        return browser.page(
            request,
            "error.html",
            {"message": f"No job {job_id!r} in queue {name!r}.", "queue": name},
            status_code=404,
            caller=caller,
        )
    context["notice"] = NOTICES.get(request.query_params.get("done", ""))
    return browser.live_page(request, "job.html", "_job_live.html", context, caller)


async def login_page(browser: Browser, request: Request) -> Response:
    session = browser.sessions.load(request)
    return browser.page(
        request,
        "login.html",
        {"message": "", "next": request.query_params.get("next", "/")},
        session=session,
    )
