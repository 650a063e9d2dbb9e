"""The measurements every adapter shares; standard library and redis-py only.

An adapter subclasses ``Peer`` and calls ``main(Peer)``; the runner (``bench/run.py``)
starts it as ``python -P -m bench.peers.<name> suite --redis URL --params JSON`` in the
library's venv and reads the one JSON object it prints last on stdout.

How a job's start is seen: every benchmark job calls ``mark()`` first, which writes
``time.monotonic()`` (one system-wide clock on Linux, so comparable between processes) as
one line into a named pipe (``$BENCH_FIFO``) that this harness reads. Lines are shorter
than ``PIPE_BUF``, so the writes of several processes and threads never interleave. The
pipe costs a job one ``write`` system call and keeps Redis out of the measurement.

Phases (each on a fresh queue, Redis flushed before; a failing phase is reported with its
error and the others still run):

- ``enqueue``: ``enqueue_jobs`` calls one at a time, after 100 warm-up calls; calls per
  second, p50 and p99 of each call's latency; the producer's CPU per call
  (``enqueue_cpu_ms``: ``time.process_time()`` of this process, its threads included, over
  the timed calls); Redis's CPU and commands per call, as for the workers below
  (``enqueue_redis_us``, ``enqueue_redis_commands``).
- ``bulk``: ``bulk_jobs`` jobs in bulk calls of ``bulk_batch`` (only for a real bulk API).
- ``process1``/``process2``: ``process_jobs`` jobs enqueued first (as many as the
  producer adds in ``fill_max_s``), then one (two) worker processes started; jobs per
  second from the first job's start to the last one's (a rate of work, so a library's
  start-up is not in it); ``startup_s`` is the time from starting one worker process to
  its first job's start, reported apart. A library that has not started them all within
  ``process_max_s`` is measured on the jobs it started by then (``done`` < ``jobs``).
  Worker CPU per job (``process1_cpu_ms``, ``process2_cpu_ms``): the CPU time (user +
  system, from ``/proc/<pid>/stat``, children that were waited for included) of every
  process in the worker processes' process groups (a worker's pool processes, RQ's work
  horses), from when the first jobs' marks are read to when the last are, divided by the
  jobs marked in between: start-up is not in it, and neither is the harness. Over the same
  span, Redis's CPU per job (``process1_redis_us``: ``used_cpu_user`` + ``used_cpu_sys``
  of ``INFO cpu``) and the commands it ran per job (``process1_redis_commands``: ``INFO
  commandstats``, the commands scripts and functions run counted one by one, the script
  calls themselves not), every worker sharing one Redis, as a deployment's do.
- ``pickup``: one idle worker; ``pickup_samples`` times (or until ``pickup_max_s``):
  wait, take the time, enqueue one job, read the job's own start time; p50 and p99 of the
  difference. The wait is 10 ms plus a random part as long as the slowest pick-up seen
  (20 ms at least, 1 s at most), so that a library that polls is caught at random points
  of its polling period rather than in step with it.
- ``memory``: ``used_memory`` less the client buffers (``mem_clients_normal``) from
  ``INFO memory``, before and after ``memory_jobs`` waiting jobs (after 100 warm-up jobs,
  so per-queue keys are excluded), each time with the producer closed.
- ``rss``: one worker process works through ``rss_jobs`` jobs, fed in chunks; its VmRSS
  after ``rss_warmup`` jobs and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import importlib.metadata
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import redis

FIFO_ENV = "BENCH_FIFO"
URL_ENV = "BENCH_REDIS_URL"
QUEUE_ENV = "BENCH_QUEUE"
VARIANT_ENV = "BENCH_VARIANT"
SPANS_ENV = "BENCH_SPANS_FILE"  # where an otel row's workers count the spans they export

PHASES = ("enqueue", "bulk", "process1", "process2", "pickup", "memory", "rss")
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, Linux
_WARMUP_CALLS = 100
_GATHER_S = 0.05  # marks gather this long between reads while jobs run (see _process)
_STOP_TIMEOUT = 1.0  # the measurement is over: no need to wait for a tidy exit
_START_TIMEOUT = 60.0
_PICKUP_TIMEOUT = 10.0
_LOG_TAIL = 1500


# -- inside the workers ------------------------------------------------------------------


def payload(i: int) -> dict[str, Any]:
    """The arguments of every benchmark job: small and JSON-able."""
    return {"i": i, "tag": "bench"}


def env_url() -> str:
    return os.environ[URL_ENV]


def env_queue() -> str:
    return os.environ[QUEUE_ENV]


def env_variant() -> str:
    return os.environ.get(VARIANT_ENV, "")


_WRITERS: dict[int, int] = {}  # pid -> fd of the FIFO (a forked child opens its own)


def mark() -> None:
    """Record that a job starts now. Called first by every benchmark job."""
    now = time.monotonic()
    fd = _writer()
    if fd >= 0:
        with contextlib.suppress(OSError):  # the harness went away: nothing to report to
            os.write(fd, b"%.9f\n" % now)


def _writer() -> int:
    pid = os.getpid()
    fd = _WRITERS.get(pid)
    if fd is None:
        path = os.environ.get(FIFO_ENV, "")
        try:
            # Non-blocking open fails at once when no reader is there, instead of hanging;
            # then writes block again, so a slow reader slows the worker, never drops a mark.
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC) if path else -1
            if fd >= 0:
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~os.O_NONBLOCK)
        except OSError:
            fd = -1
        _WRITERS[pid] = fd
    return fd


# -- in the harness ----------------------------------------------------------------------


@dataclass
class Params:
    enqueue_jobs: int = 2000
    bulk_jobs: int = 10_000
    bulk_batch: int = 100
    process_jobs: int = 5000
    pickup_samples: int = 200
    memory_jobs: int = 20_000
    rss_jobs: int = 0
    rss_warmup: int = 20_000
    fill_max_s: float = 4.0
    process_max_s: float = 6.0
    pickup_max_s: float = 10.0
    phase_timeout: float = 120.0
    phases: list[str] = field(default_factory=lambda: [p for p in PHASES if p != "rss"])

    @classmethod
    def from_json(cls, text: str) -> Params:
        raw = json.loads(text) if text else {}
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}")
        params = cls(**raw)
        bad = set(params.phases) - set(PHASES)
        if bad:
            raise ValueError(f"unknown phases {sorted(bad)}")
        return params


class Peer:
    """What an adapter tells the harness about its library.

    ``open``/``close`` bracket a producer for one queue; ``enqueue`` adds one job with
    ``payload(i)``; ``enqueue_bulk`` (when ``has_bulk``) adds several in one call;
    ``worker_command`` is the argv of one worker process, which finds the Redis URL, the
    queue name and the FIFO in ``$BENCH_REDIS_URL``, ``$BENCH_QUEUE`` and ``$BENCH_FIFO``.
    """

    name = ""
    distribution = ""  # for the version
    has_bulk = False
    bulk_api = ""
    concurrent_fill = False  # async producer: pre-fill with concurrent calls
    jobs_at_once = 1  # per worker process started, as benchmarked (see worker_model)

    def __init__(self, variant: str = "") -> None:
        self.variant = variant

    def version(self) -> str:
        return importlib.metadata.version(self.distribution)

    def settings(self) -> dict[str, str]:
        return {}

    def worker_model(self) -> str:
        """What one worker process started by the harness is: its processes and how many
        jobs each runs at once, as benchmarked."""
        return ""

    async def open(self, url: str, queue: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def enqueue(self, i: int) -> None:
        raise NotImplementedError

    async def enqueue_bulk(self, items: Sequence[int]) -> None:
        raise NotImplementedError

    def worker_command(self, url: str, queue: str) -> list[str]:
        raise NotImplementedError

    def worker_env(self) -> dict[str, str]:
        return {}

    async def fill(self, n: int, batch: int = 500, start: int = 0) -> None:
        """Add ``n`` jobs as fast as the library allows (not a measurement)."""
        if self.has_bulk:
            for low in range(start, start + n, batch):
                await self.enqueue_bulk(range(low, min(low + batch, start + n)))
        elif self.concurrent_fill:
            for low in range(start, start + n, 50):
                await asyncio.gather(
                    *(self.enqueue(i) for i in range(low, min(low + 50, start + n)))
                )
        else:
            for i in range(start, start + n):
                await self.enqueue(i)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def bin_command(script: str) -> str:
    """A console script of this venv (``arq``, ``celery``...)."""
    return str(Path(sys.executable).parent / script)


def module_command(module: str, *args: str) -> list[str]:
    """This venv's Python running an adapter module (``-P``: no script dir on sys.path)."""
    return [sys.executable, "-P", "-m", module, *args]


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class GroupCpu:
    """CPU time of every process in some process groups, read at one moment."""

    seconds: float
    processes: int


def group_cpu(groups: Sequence[int]) -> GroupCpu:
    """User + system CPU of the processes whose process group is in ``groups`` (each
    worker is started as a session and group leader, so its pool processes and forks are
    in its group), children they waited for included (``cutime``/``cstime``: RQ's work
    horses, which exit after each job)."""
    wanted = set(groups)
    ticks = processes = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                text = stat.read()
        except OSError:  # gone meanwhile
            continue
        # The command name (2nd field) is in brackets and may hold spaces: split after it.
        fields = text[text.rfind(b")") + 2 :].split()
        if int(fields[2]) in wanted:  # pgrp, the 5th field of stat(5)
            processes += 1
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return GroupCpu(ticks / _CLOCK_TICKS, processes)


def vm_rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Marks:
    """The reading end of the FIFO that jobs write their start times into."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "marks.fifo"
        os.mkfifo(self.path, 0o600)
        # O_RDWR: open does not wait for a writer, and reads never see end-of-file.
        self.fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.fd, _F_SETPIPE_SZ, 1 << 20)
        self._partial = b""

    def close(self) -> None:
        os.close(self.fd)

    def read(self, timeout: float) -> list[float]:
        """The marks that arrive within ``timeout`` (all those waiting, at least one if
        any comes in time)."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return []
        chunks = [self._partial]
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        complete, _, self._partial = data.rpartition(b"\n")
        return [float(line) for line in complete.split(b"\n")] if complete else []

    def drain(self) -> int:
        return len(self.read(0))


class Workers:
    """Worker processes started by the harness, each in its own process group."""

    def __init__(self, command: list[str], count: int, env: dict[str, str], logs: Path) -> None:
        self.command = command
        self.count = count
        self.env = env
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []
        self.log_paths: list[Path] = []

    def start(self) -> Workers:
        for _ in range(self.count):
            log_path = self.logs / f"worker-{uuid.uuid4().hex[:8]}.log"
            with log_path.open("wb") as log:
                self.processes.append(
                    subprocess.Popen(  # noqa: S603 - the adapter's fixed command
                        self.command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self.env,
                        start_new_session=True,
                    )
                )
            self.log_paths.append(log_path)
        return self

    def check(self) -> None:
        """Raise if a worker exited (it should run until stopped)."""
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"worker exited with status {process.returncode}: {self.log_tail()}"
                )

    def log_tail(self) -> str:
        text = "\n".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())
        return text.strip()[-_LOG_TAIL:] or "(no output)"

    def stop(self) -> None:
        """SIGTERM to each worker (the process started, as a service manager would), then
        after a grace period SIGKILL to its whole process group. The measurement is over
        by then: how long a library takes to shut down is not measured."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # children left behind, too
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# Commands that run a script or function: their commands are counted, not they.
_SCRIPT_CALLS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})


def _redis_per_job(
    key: str, before: tuple[float, int], after: tuple[float, int], jobs: int
) -> dict[str, float | None]:
    """Redis's CPU (us) and commands per job between two ``redis_usage`` readings."""
    if jobs <= 0:
        return {f"{key}_redis_us": None, f"{key}_redis_commands": None}
    return {
        f"{key}_redis_us": (after[0] - before[0]) / jobs * 1e6,
        f"{key}_redis_commands": (after[1] - before[1]) / jobs,
    }


class Harness:
    def __init__(self, peer: Peer, url: str, params: Params, workdir: Path) -> None:
        self.peer = peer
        self.url = url
        self.params = params
        self.workdir = workdir
        self.marks = Marks(workdir)
        self.redis = redis.Redis.from_url(url)
        self.errors: dict[str, str] = {}
        self.details: dict[str, Any] = {}
        self.spans_path = workdir / "spans"

    def spans_exported(self) -> int | None:
        """The spans the workers exported since the last call (None: no exporter wrote:
        a row without instrumentation)."""
        try:
            text = self.spans_path.read_text()
        except FileNotFoundError:
            return None
        self.spans_path.unlink()
        return sum(int(line) for line in text.split())

    def queue_name(self, phase: str) -> str:
        return f"bench-{phase}-{uuid.uuid4().hex[:8]}"

    def workers(self, queue: str, count: int) -> Workers:
        env = {
            **os.environ,
            URL_ENV: self.url,
            QUEUE_ENV: queue,
            FIFO_ENV: str(self.marks.path),
            VARIANT_ENV: self.peer.variant,
            SPANS_ENV: str(self.spans_path),
            **self.peer.worker_env(),
        }
        return Workers(self.peer.worker_command(self.url, queue), count, env, self.workdir)

    def flush(self) -> None:
        self.redis.flushall()
        self.marks.drain()

    def redis_usage(self) -> tuple[float, int]:
        """Redis's CPU seconds so far and the commands it has run, a script's commands
        counted one by one and the script call itself not (see the docstring)."""
        cpu: dict[str, Any] = self.redis.info("cpu")
        stats: dict[str, Any] = self.redis.info("commandstats")
        commands = sum(
            int(value["calls"])
            for name, value in stats.items()
            if name.removeprefix("cmdstat_").lower() not in _SCRIPT_CALLS
        )
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), commands

    def used_memory(self) -> int:
        """Redis's memory less the client buffers (which vary with connections)."""
        info: dict[str, Any] = self.redis.info("memory")
        return int(info["used_memory"]) - int(info.get("mem_clients_normal", 0))

    async def run(self) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        for phase in self.params.phases:
            started = time.monotonic()
            try:
                figures.update(await getattr(self, f"phase_{phase}")())
            except Exception as exc:  # reported, and the other phases still run
                self.errors[phase] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            self.details.setdefault("phase_seconds", {})[phase] = round(
                time.monotonic() - started, 2
            )
        return figures

    async def phase_enqueue(self) -> dict[str, Any]:
        n = self.params.enqueue_jobs
        self.flush()
        await self.peer.open(self.url, self.queue_name("enqueue"))
        try:
            for i in range(_WARMUP_CALLS):
                await self.peer.enqueue(-1 - i)
            latencies: list[float] = []
            clock = time.perf_counter
            redis_from = self.redis_usage()
            cpu_started = time.process_time()
            started = clock()
            for i in range(n):
                t = clock()
                await self.peer.enqueue(i)
                latencies.append(clock() - t)
            elapsed = clock() - started
            cpu = time.process_time() - cpu_started
            redis_to = self.redis_usage()
        finally:
            await self.peer.close()
        return {
            "enqueue_per_s": n / elapsed,
            "enqueue_p50_ms": percentile(latencies, 50) * 1000,
            "enqueue_p99_ms": percentile(latencies, 99) * 1000,
            "enqueue_cpu_ms": cpu / n * 1000,
            **_redis_per_job("enqueue", redis_from, redis_to, n),
        }

    async def phase_bulk(self) -> dict[str, Any]:
        if not self.peer.has_bulk:
            return {"bulk_per_s": None}
        batch = self.params.bulk_batch
        n = max(batch, self.params.bulk_jobs // batch * batch)
        self.flush()
        await self.peer.open(self.url, self.queue_name("bulk"))
        try:
            await self.peer.enqueue_bulk(range(-batch, 0))  # warm-up
            started = time.perf_counter()
            for low in range(0, n, batch):
                await self.peer.enqueue_bulk(range(low, low + batch))
            elapsed = time.perf_counter() - started
        finally:
            await self.peer.close()
        return {"bulk_per_s": n / elapsed}

    async def phase_process1(self) -> dict[str, Any]:
        return await self._process(1)

    async def phase_process2(self) -> dict[str, Any]:
        return await self._process(2)

    async def _fill(self, queue: str, n: int) -> int:
        """Enqueue up to ``n`` jobs on a fresh Redis, for at most ``fill_max_s`` (a slow
        producer gets fewer jobs to process); returns how many."""
        self.flush()
        await self.peer.open(self.url, queue)
        try:
            added, fill_until = 0, time.monotonic() + self.params.fill_max_s
            while added < n and time.monotonic() < fill_until:
                step = min(1000, n - added)
                await self.peer.fill(step, start=added)
                added += step
        finally:
            await self.peer.close()
        return added

    async def _process(self, count: int) -> dict[str, Any]:
        queue = self.queue_name(f"process{count}")
        n = await self._fill(queue, self.params.process_jobs)
        self.marks.drain()
        self.spans_exported()  # from zero
        workers = self.workers(queue, count)
        started = time.monotonic()
        workers.start()
        groups = [p.pid for p in workers.processes]
        seen, first, last = 0, math.inf, -math.inf
        cpu_from: tuple[GroupCpu, int] | None = None  # (reading, marks seen by then)
        cpu_to: tuple[GroupCpu, int] | None = None
        redis_from = redis_to = (0.0, 0)  # Redis's CPU and commands, read with cpu_from/to
        deadline = started + self.params.process_max_s
        try:
            while seen < n and (left := deadline - time.monotonic()) > 0:
                marks = self.marks.read(min(0.5, left))
                if marks:
                    seen += len(marks)
                    first, last = min(first, *marks), max(last, *marks)
                    if cpu_from is None:  # the workers are up: CPU per job counts from here
                        cpu_from = (group_cpu(groups), seen)
                        redis_from = self.redis_usage()
                    # Each mark carries its own time, so reading late costs nothing, while
                    # reading each as it comes would take CPU from the library measured
                    # (this machine may have no core to spare): let them gather.
                    await asyncio.sleep(min(_GATHER_S, max(0.0, deadline - time.monotonic())))
                else:
                    workers.check()
            if cpu_from is not None:
                reading = group_cpu(groups)
                redis_to = self.redis_usage()
                # The marks written before the reading (jobs done since the last read).
                cpu_to = (reading, seen + len(self.marks.read(0)))
        finally:
            workers.stop()
        key = f"process{count}"
        cpu_jobs = cpu_to[1] - cpu_from[1] if cpu_from and cpu_to else 0
        cpu_s = cpu_to[0].seconds - cpu_from[0].seconds if cpu_from and cpu_to else None
        self.details[key] = {
            "jobs": n,
            "done": seen,
            "stopped_after_s": self.params.process_max_s if seen < n else None,
            "startup_s": first - started if seen else None,
            "with_startup_per_s": seen / (last - started) if seen else None,
            "elapsed_s": last - started if seen else None,
            "cpu_s": cpu_s,
            "cpu_jobs": cpu_jobs,
            "processes": cpu_to[0].processes if cpu_to else None,
            # Exported by then: a BatchSpanProcessor exports every 512 spans or 5 s.
            "spans_exported": self.spans_exported(),
        }
        if seen < 2 or last <= first:
            raise RuntimeError(
                f"{seen} jobs started within {self.params.process_max_s:g} s: {workers.log_tail()}"
            )
        figures: dict[str, Any] = {
            f"{key}_per_s": (seen - 1) / (last - first),
            f"{key}_cpu_ms": cpu_s / cpu_jobs * 1000 if cpu_s is not None and cpu_jobs else None,
            **_redis_per_job(key, redis_from, redis_to, cpu_jobs),
        }
        if count == 1:
            figures["startup_s"] = first - started
        return figures

    async def phase_pickup(self) -> dict[str, Any]:
        queue = self.queue_name("pickup")
        self.flush()
        await self.peer.open(self.url, queue)
        workers = self.workers(queue, 1).start()
        try:
            for i in range(3):  # the worker is up and has run a job or three
                await self.peer.enqueue(-1 - i)
                await self._wait_mark(workers, _START_TIMEOUT if i == 0 else _PICKUP_TIMEOUT)
            await asyncio.sleep(0.5)
            latencies: list[float] = []
            spread = 0.02
            stop_at = time.monotonic() + self.params.pickup_max_s
            for i in range(self.params.pickup_samples):
                if latencies and time.monotonic() > stop_at:
                    break
                spread = min(1.0, max([spread, *latencies[-1:]]))
                await asyncio.sleep(0.01 + random.uniform(0, spread))
                self.marks.drain()
                before = time.monotonic()
                await self.peer.enqueue(i)
                latencies.append(await self._wait_mark(workers, _PICKUP_TIMEOUT) - before)
        finally:
            workers.stop()
            await self.peer.close()
        self.details["pickup"] = {"samples": len(latencies)}
        return {
            "pickup_p50_ms": percentile(latencies, 50) * 1000,
            "pickup_p99_ms": percentile(latencies, 99) * 1000,
        }

    async def _wait_mark(self, workers: Workers, within: float) -> float:
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            marks = self.marks.read(min(left, 0.5))
            if marks:
                return marks[0]
            workers.check()
        raise TimeoutError(f"the job did not start within {within:g} s: {workers.log_tail()}")

    async def phase_memory(self) -> dict[str, Any]:
        n = self.params.memory_jobs
        if n <= 0:
            return {}
        self.flush()
        queue = self.queue_name("memory")
        # Both readings with the producer closed, so that its connections (whose number
        # differs between libraries and with concurrent adds) are out of the figure.
        await self.peer.open(self.url, queue)
        try:
            await self.peer.fill(_WARMUP_CALLS, start=-_WARMUP_CALLS)
        finally:
            await self.peer.close()
        await asyncio.sleep(0.2)
        before = self.used_memory()
        await self.peer.open(self.url, queue)
        try:
            await self.peer.fill(n)
        finally:
            await self.peer.close()
        await asyncio.sleep(0.2)
        after = self.used_memory()
        keys = int(self.redis.dbsize())
        self.flush()
        self.details["memory"] = {"jobs": n, "used_memory_delta": after - before, "keys": keys}
        return {"memory_bytes_per_job": (after - before) / n}

    async def phase_rss(self) -> dict[str, Any]:
        """One worker works through ``rss_jobs`` jobs; its VmRSS after the warm-up and at
        the end. Jobs are added in chunks ahead of the worker (never more than two chunks
        waiting), so Redis holds a bounded backlog."""
        total, warmup = self.params.rss_jobs, self.params.rss_warmup
        chunk = 20_000
        queue = self.queue_name("rss")
        self.flush()
        await self.peer.open(self.url, queue)
        workers = self.workers(queue, 1)
        pid = 0
        added = seen = 0
        samples: list[tuple[int, int]] = []
        rss_warm: int | None = None
        started = time.monotonic()
        try:
            await self.peer.fill(min(2 * chunk, total))
            added = min(2 * chunk, total)
            workers.start()
            pid = workers.processes[0].pid
            while seen < total:
                marks = self.marks.read(1.0)
                if marks:
                    await asyncio.sleep(_GATHER_S)  # as in _process: leave the CPU to the worker
                else:
                    workers.check()
                seen += len(marks)
                if rss_warm is None and seen >= warmup:
                    rss_warm = vm_rss_kib(pid)
                    samples.append((seen, rss_warm))
                if added < total and added - seen < chunk:
                    await self.peer.fill(min(chunk, total - added), start=added)
                    added += min(chunk, total - added)
                    samples.append((seen, vm_rss_kib(pid)))
                if time.monotonic() - started > self.params.phase_timeout:
                    raise TimeoutError(
                        f"{seen} of {total} jobs done in {self.params.phase_timeout:g} s"
                    )
            elapsed = time.monotonic() - started
            await asyncio.sleep(1.0)  # let the last settles land before reading memory
            rss_end = vm_rss_kib(pid)
            hwm = _vm_hwm_kib(pid)
        finally:
            workers.stop()
            await self.peer.close()
        self.details["rss"] = {
            "jobs": total,
            "warmup_jobs": warmup,
            "elapsed_s": elapsed,
            "per_s": total / elapsed,
            "samples_jobs_kib": samples,
            "vm_hwm_kib": hwm,
        }
        return {
            "rss_warm_mib": (rss_warm or rss_end) / 1024,
            "rss_end_mib": rss_end / 1024,
        }


def _vm_hwm_kib(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def main(module: str) -> int:
    """The adapter's command line. ``module`` is the adapter's importable name: it is
    imported under that name (not as ``__main__``) so that workers can import its jobs.
    It defines ``PEER`` (its ``Peer`` class) and may define ``COMMANDS`` (commands of its
    own, e.g. ``worker`` for a library without a worker command line).

    ``suite --redis URL --params JSON [--variant V]`` runs the phases and prints one JSON
    line last; ``info [--variant V]`` prints the version and settings."""
    adapter = importlib.import_module(module)
    extra: dict[str, Callable[[], int]] = getattr(adapter, "COMMANDS", {})
    factory: Callable[[str], Peer] = adapter.PEER
    commands = ["suite", "info", *extra]
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: {module} {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    command = sys.argv[1]
    if command in extra:
        return extra[command]()
    parser = argparse.ArgumentParser(prog=f"{module} {command}")
    parser.add_argument("--redis", default="")
    parser.add_argument("--params", default="")
    parser.add_argument("--variant", default="")
    args = parser.parse_args(sys.argv[2:])
    peer = factory(args.variant)
    info: dict[str, Any] = {
        "library": peer.name,
        "variant": peer.variant,
        "version": peer.version(),
        "python": sys.version.split()[0],
        "redis_py": importlib.metadata.version("redis"),
        "bulk_api": peer.bulk_api if peer.has_bulk else None,
        "settings": peer.settings(),
        "worker_model": peer.worker_model(),
        "jobs_at_once": peer.jobs_at_once,
    }
    if command == "info":
        print(json.dumps(info))
        return 0
    params = Params.from_json(args.params)
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        harness = Harness(peer, args.redis, params, Path(tmp))
        try:
            figures = asyncio.run(harness.run())
        finally:
            harness.marks.close()
            harness.redis.close()
    result = {
        **info,
        "params": asdict(params),
        "figures": figures,
        "details": harness.details,
        "errors": harness.errors,
    }
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0
