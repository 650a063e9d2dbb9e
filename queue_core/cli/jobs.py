"""``queue-core jobs``: list, show, retry, remove, cancel and promote jobs of a queue.

Actions on several ids go through all of them; the exit code is that of the first one
refused (the others are still done). Job data and results are read with the JSON
serializer: a queue whose jobs use another serializer shows them as unreadable.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from queue_core.cli.app import app
from queue_core.cli.common import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Admin,
    JsonOpt,
    PrefixOpt,
    RedisOpt,
    YesOpt,
    ago,
    confirm,
    err,
    fail,
    out,
    plural,
    print_json,
    to_jsonable,
)
from queue_core.connection import DEFAULT_REDIS_TIMEOUT, redis_errors
from queue_core.errors import QueueError, RedisUnavailableError
from queue_core.flows import Dependency
from queue_core.job import Job, JobState
from queue_core.keys import QueueKeys

__all__ = ["job_json", "jobs_app"]

jobs_app = typer.Typer(help="List, show and act on jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")

STATES = tuple(s.value for s in JobState if s is not JobState.UNKNOWN)
STATE_STYLES = {
    "waiting": "cyan",
    "active": "blue",
    "delayed": "magenta",
    "completed": "green",
    "failed": "red",
    "waiting_children": "yellow",
}

QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")]
IdsArg = Annotated[list[str], typer.Argument(metavar="JOB_ID...", help="Job ids.")]


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else jsonlib.dumps(to_jsonable(value))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def job_json(job: Job) -> dict[str, Any]:
    """Every field of a job, for ``--json``."""
    return {
        "id": job.id,
        "name": job.name,
        "queue": job.queue_name,
        "state": job.state.value,
        "data": job.data,
        "options": job.options.to_wire(),
        "headers": dict(job.headers),
        "enqueued_at": job.enqueued_at,
        "ready_at": job.ready_at,
        "delayed_until": job.delayed_until,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "attempts_started": job.attempts_started,
        "attempts_made": job.attempts_made,
        "stalled_count": job.stalled_count,
        "manual_retries": job.manual_retries,
        "progress": job.progress,
        "return_value": job.return_value,
        "failed_reason": job.failed_reason,
        "error_type": job.error_type,
        "stacktrace": job.stacktrace,
        "scheduler_id": job.scheduler_id,
        "scheduled_for": job.scheduled_for,
        "parent": None if job.parent is None else str(job.parent),
        "read_error": None if job.read_error is None else str(job.read_error),
    }


def _detail(job: Job) -> str:
    if job.read_error is not None:
        return f"unreadable: {job.read_error}"
    if job.state is JobState.FAILED:
        return f"{job.error_type or 'error'}: {job.failed_reason or ''}"
    if job.state is JobState.DELAYED:
        return f"due {ago(job.delayed_until)}"
    if job.state is JobState.COMPLETED:
        return f"-> {_short(job.return_value, 40)}"
    if job.state is JobState.ACTIVE and job.progress is not None:
        return f"progress {_short(job.progress, 30)}"
    return _short(job.data, 40)


@jobs_app.command("list")
def list_jobs(
    *,
    queue: QueueArg,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", "-s", help=f"Only these states ({', '.join(STATES)})."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-l", min=1, help="At most this many.")] = 20,
    json: JsonOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Jobs of a queue, per state: waiting in run order, finished ones newest first."""
    unknown = [s for s in state or () if s not in STATES]
    if unknown:
        fail(EXIT_USAGE, f"unknown state(s) {unknown}; use {', '.join(STATES)}")
    with Admin(redis, prefix) as admin:
        found = admin.queue(queue).get_jobs(state or list(STATES), 0, limit - 1)[:limit]
    if json:
        print_json({"queue": queue, "jobs": [job_json(job) for job in found]})
        return
    grid = Table(title=f"jobs of {queue!r}", title_justify="left")
    for label in ("id", "name", "state", "attempts", "enqueued", "detail"):
        grid.add_column(label, overflow="fold" if label == "id" else "ellipsis")
    for job in found:
        grid.add_row(
            job.id,
            job.name,
            state_text(job.state.value),
            f"{job.attempts_made}/{job.options.attempts}",
            ago(job.enqueued_at),
            _detail(job),
        )
    if not found:
        grid.caption = "no jobs"
    out.print(grid)


def _logs(admin: Admin, queue: str, job_id: str) -> list[str]:
    with redis_errors("get_logs", DEFAULT_REDIS_TIMEOUT):
        raw = admin.client.hget(QueueKeys(queue, admin.prefix)["logs"], job_id)
    try:
        lines = jsonlib.loads(raw) if raw else []
    except ValueError:
        return ["(unreadable logs)"]
    return [str(line) for line in lines] if isinstance(lines, list) else []


def _dependency_json(dependency: Dependency) -> dict[str, Any]:
    return {
        "job": str(dependency.ref),
        "status": dependency.status,
        "value": dependency.value,
        "failed_reason": dependency.failed_reason,
        "error_type": dependency.error_type,
    }


@jobs_app.command("show")
def show_job(
    *,
    queue: QueueArg,
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", help="The job id.")],
    json: JsonOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Every field of one job: data, result or error, logs; a flow's parent and children."""
    with Admin(redis, prefix) as admin:
        q = admin.queue(queue)
        job = q.get_job(job_id)
        if job is None:
            fail(EXIT_NOT_FOUND, f"no job {job_id!r} in queue {queue!r}")
        logs = _logs(admin, queue, job_id)
        dependencies = q.get_dependencies(job_id)
    if json:
        document = job_json(job)
        document["logs"] = logs
        document["dependencies"] = [_dependency_json(d) for d in dependencies]
        print_json(document)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in [*_rows(job), *_flow_rows(job, dependencies)]:
        grid.add_row(label, value)
    grid.add_row("logs", "\n".join(logs) if logs else "-")
    out.print(grid)


def _rows(job: Job) -> list[tuple[str, str | Text]]:
    """``jobs show``: a job's fields, those that are set."""
    rows: list[tuple[str, str | Text]] = [
        ("id", job.id),
        ("name", job.name),
        ("queue", job.queue_name),
        ("state", state_text(job.state.value)),
        (
            "attempts",
            f"{job.attempts_made} made, {job.attempts_started} started, "
            f"of {job.options.attempts}; {job.stalled_count} stalled, "
            f"{job.manual_retries} manual retries",
        ),
        ("enqueued", f"{job.enqueued_at.isoformat()} ({ago(job.enqueued_at)})"),
    ]
    for label, when in (
        ("ready", job.ready_at),
        ("delayed until", job.delayed_until),
        ("started", job.started_at),
        ("finished", job.finished_at),
        ("scheduled for", job.scheduled_for),
    ):
        if when is not None:
            rows.append((label, f"{when.isoformat()} ({ago(when)})"))
    if job.scheduler_id:
        rows.append(("scheduler", job.scheduler_id))
    rows.append(("options", _short(job.options.to_wire(), 200)))
    if job.headers:
        rows.append(("headers", _short(dict(job.headers), 200)))
    rows.append(("data", _pretty(job.data)))
    if job.progress is not None:
        rows.append(("progress", _pretty(job.progress)))
    if job.state is JobState.COMPLETED:
        rows.append(("result", _pretty(job.return_value)))
    if job.failed_reason is not None:
        rows.append(("error", Text(f"{job.error_type}: {job.failed_reason}", style="red")))
    if job.stacktrace:
        rows.append(("stack", job.stacktrace.rstrip()))
    if job.read_error is not None:
        rows.append(("unreadable", str(job.read_error)))
    return rows


def _flow_rows(job: Job, dependencies: list[Dependency]) -> list[tuple[str, str | Text]]:
    """``jobs show``: a flow's parent, and each child with its outcome."""
    rows: list[tuple[str, str | Text]] = []
    if job.parent is not None:
        rows.append(("parent", str(job.parent)))
    for dependency in dependencies:
        line = f"{dependency.ref} {dependency.status}"
        if dependency.failed_reason:
            line += f": {dependency.failed_reason}"
        elif dependency.status == "completed":
            line += f" -> {_short(dependency.value, 60)}"
        rows.append(("child", line))
    return rows


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return jsonlib.dumps(to_jsonable(value), indent=2, ensure_ascii=False)


def _each(admin: Admin, ids: list[str], act: Callable[[str], object], done: str) -> None:
    """``act`` on each id, one line each (its result if a string, else ``done``); exit
    with the first refusal's code."""
    code = 0
    for job_id in ids:
        try:
            result = act(job_id)
            out.print(f"{job_id}: {result if isinstance(result, str) else done}")
        except RedisUnavailableError:
            raise
        except QueueError as exc:
            failed, message = admin.explain(exc)
            typer.echo(f"error: {message}", err=True)
            code = code or failed
    if code:
        raise typer.Exit(code)


@jobs_app.command("retry")
def retry(
    *,
    queue: QueueArg,
    job_ids: Annotated[
        list[str] | None, typer.Argument(metavar="[JOB_ID...]", help="Job ids.")
    ] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Retry every failed job, in chunks.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="With --all-failed: at most this many.")
    ] = None,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Send failed (or completed) jobs back to waiting, their attempts reset."""
    if bool(job_ids) == all_failed:
        fail(EXIT_USAGE, "give job ids or --all-failed (one of them)")
    with Admin(redis, prefix) as admin:
        q = admin.queue(queue)
        if job_ids:
            _each(admin, job_ids, q.retry_job, "retried")
            return
        total = q.get_counts()["failed"]
        total = min(total, limit) if limit else total
        with _progress() as bar:
            task = bar.add_task("retrying", total=total)
            retried = q.retry_jobs(
                "failed", limit=limit, on_progress=lambda n: bar.update(task, completed=n)
            )
        out.print(f"{queue}: retried {plural(retried, 'failed job')}")


def _progress() -> Progress:
    """A bar on stderr, drawn only on a terminal (stdout keeps the one-line result)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@jobs_app.command("remove")
def remove(
    *,
    queue: QueueArg,
    job_ids: IdsArg,
    yes: YesOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Remove jobs in any state but running (cancel those first), with their logs."""
    with Admin(redis, prefix) as admin:
        q = admin.queue(queue)
        confirm(f"Remove {len(job_ids)} job(s) from {queue!r} for good?", yes)
        _each(admin, job_ids, q.remove_job, "removed")


@jobs_app.command("cancel")
def cancel(
    *,
    queue: QueueArg,
    job_ids: IdsArg,
    reason: Annotated[str, typer.Option("--reason", help="Why, kept with the job.")] = "",
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Cancel jobs: a waiting or delayed one fails at once, a running one is signalled."""
    with Admin(redis, prefix) as admin:
        q = admin.queue(queue)
        _each(admin, job_ids, lambda i: q.cancel(i, reason), "cancelled")


@jobs_app.command("promote")
def promote(
    *,
    queue: QueueArg,
    job_ids: IdsArg,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Make delayed jobs ready now."""
    with Admin(redis, prefix) as admin:
        q = admin.queue(queue)
        _each(admin, job_ids, q.promote_job, "promoted")
