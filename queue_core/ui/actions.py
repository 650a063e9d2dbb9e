"""What an operator does from the browser: every action is a POST that passed the guard
(signed in, CSRF value, not read-only). Actions that touch many jobs, or remove one, show
a confirmation page first and act only on its ``confirmed=1`` resubmission.

Each action runs ``acting_as(user)``, so hooks (queue_otel's operation spans) record who
did it, and is logged on ``queue_core.ui`` with the user and the outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from queue_core.errors import JobNotFoundError, JobStateError, QueueError
from queue_core.hooks import acting_as
from queue_core.log import get_logger
from queue_core.ui.render import base_of

if TYPE_CHECKING:
    from queue_core.ui.app import Browser, Caller

__all__ = ["CLEAN_GRACE", "bulk_action", "job_action", "login", "logout"]

log = get_logger("queue_core.ui")

JOB_ACTIONS = ("retry", "promote", "cancel", "remove")
BULK_ACTIONS = ("retry_failed", "clean", "pause", "resume", "drain")
CLEAN_STATES = ("completed", "failed")
CLEAN_GRACE = {  # seconds -> label: the choices of the clean form
    0: "any age",
    3600: "older than 1 hour",
    86400: "older than 1 day",
    604800: "older than 7 days",
}
CONFIRM = {
    "remove": "Remove job {job} of {queue} for good?",
    "retry_failed": "Send every failed job of {queue} back to run?",
    "clean": "Remove the {state} jobs of {queue} finished {grace}?",
    "pause": "Pause {queue}? Workers finish what they run and take no new job.",
    "resume": "Resume {queue}?",
    "drain": "Remove every waiting job of {queue}? (Active and delayed jobs stay.)",
}


def _path(queue: str, job_id: str | None = None) -> str:
    path = "/q/" + quote(queue, safe="")
    return path + "/jobs/" + quote(job_id, safe="") if job_id is not None else path


async def _act(caller: Caller, queue: str, action: str, job_id: str | None, run: Any) -> str:
    """Run the action as the caller; '' or the refusal shown to them."""
    where = {"user": caller.user, "action": action, "queue": queue, "job_id": job_id}
    try:
        with acting_as(caller.user):
            result = await run()
    except (JobNotFoundError, JobStateError) as exc:
        log.info("ui action refused", **where, error=str(exc))
        return str(exc)
    except QueueError as exc:
        log.warning("ui action failed", **where, error=repr(exc))
        return f"{type(exc).__name__}: {exc}"
    log.info("ui action", **where, result=result)
    return ""


def _confirm(
    browser: Browser, request: Request, caller: Caller, message: str, fields: dict[str, str]
) -> Response:
    return browser.page(
        request,
        "confirm.html",
        {
            "message": message,
            "fields": fields,
            "action_url": _strip_base(request, request.url.path),
        },
        caller=caller,
    )


async def job_action(browser: Browser, request: Request) -> Response:
    caller = await browser.guard(request, action=True)
    if isinstance(caller, Response):
        return caller
    name, job_id = request.path_params["queue"], request.path_params["job_id"]
    form = await request.form()
    action = str(form.get("action", ""))
    if action not in JOB_ACTIONS:
        return browser.refuse(request, caller, f"Unknown action {action!r}.")
    if action == "remove" and form.get("confirmed") != "1":
        message = CONFIRM["remove"].format(job=job_id, queue=name)
        return _confirm(browser, request, caller, message, {"action": action})
    queue = browser.queue(name)
    runs = {
        "retry": lambda: queue.retry_job(job_id),
        "promote": lambda: queue.promote_job(job_id),
        "cancel": lambda: queue.cancel(job_id, reason=f"cancelled by {caller.user}"),
        "remove": lambda: queue.remove_job(job_id),
    }
    refusal = await _act(caller, name, action, job_id, runs[action])
    if refusal:
        return browser.refuse(request, caller, refusal)
    if action == "remove":
        return browser.redirect(request, _path(name) + "?done=remove", caller)
    return browser.redirect(request, f"{_path(name, job_id)}?done={action}", caller)


async def bulk_action(browser: Browser, request: Request) -> Response:
    caller = await browser.guard(request, action=True)
    if isinstance(caller, Response):
        return caller
    name = request.path_params["queue"]
    form = await request.form()
    action = str(form.get("action", ""))
    if action not in BULK_ACTIONS:
        return browser.refuse(request, caller, f"Unknown action {action!r}.")
    state = str(form.get("state", "completed"))
    try:
        grace = int(str(form.get("grace", "0")))
    except ValueError:
        grace = -1
    if action == "clean" and (state not in CLEAN_STATES or grace not in CLEAN_GRACE):
        return browser.refuse(request, caller, "Clean takes completed or failed jobs and an age.")
    if form.get("confirmed") != "1":
        message = CONFIRM[action].format(queue=name, state=state, grace=CLEAN_GRACE.get(grace))
        fields = {"action": action, "state": state, "grace": str(grace)}
        return _confirm(browser, request, caller, message, fields)
    queue = browser.queue(name)
    runs = {
        "retry_failed": lambda: queue.retry_jobs("failed"),
        "clean": lambda: queue.clean(state, grace),
        "pause": queue.pause,
        "resume": queue.resume,
        "drain": queue.drain,
    }
    refusal = await _act(caller, name, action, None, runs[action])
    if refusal:
        return browser.refuse(request, caller, refusal)
    target = f"{_path(name)}?done={action}"
    if action == "retry_failed":
        target += "&state=waiting"
    elif action == "clean":
        target += f"&state={state}"
    return browser.redirect(request, target, caller)


async def login(browser: Browser, request: Request) -> Response:
    """The login form's POST (``TokenAuth``): a right token signs the session in."""
    from queue_core.ui.auth import TokenAuth  # noqa: PLC0415 - only this form needs it

    session = browser.sessions.load(request)
    form = await request.form()
    target = str(form.get("next", "/"))
    if not target.startswith("/") or target.startswith("//"):
        target = "/"  # never an open redirect to another site
    auth = browser.auth
    token = str(form.get("token", ""))
    csrf_ok = session.csrf_ok(str(form.get("csrf", "")))
    if not isinstance(auth, TokenAuth) or not csrf_ok or not auth.matches(token):
        log.warning("ui sign-in refused", reason="csrf" if not csrf_ok else "token")
        return browser.page(
            request,
            "login.html",
            {"message": "That token is not right.", "next": target},
            status_code=401,
            session=session,
        )
    session.user, session.changed = auth.user, True
    log.info("ui sign-in", user=auth.user)
    from queue_core.ui.app import Caller  # noqa: PLC0415 - import cycle

    return browser.redirect(request, _strip_base(request, target), Caller(auth.user, session))


def _strip_base(request: Request, target: str) -> str:
    base = base_of(request)
    return target[len(base) :] or "/" if base and target.startswith(base) else target


async def logout(browser: Browser, request: Request) -> Response:
    caller = await browser.guard(request, action=True, writes=False)
    if isinstance(caller, Response):
        return caller
    caller.session.user, caller.session.changed = None, True
    return browser.redirect(request, "/login", caller)
