"""Commands that operate queues: ``stats`` (cli/stats.py), ``jobs ...`` (cli/jobs.py),
``pause``, ``resume``, ``drain``, ``clean``, ``obliterate``, ``workers``, ``schedulers
list/remove`` and ``flow`` (here). Each takes ``--redis`` (default ``$REDIS_URL``, else
``redis://127.0.0.1:6379/0``) and ``--prefix`` (default ``qc``), and calls the library's
own operations (``SyncQueue``): the same atomic scripts as an application's.

Destructive commands (``drain``, ``clean``, ``obliterate``, ``jobs remove``, ``schedulers
remove``) ask for confirmation unless ``--yes``; when stdin is not a terminal and
``--yes`` is missing they refuse (exit 2) rather than guess.

Errors are one line on stderr, ``error: ...``, with these exit codes:

- 0: done;
- 1: a confirmation answered no (nothing changed), or an unexpected queue error;
- 2: bad arguments (an unknown option or state, a bad duration, URL or prefix), or a
  destructive command without ``--yes`` off a terminal;
- 3: Redis unreachable, not answering in time, full, or a Cluster node (the command line
  talks to one Redis, not a Cluster);
- 4: unknown queue: no key of it exists under the prefix (a typo, or the wrong
  ``--prefix`` or database);
- 5: unknown job (or scheduler);
- 6: refused: the job's state forbids the action (retrying an active job, promoting one
  that is not delayed...), or ``obliterate`` found running jobs (``--force``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from queue_core.cli import jobs as _jobs  # noqa: F401 - registers `jobs`
from queue_core.cli import stats as _stats  # noqa: F401 - registers `stats`
from queue_core.cli.app import app
from queue_core.cli.common import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    EXIT_NOT_FOUND,
    Admin,
    ChunkProgress,
    JsonOpt,
    PrefixOpt,
    RedisOpt,
    YesOpt,
    ago,
    confirm,
    err,
    fail,
    out,
    parse_duration,
    plural,
    print_json,
    seconds,
)
from queue_core.cli.jobs import job_json, state_text
from queue_core.flows import FlowJob
from queue_core.job_actions import CLEANABLE_STATES

__all__ = ["schedulers_app"]

QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")]


@app.command()
def pause(
    *, queue: QueueArg, redis: RedisOpt = DEFAULT_URL, prefix: PrefixOpt = DEFAULT_PREFIX
) -> None:
    """Stop every worker of the queue, in any process, from taking jobs (adds go on)."""
    with Admin(redis, prefix) as admin:
        changed = admin.queue(queue).pause()
    out.print(f"{queue}: paused" if changed else f"{queue}: was paused already")


@app.command()
def resume(
    *, queue: QueueArg, redis: RedisOpt = DEFAULT_URL, prefix: PrefixOpt = DEFAULT_PREFIX
) -> None:
    """Let the queue's workers take jobs again."""
    with Admin(redis, prefix) as admin:
        changed = admin.queue(queue).resume()
    out.print(f"{queue}: resumed" if changed else f"{queue}: was not paused")


def _bar(description: str, total: int | None) -> tuple[Progress, ChunkProgress]:
    """A progress bar on stderr (drawn on a terminal only) advanced by each chunk."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f} jobs"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = progress.add_task(description, total=total)
    return progress, ChunkProgress(lambda n: progress.advance(task, n))


@app.command()
def drain(
    *,
    queue: QueueArg,
    delayed: Annotated[bool, typer.Option("--delayed", help="Delayed jobs too.")] = False,
    yes: YesOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Remove every waiting job (and delayed, with --delayed); running ones finish."""
    with Admin(redis, prefix) as admin:
        counts = admin.queue(queue).get_counts()
        total = counts["waiting"] + (counts["delayed"] if delayed else 0)
        what = "waiting and delayed" if delayed else "waiting"
        confirm(f"Remove the {total} {what} jobs of {queue!r}?", yes)
        progress, hook = _bar("draining", total)
        with progress:
            removed = admin.queue(queue, check=False, hooks=(hook,)).drain(delayed)
    out.print(f"{queue}: drained {plural(removed, 'job')}")


@app.command()
def clean(
    *,
    queue: QueueArg,
    state: Annotated[
        str, typer.Option("--state", "-s", help=f"One of {', '.join(CLEANABLE_STATES)}.")
    ],
    grace: Annotated[
        str, typer.Option("--grace", "-g", help="Keep jobs younger than this: 90s, 15m, 1h, 7d.")
    ],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many.")] = None,
    yes: YesOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Remove the jobs of a state older than --grace (finished ones by finish time)."""
    if state not in CLEANABLE_STATES:
        raise typer.BadParameter(f"use one of {', '.join(CLEANABLE_STATES)}", param_hint="--state")
    age = parse_duration(grace)
    with Admin(redis, prefix) as admin:
        admin.queue(queue)
        confirm(
            f"Remove the {state} jobs of {queue!r} older than {seconds(age.total_seconds())}?", yes
        )
        progress, hook = _bar("cleaning", None)
        with progress:
            removed = admin.queue(queue, check=False, hooks=(hook,)).clean(state, age, limit)
    out.print(f"{queue}: cleaned {plural(len(removed), state + ' job')}")


@app.command()
def obliterate(
    *,
    queue: QueueArg,
    force: Annotated[
        bool, typer.Option("--force", help="Even while jobs run (they are removed too).")
    ] = False,
    yes: YesOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Remove the queue: every job and every key of it, in chunks."""
    with Admin(redis, prefix) as admin:
        total = sum(admin.queue(queue).get_counts().values())
        confirm(f"Obliterate queue {queue!r} with its {total} jobs, every key of it?", yes)
        progress, hook = _bar("obliterating", total)
        with progress:
            removed = admin.queue(queue, check=False, hooks=(hook,)).obliterate(force)
    out.print(f"{queue}: obliterated, {plural(removed, 'job')} removed")


@app.command()
def workers(
    *,
    queues: Annotated[
        list[str] | None,
        typer.Argument(metavar="[QUEUE...]", help="Queues; default: every queue found."),
    ] = None,
    json: JsonOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Live workers: those whose heartbeat has not expired."""
    with Admin(redis, prefix) as admin:
        names = list(queues or [])
        found = [
            w
            for name in names or admin.discover()
            for w in admin.queue(name, check=bool(names)).get_workers()
        ]
    if json:
        print_json(
            {
                "workers": [
                    {
                        "id": w.id,
                        "queue": w.queue,
                        "host": w.host,
                        "pid": w.pid,
                        "concurrency": w.concurrency,
                        "started_at": w.started_at,
                        "last_heartbeat": w.last_heartbeat,
                        "running_job_ids": list(w.running_job_ids),
                    }
                    for w in found
                ]
            }
        )
        return
    grid = Table(title="live workers", title_justify="left")
    for label in (
        "queue",
        "worker",
        "host",
        "pid",
        "concurrency",
        "running",
        "started",
        "heartbeat",
    ):
        grid.add_column(label, overflow="fold" if label == "worker" else "ellipsis")
    for w in found:
        grid.add_row(
            w.queue,
            w.id,
            w.host,
            str(w.pid),
            str(w.concurrency),
            ", ".join(w.running_job_ids) or "-",
            ago(w.started_at),
            ago(w.last_heartbeat),
        )
    if not found:
        grid.caption = "no live workers"
    out.print(grid)


schedulers_app = typer.Typer(help="Job schedulers (recurring jobs).", no_args_is_help=True)
app.add_typer(schedulers_app, name="schedulers")


@schedulers_app.command("list")
def schedulers_list(
    *,
    queue: QueueArg,
    json: JsonOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """A queue's job schedulers: schedule, runs made, next run."""
    with Admin(redis, prefix) as admin:
        found = admin.queue(queue).get_schedulers()
    if json:
        print_json(
            {
                "queue": queue,
                "schedulers": [
                    {
                        "id": s.id,
                        "name": s.name,
                        "every": s.every,
                        "cron": s.cron,
                        "tz": s.tz,
                        "start": s.start,
                        "end": s.end,
                        "limit": s.limit,
                        "catch_up": s.catch_up,
                        "count": s.count,
                        "next_run_at": s.next_run_at,
                        "pending_job_id": s.pending_job_id,
                        "data": s.data,
                    }
                    for s in found
                ],
            }
        )
        return
    grid = Table(title=f"schedulers of {queue!r}", title_justify="left")
    for label in ("id", "job name", "schedule", "runs", "next run", "pending job"):
        grid.add_column(label)
    for s in found:
        if s.every is not None:
            schedule = f"every {seconds(s.every.total_seconds())}"
        else:
            schedule = f"cron {s.cron} ({s.tz})"
        runs = f"{s.count}" + (f"/{s.limit}" if s.limit is not None else "")
        next_run = (
            "-" if s.next_run_at is None else f"{s.next_run_at.isoformat()} ({ago(s.next_run_at)})"
        )
        grid.add_row(s.id, s.name, schedule, runs, next_run, s.pending_job_id or "-")
    if not found:
        grid.caption = "no schedulers"
    out.print(grid)


@schedulers_app.command("remove")
def schedulers_remove(
    *,
    queue: QueueArg,
    scheduler_id: Annotated[
        str, typer.Argument(metavar="SCHEDULER_ID", help="The scheduler's id.")
    ],
    yes: YesOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Remove a scheduler and its pending run (if it has not started)."""
    with Admin(redis, prefix) as admin:
        q = admin.queue(queue)
        if q.get_scheduler(scheduler_id) is None:
            fail(EXIT_NOT_FOUND, f"no scheduler {scheduler_id!r} in queue {queue!r}")
        confirm(f"Remove scheduler {scheduler_id!r} of {queue!r}?", yes)
        if not q.remove_scheduler(scheduler_id):
            fail(EXIT_NOT_FOUND, f"no scheduler {scheduler_id!r} in queue {queue!r}")
    out.print(f"{scheduler_id}: removed")


def _flow_label(node: FlowJob) -> Text:
    job = node.job
    label = Text(f"{job.queue_name}:{job.id} ")
    label.append(job.name, style="bold")
    label.append(" ")
    label.append_text(state_text(job.state.value))
    if job.failed_reason:
        label.append(f" {job.failed_reason}", style="red")
    return label


def _flow_json(node: FlowJob) -> dict[str, object]:
    return {**job_json(node.job), "children": [_flow_json(c) for c in node.children]}


@app.command()
def flow(
    *,
    queue: QueueArg,
    job_id: Annotated[
        str, typer.Argument(metavar="JOB_ID", help="The job at the top of the tree to show.")
    ],
    json: JsonOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """The tree of a flow below a job, each job with its state."""
    with Admin(redis, prefix) as admin:
        top = admin.queue(queue).get_flow(job_id)
        if top is None:
            fail(EXIT_NOT_FOUND, f"no job {job_id!r} in queue {queue!r}")
    if json:
        print_json(_flow_json(top))
        return
    tree = Tree(_flow_label(top))
    pending = [(tree, child) for child in top.children]
    while pending:
        branch, node = pending.pop(0)
        sub = branch.add(_flow_label(node))
        pending += [(sub, child) for child in node.children]
    out.print(tree)
