"""``queue-core worker``: run workers from the command line.

``queue-core worker MODULE:ATTRIBUTE`` runs the Workers that the attribute names (see
``cli/target.py``: a Worker, a list of them, or a factory), or, with ``--queue``, the
processor it names on each queue given. All the workers of a process share one event
loop (``cli/running.py``); ``--processes N`` runs N such processes under a supervisor
(``cli/supervisor.py``), ``--reload`` restarts them when a ``.py`` file changes, and
``--health-port`` serves a probe that fails when the event loop is stuck
(``cli/health.py``).

Exit codes:

- 0: stopped by SIGTERM/SIGINT, ``--burst`` found the queues empty, or ``--check`` passed;
- 1: a worker failed unexpectedly (traceback logged), or the supervisor gave up on a
  child that kept crashing at start;
- 2: bad arguments, or a target that names nothing usable (no such module or attribute,
  not a Worker or processor), or the health port cannot be listened on;
- 3: Redis unreachable, refusing the connection or its credentials, or older than 6.2;
- 7: the target's code raised: its module on import, or its factory (the traceback
  is printed, then the one-line error).
"""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import AsyncExitStack
from typing import Annotated, Final, NoReturn

import typer
from redis.exceptions import RedisError

from queue_core.cli.app import app
from queue_core.cli.common import EXIT_REDIS, EXIT_USAGE, fail
from queue_core.cli.health import Probe
from queue_core.cli.running import ProcessRunner
from queue_core.cli.supervisor import INDEX_ENV, SUPERVISOR_ENV, Supervisor
from queue_core.cli.target import (
    BadTargetError,
    Target,
    TargetCodeError,
    WorkerSettings,
    load_target,
)
from queue_core.connection import DEFAULT_REDIS_TIMEOUT, check_server, redis_errors
from queue_core.errors import (
    ClusterClientRequiredError,
    InvalidOptionError,
    QueueError,
    RedisFullError,
    RedisUnavailableError,
)
from queue_core.log import configure_logging, get_logger
from queue_core.worker import Worker

__all__ = ["EXIT_FAILED", "EXIT_TARGET_CODE", "worker"]

EXIT_FAILED: Final = 1
EXIT_TARGET_CODE: Final = 7

_log = get_logger("queue_core.cli.worker")

_PROCESSOR = "Processor target (with --queue)"
_RUN = "Running"
_PROBE = "Health probe"
# The flags that build Workers: a Worker or a factory target has its own settings.
_WORKER_FLAGS: Final = (
    "queue",
    "concurrency",
    "pool",
    "pool_size",
    "lock_duration",
    "shutdown_timeout",
    "redis",
    "prefix",
)

TargetArg = Annotated[
    str,
    typer.Argument(
        metavar="MODULE:ATTRIBUTE",
        help="A Worker, a list of Workers or a factory of them (app.jobs:worker); with "
        "--queue, a processor or a mapping of job names to processors (app.jobs:process).",
        show_default=False,
    ),
]


@app.command(no_args_is_help=True)
def worker(
    *,
    ctx: typer.Context,
    target: TargetArg,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            "-q",
            help="A queue to work on (repeat for several): one Worker per queue runs the "
            "target as its processor.",
            rich_help_panel=_PROCESSOR,
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            help="Jobs in flight per queue in each process.",
            show_default="1",
            rich_help_panel=_PROCESSOR,
        ),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(
            help="Where plain def processors run: thread, or process (CPU-bound work: a "
            "pool of child processes, one job each; a crash or timeout costs one job).",
            show_default="thread",
            rich_help_panel=_PROCESSOR,
        ),
    ] = None,
    pool_size: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Child processes of --pool process.",
            show_default="the concurrency",
            rich_help_panel=_PROCESSOR,
        ),
    ] = None,
    lock_duration: Annotated[
        float | None,
        typer.Option(
            help="Seconds a running job's lock lasts unless renewed.",
            show_default="30",
            rich_help_panel=_PROCESSOR,
        ),
    ] = None,
    shutdown_timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds running jobs may take to finish after SIGTERM.",
            show_default="30",
            rich_help_panel=_PROCESSOR,
        ),
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            "--redis",
            envvar="REDIS_URL",
            show_envvar=True,
            help="Redis URL.",
            show_default="redis://127.0.0.1:6379/0",
            rich_help_panel=_PROCESSOR,
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option(
            help="Key prefix of the queues.", show_default="qc", rich_help_panel=_PROCESSOR
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            "-p",
            min=1,
            help="Run this many worker processes under a supervisor that forwards signals "
            "and restarts a crashed one.",
            rich_help_panel=_RUN,
        ),
    ] = 1,
    burst: Annotated[
        bool,
        typer.Option(
            "--burst",
            help="Exit (0) once no job is waiting or due and none is running here.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Import the target, connect to Redis, print what would run, and exit.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="Development: restart the worker processes when a .py file under the "
            "current directory changes.",
            rich_help_panel=_RUN,
        ),
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option(
            help="DEBUG, INFO, WARNING or ERROR.",
            show_default="$QUEUE_CORE_LOG_LEVEL or INFO",
            rich_help_panel=_RUN,
        ),
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve /livez and /readyz on this port (process i of --processes: port + i).",
            rich_help_panel=_PROBE,
        ),
    ] = None,
    health_host: Annotated[
        str, typer.Option(help="Address the probe listens on.", rich_help_panel=_PROBE)
    ] = "0.0.0.0",  # noqa: S104 - probes come from outside the container
    health_max_lag: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds the event loop may go without a beat before /livez fails.",
            rich_help_panel=_PROBE,
        ),
    ] = 10.0,
) -> None:
    """Run workers: the Workers MODULE:ATTRIBUTE names, or its processor on each --queue.

    SIGTERM or SIGINT stops gracefully (no new job; running jobs get their shutdown
    timeout); a second signal stops at once. Exit codes: 0 stopped, burst done or check
    passed; 1 a worker failed; 2 bad arguments or target; 3 Redis unreachable or refusing;
    7 the target's module (or factory) raised, its traceback printed.
    """
    try:
        configure_logging(level=log_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-level") from None
    settings = None
    if queue:
        settings = WorkerSettings(
            queues=tuple(dict.fromkeys(queue)),
            redis=redis,
            prefix=prefix,
            concurrency=concurrency,
            pool=pool,
            pool_size=pool_size,
            lock_duration=lock_duration,
            shutdown_timeout=shutdown_timeout,
        )
    else:
        _refuse_worker_flags(ctx, target)
    index = os.environ.get(INDEX_ENV)
    if index is None and not check and (processes > 1 or reload):
        # The children re-run this very command line (see cli/supervisor.py).
        raise typer.Exit(Supervisor(sys.argv[1:], processes, reload=reload).run())
    loaded = _load(target, settings)
    if check:
        asyncio.run(_check(loaded, processes))
        return
    probe = None
    if health_port is not None:
        probe = _start_probe(health_host, health_port + int(index or 0), health_max_lag)
    supervisor = os.environ.get(SUPERVISOR_ENV)
    try:
        asyncio.run(_serve(loaded, burst, probe, int(supervisor) if supervisor else None))
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were in place
        raise typer.Exit(130) from None
    finally:
        if probe is not None:
            probe.stop()


def _refuse_worker_flags(ctx: typer.Context, target: str) -> None:
    for name in _WORKER_FLAGS:
        # --redis may come from $REDIS_URL, which a Worker target's own Workers read too.
        source = ctx.get_parameter_source(name)  # by name: typer may vendor its own click
        if source is not None and source.name == "COMMANDLINE":
            flag = "--" + name.replace("_", "-")
            raise typer.BadParameter(
                f"{flag} builds Workers for a processor target (with --queue); {target} "
                "names Workers (or a factory of them) that have their own settings",
                param_hint=flag,
            )


def _load(spec: str, settings: WorkerSettings | None) -> Target:
    try:
        return load_target(spec, settings)
    except BadTargetError as exc:
        fail(EXIT_USAGE, str(exc))
    except TargetCodeError as exc:
        _fail_in_target(exc)


def _fail_in_target(exc: TargetCodeError) -> NoReturn:
    sys.stderr.write(exc.details)
    if not exc.details.endswith("\n"):
        sys.stderr.write("\n")
    fail(EXIT_TARGET_CODE, str(exc))


async def _build(target: Target, stack: AsyncExitStack) -> list[Worker]:
    try:
        return await target.build(stack)
    except BadTargetError as exc:
        fail(EXIT_USAGE, str(exc))
    except TargetCodeError as exc:
        _fail_in_target(exc)
    except InvalidOptionError as exc:  # a flag the Worker refuses (--prefix, ...)
        fail(EXIT_USAGE, str(exc))


def _start_probe(host: str, port: int, max_lag: float) -> Probe:
    probe = Probe(host, port, max_lag)
    try:
        probe.start()
    except OSError as exc:
        fail(EXIT_USAGE, f"cannot serve the health probe on {host}:{port}: {exc}")
    return probe


async def _serve(target: Target, burst: bool, probe: Probe | None, supervisor: int | None) -> None:
    async with AsyncExitStack() as stack:
        workers = await _build(target, stack)
        runner = ProcessRunner(workers, burst=burst, probe=probe, supervisor_pid=supervisor)
        try:
            await runner.run()
        except Exception as exc:
            if _redis_refused(exc):
                fail(EXIT_REDIS, str(exc))
            error = f"{type(exc).__name__}: {exc}"
            _log.exception("worker_process_failed", error=error)
            fail(EXIT_FAILED, f"a worker failed: {error}")


def _redis_refused(exc: Exception) -> bool:
    """How a worker's start reports Redis: unreachable, refusing credentials or a command,
    a Cluster redirect, full, or too old (a plain QueueError naming Redis)."""
    typed = (RedisUnavailableError, ClusterClientRequiredError, RedisFullError)
    return isinstance(exc, typed) or (
        isinstance(exc, QueueError)
        and (isinstance(exc.__cause__, RedisError) or "Redis" in str(exc))
    )


async def _check(target: Target, processes: int) -> None:
    """Connect each worker's client as its start would, then print what would run."""
    async with AsyncExitStack() as stack:
        workers = await _build(target, stack)
        lines = []
        try:
            for w in workers:
                where = f"{w.server_address}:{w.server_port}"
                try:
                    with redis_errors(f"connecting to Redis at {where}", DEFAULT_REDIS_TIMEOUT):
                        async with asyncio.timeout(DEFAULT_REDIS_TIMEOUT):
                            version = await _server_version(w)
                except QueueError as exc:
                    fail(EXIT_REDIS, str(exc))
                lines.append(
                    f"queue {w.name}: concurrency {w.concurrency}, prefix {w.keys.prefix}, "
                    f"Redis {version} at {where}"
                )
        finally:
            for w in workers:
                await w.client.aclose()
    for line in lines:
        typer.echo(line)
    count = len(workers)
    typer.echo(
        f"ok: {count} worker{'s' if count > 1 else ''} "
        f"in {processes} process{'es' if processes > 1 else ''}"
    )


async def _server_version(w: Worker) -> str:
    client = w.client
    initialize = getattr(client, "initialize", None)
    if initialize is not None:  # a cluster client: the slot map first
        await initialize()
    await check_server(client)
    await client.exists(w.keys["meta"])  # a plain client on the wrong Cluster node: MOVED
    info = await client.info("server")
    return str(info.get("redis_version", "?"))
