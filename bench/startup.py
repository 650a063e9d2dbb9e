"""Worker start-up from the command line: ``queue-core worker`` to its first job done.

    python -m bench.startup [--starts 20] [--python PYTHON] [--redis URL] [--json]

``make bench`` runs it as one step (``bench/run.py``, with the queue_core venv's
interpreter and the run's private Redis); alone it starts a private ``redis-server`` on a
free port (never the shared 6379) unless ``--redis`` names one.

Each start: one no-op job is enqueued on a fresh queue, then the command a deployment
runs is started as a process,

    queue-core worker bench.startup:noop --queue <queue> --redis <url>

(the console script next to ``--python``; ``python -m queue_core`` if there is none), and
the job is awaited with ``Queue.wait_until_finished`` (a blocking read of the queue's
events stream: no polling). Measured from just before the process is started:

- ``first_job_done_s``: until the job is completed (the figure ``make bench`` reports);
- ``first_job_start_s``: until the processor starts (it returns ``time.monotonic()``,
  one clock for every process on Linux);
- ``stop_s``: from SIGTERM, sent once the job is done, until the process exits (0).

One start first, not counted, warms the disk cache and writes the bytecode caches, as a
deployment's image has them. ``import_s`` is the floor under all of it: a process that
only imports the command (``python -c "import queue_core.cli.worker"``). Medians and
p90 (nearest rank) over ``--starts``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from bench import report
from queue_core import Job, Queue

__all__ = ["measure", "noop"]

ROOT: Final = Path(__file__).resolve().parent.parent
TARGET: Final = "bench.startup:noop"
FULL_STARTS: Final = 20
QUICK_STARTS: Final = 3
JOB_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 30.0
FIGURES: Final = ("first_job_done_s", "first_job_start_s", "stop_s", "import_s")


async def noop(job: Job) -> float:
    """The job the command runs: when it started."""
    return time.monotonic()


def command_prefix(python: str) -> list[str]:
    """How a deployment starts a worker: the console script of that interpreter's
    environment, else ``python -m queue_core``."""
    script = Path(python).parent / "queue-core"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [python, "-m", "queue_core"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)  # the command gets --redis
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # bytecode caches, as in a deployment
    env.pop("QUEUE_CORE_LOG_LEVEL", None)
    env["QUEUE_CORE_LOG_FORMAT"] = "json"
    return env


def summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[max(1, math.ceil(0.9 * len(ordered))) - 1]
    return {
        "median": statistics.median(ordered),
        "p90": p90,
        "min": ordered[0],
        "max": ordered[-1],
    }


async def one_start(url: str, prefix: Sequence[str], log: Path) -> dict[str, float]:
    """Enqueue a job, start the worker command, wait for the job, stop the command."""
    name = f"bench-startup-{uuid.uuid4().hex[:8]}"
    async with Queue(name, redis=url) as queue:
        job = await queue.add("noop", {})
        command = [*prefix, "worker", TARGET, "--queue", name, "--redis", url]
        with log.open("ab") as out:
            started = time.monotonic()
            process = await asyncio.create_subprocess_exec(
                *command, cwd=ROOT, env=child_env(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=out,
            )  # fmt: skip
        finished = asyncio.ensure_future(job.wait_until_finished(timeout=JOB_TIMEOUT_S))
        exited = asyncio.ensure_future(process.wait())
        try:
            # A command that exits at once (bad target, Redis refused) ends the wait too.
            await asyncio.wait((finished, exited), return_when=asyncio.FIRST_COMPLETED)
            done = time.monotonic()
            if not finished.done():
                raise RuntimeError(f"{command[0]} exited with {exited.result()} before its job")
            job_started = float(finished.result())
        except BaseException:
            finished.cancel()
            if process.returncode is None:
                process.kill()
            await exited
            raise
        process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        code = await asyncio.wait_for(exited, STOP_TIMEOUT_S)
        stopped = time.monotonic()
        if code != 0:
            raise RuntimeError(f"{command[0]} exited with {code} after SIGTERM")
        await queue.obliterate(force=True)
    return {
        "first_job_done_s": done - started,
        "first_job_start_s": job_started - started,
        "stop_s": stopped - stopping,
    }


def import_time(python: str) -> float:
    started = time.monotonic()
    subprocess.run(  # noqa: S603 - a fixed command line
        [python, "-c", "import queue_core.cli.worker"],
        cwd=ROOT,
        env=child_env(),
        check=True,
        timeout=60,
    )
    return time.monotonic() - started


async def _measure(url: str, python: str, starts: int, log: Path) -> dict[str, Any]:
    prefix = command_prefix(python)
    await one_start(url, prefix, log)  # warm-up, not counted
    samples = []
    for _ in range(starts):  # interleaved, so that both see the machine alike
        seconds = await asyncio.to_thread(import_time, python)
        samples.append({**await one_start(url, prefix, log), "import_s": seconds})
    return {
        "command": " ".join(
            [Path(prefix[0]).name, *prefix[1:], "worker", TARGET, "--queue", "Q", "--redis", "URL"]
        ),
        "starts": starts,
        "figures": {key: summary([s[key] for s in samples]) for key in FIGURES},
        "samples": samples,
        "error": "",
    }


def measure(url: str, python: str = sys.executable, starts: int = FULL_STARTS) -> dict[str, Any]:
    """``starts`` timed starts of the worker command against the Redis at ``url``; a
    failure is returned in ``error``, never raised (a benchmark run goes on without it)."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as directory:
        log = Path(directory) / "worker.log"
        try:
            return asyncio.run(_measure(url, python, starts, log))
        except Exception as exc:
            output = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            return {"starts": starts, "error": f"{type(exc).__name__}: {exc}\n{output}".strip()}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A ``redis-server`` from PATH on a free port, nothing kept on disk; its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is not on PATH (or pass --redis URL)")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        server = subprocess.Popen(  # noqa: S603 - redis-server from PATH
            [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock,
                ):
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start on port {port}")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(timeout=10)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--starts", type=int, default=FULL_STARTS, help="timed starts (20)")
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter whose queue-core runs"
    )
    parser.add_argument("--redis", help="a Redis URL (default: a private redis-server)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.starts < 1:
        parser.error("--starts must be 1 or more")
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(private_redis())
        result = measure(url, args.python, args.starts)
    print(json.dumps(result, indent=1) if args.json else report.startup_line(result))
    return 1 if result.get("error") else 0


if __name__ == "__main__":
    raise SystemExit(main())
