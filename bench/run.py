"""queue_core against the queues users would pick instead, side by side on one Redis.

    python -m bench.run [--quick] [--runs 3] [--only queue_core,arq,...] [--rss-jobs N]
                        [--startup-starts N] [--readme | --no-readme] [--reinstall]

``make bench`` runs this with ``--readme``. It starts a private ``redis-server`` on a free
port (never the shared 6379), creates one venv per library under ``bench/.venvs/`` with
the versions pinned in ``bench/libraries.py`` (in parallel; a venv whose pins did not
change is reused; queue_core is this checkout, installed editable), then runs every
library's adapter (``bench/peers/<name>.py``) in its venv, ``--runs`` times, in an order
rotated from run to run. Each adapter measures enqueue
throughput and latency, bulk enqueue, processing with one and two worker processes,
pick-up latency and Redis memory per waiting job (memory in the first run only: it does
not vary), and the CPU each job costs the workers and each enqueue call the producer; see
``bench/peers/_kit.py``. The ``otel`` rows are a library with its OpenTelemetry
instrumentation on (``bench/libraries.py``, ``bench/peers/_otel.py``). Then one long run
of queue_core alone reads its worker's RSS before and after ``--rss-jobs`` jobs, and
``bench/startup.py`` times ``--startup-starts`` starts of the ``queue-core worker``
command (in queue_core's venv) to its first job done.

Each figure is the median over the runs; the results also record this checkout's commit
(``+dirty`` when it has changes) and how far the runs were apart. Everything goes to
``bench/results/latest.json`` and ``bench/results/latest.md``; ``--readme`` also rewrites
the section of README.md between ``<!-- bench:start -->`` and ``<!-- bench:end -->``. A
peer that fails to install or to run is reported with its error, never dropped.

``--quick`` is a smoke run: small counts, one run, a short RSS run, 3 timed starts.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import report, startup
from bench.libraries import BY_KEY, LIBRARIES, PROJECT, Library
from bench.peers._kit import Params
from queue_core.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
VENVS = ROOT / "bench" / ".venvs"
RESULTS = ROOT / "bench" / "results"
STAMP = ".bench-requirements"

# Sized so that `make bench` stays under 15 minutes from a fresh clone (installs included)
# while the fastest library still works for more than a second in each processing phase.
FULL = Params(
    enqueue_jobs=2000,
    bulk_jobs=10_000,
    bulk_batch=100,
    process_jobs=20_000,
    pickup_samples=200,
    memory_jobs=10_000,
    fill_max_s=3.0,
    process_max_s=4.0,
    pickup_max_s=5.0,
)
QUICK = Params(
    enqueue_jobs=200,
    bulk_jobs=1000,
    bulk_batch=100,
    process_jobs=1000,
    pickup_samples=20,
    memory_jobs=2000,
    fill_max_s=2.0,
    process_max_s=3.0,
    pickup_max_s=3.0,
)
FULL_RSS_JOBS = 1_000_000
QUICK_RSS_JOBS = 5000
FIGURES = (
    "enqueue_per_s",
    "enqueue_p50_ms",
    "enqueue_p99_ms",
    "enqueue_cpu_ms",
    "bulk_per_s",
    "process1_per_s",
    "process2_per_s",
    "process1_cpu_ms",
    "process2_cpu_ms",
    "startup_s",
    "pickup_p50_ms",
    "pickup_p99_ms",
    "memory_bytes_per_job",
    "process1_redis_us",
    "process1_redis_commands",
    "process2_redis_us",
    "enqueue_redis_us",
    "enqueue_redis_commands",
)


@dataclass
class Install:
    """Where a library runs, or why it cannot."""

    python: str = ""
    ok: bool = False
    seconds: float = 0.0
    reused: bool = False
    error: str = ""
    freeze: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_python() -> str:
    """The interpreter the peer venvs are made from: the one under this venv."""
    return getattr(sys, "_base_executable", "") or shutil.which("python3") or sys.executable


def tail(text: str, limit: int = 2000) -> str:
    # pip warns about every index location missing on this machine: noise, not the error.
    text = "\n".join(line for line in text.splitlines() if "is ignored" not in line).strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def pip_arguments(requirements: Sequence[str]) -> list[str]:
    """``pip install`` arguments: ``PROJECT`` becomes this checkout, ``-e X`` two words."""
    out: list[str] = []
    for line in requirements:
        requirement = line.replace(PROJECT, str(ROOT))
        out += requirement.split(" ", 1) if requirement.startswith("-e ") else [requirement]
    return out


def wanted_stamp(library: Library) -> str:
    """What a reusable venv was made from: its requirements and, for this checkout, the
    dependencies it declares (an editable install follows the code, not the metadata)."""
    text = "\n".join(library.requirements) + "\n"
    if any(PROJECT in r for r in library.requirements):
        digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
        text += f"{ROOT} pyproject.toml sha256 {digest}\n"
    return text


def prepare_venv(library: Library, venvs: Path, reinstall: bool) -> Install:
    """Create ``venvs/<venv>`` with the library's pinned requirements (or reuse it)."""
    directory = venvs / library.venv
    python = directory / "bin" / "python"
    wanted = wanted_stamp(library)
    stamp = directory / STAMP
    if not reinstall and python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return Install(python=str(python), ok=True, reused=True, freeze=_freeze(str(python)))
    started = time.monotonic()
    shutil.rmtree(directory, ignore_errors=True)
    steps = [
        # A current pip: the one a venv starts with (23.x here) gives up on resolving
        # the OpenTelemetry packages' exact inter-pins.
        [base_python(), "-m", "venv", "--upgrade-deps", str(directory)],
        [
            str(python),
            *("-m", "pip", "install", "--disable-pip-version-check", "--quiet"),
            *pip_arguments(library.requirements),
        ],
    ]
    for step in steps:
        done = subprocess.run(  # noqa: S603 - fixed argument lists
            step, capture_output=True, text=True, check=False, timeout=900
        )
        if done.returncode != 0:
            return Install(
                python=str(python),
                seconds=time.monotonic() - started,
                error=f"{shlex.join(step)} exited with {done.returncode}: "
                + tail(done.stderr or done.stdout),
            )
    stamp.write_text(wanted)
    return Install(
        python=str(python),
        ok=True,
        seconds=time.monotonic() - started,
        freeze=_freeze(str(python)),
    )


def _freeze(python: str) -> list[str]:
    done = subprocess.run(  # noqa: S603
        [python, "-m", "pip", "freeze", "--disable-pip-version-check", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    return [line for line in done.stdout.splitlines() if line and not line.startswith("#")]


def adapter_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("REDIS_URL", None)
    # Bytecode caches as in a deployment: without them every worker start would compile
    # the modules outside site-packages (queue_core here, installed in editable mode).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_adapter(
    library: Library, python: str, args: Sequence[str], timeout: float
) -> tuple[dict[str, Any] | None, str]:
    """Run the adapter; its last stdout line is its JSON result. Returns (result, error)."""
    command = [python, "-P", "-m", library.adapter, *args]
    if library.variant:
        command += ["--variant", library.variant]
    with tempfile.TemporaryFile("w+") as err:
        try:
            done = subprocess.run(  # noqa: S603 - the adapter, in its venv
                command,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=ROOT,
                env=adapter_env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            err.seek(0)
            return None, f"timed out after {timeout:g} s: {tail(err.read())}"
        err.seek(0)
        stderr = err.read()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return None, f"exited with {done.returncode}: {tail(stderr or done.stdout)}"
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return None, f"unreadable result ({exc}): {tail(done.stdout)}"
    return result, ""


def machine_info(client: redis.Redis) -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    server: dict[str, Any] = client.info("server")
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis": str(server.get("redis_version", "")),
        "redis_executable": str(server.get("executable", "")),
    }


def commit() -> str:
    """This checkout's commit (``git rev-parse --short HEAD``), ``+dirty`` when a file
    differs from it or is new (ignored files aside); read-only (no index refresh)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        done = subprocess.run(  # noqa: S603 - fixed argument lists
            ["git", *args],  # noqa: S607 - git from PATH
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=False,
            timeout=60,
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    return head + ("+dirty" if git("status", "--porcelain") else "")


def medians(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name in FIGURES:
        values = [r["figures"][name] for r in runs if r["figures"].get(name) is not None]
        out[name] = statistics.median(values) if values else None
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, one run")
    parser.add_argument("--runs", type=int, help="runs per library (default 3, quick 1)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated libraries among {','.join(BY_KEY)}"
    )
    parser.add_argument("--rss-jobs", type=int, help="jobs of the RSS run (0: skip it)")
    parser.add_argument(
        "--startup-starts",
        type=int,
        help=f"timed starts of the worker command (default {startup.FULL_STARTS}, quick "
        f"{startup.QUICK_STARTS}; 0: skip them)",
    )
    parser.add_argument(
        "--readme",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="update README.md's section (make bench passes --readme)",
    )
    parser.add_argument("--reinstall", action="store_true", help="recreate the peer venvs")
    parser.add_argument("--venvs", type=Path, default=VENVS, help="where the peer venvs go")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="override a parameter"
    )
    return parser.parse_args(argv)


def build_params(args: argparse.Namespace) -> Params:
    params = Params(**asdict(QUICK if args.quick else FULL))
    for item in args.set:
        name, _, value = item.partition("=")
        current = getattr(params, name, None)
        if current is None or name == "phases":
            raise SystemExit(f"--set: unknown parameter {name!r}")
        try:
            setattr(params, name, type(current)(value))
        except ValueError:
            raise SystemExit(
                f"--set: {name} must be {type(current).__name__}, not {value!r}"
            ) from None
    return params


def select(only: str) -> list[Library]:
    keys = [k for k in only.split(",") if k]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        raise SystemExit(f"unknown libraries {unknown}; known: {', '.join(BY_KEY)}")
    return [BY_KEY[k] for k in keys] if keys else list(LIBRARIES)


def prepare_all(selected: list[Library], venvs: Path, reinstall: bool) -> dict[str, Install]:
    log(f"preparing {len(selected)} libraries (venvs in {venvs})")
    venvs.mkdir(parents=True, exist_ok=True)
    installs: dict[str, Install] = {}
    # One install per venv: variants of a library share it (and must not race on it).
    first = {lib.venv: lib for lib in reversed(selected)}
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = {v: pool.submit(prepare_venv, lib, venvs, reinstall) for v, lib in first.items()}
        for lib in selected:
            try:
                installs[lib.key] = futures[lib.venv].result()
            except Exception as exc:  # reported, never hidden
                installs[lib.key] = Install(error=f"{type(exc).__name__}: {exc}")
    for key, install in installs.items():
        how = "reused" if install.reused else f"installed in {install.seconds:.0f} s"
        log(f"  {key}: {how if install.ok else 'INSTALL FAILED: ' + install.error[:300]}")
    return installs


def new_entry(lib: Library, install: Install) -> dict[str, Any]:
    return {
        "label": lib.label,
        "ours": lib.module == "queue_core",
        "adapter": f"bench/peers/{lib.module}.py",
        "variant": lib.variant,
        "requirements": [r.replace(PROJECT, ".") for r in lib.requirements],
        "note": lib.note,
        "instrumentation": lib.instrumentation,
        "install": asdict(install),
        "runs": [],
        "errors": [],
    }


def run_once(
    lib: Library, python: str, url: str, params: Params, *, run: int, entry: dict[str, Any]
) -> None:
    """One run of a library's suite; its result or error goes into ``entry``."""
    run_params = Params(**asdict(params))
    phases = [p for p in (lib.phases or run_params.phases) if p != "rss"]
    run_params.phases = [p for p in phases if p != "memory" or run == 0]  # measured once
    started = time.monotonic()
    result, error = run_adapter(
        lib, python, ["suite", "--redis", url, "--params", json.dumps(asdict(run_params))], 600
    )
    if result is None:
        entry["errors"].append(f"run {run + 1}: {error}")
        log(f"  failed: {error[:300]}")
        return
    result["seconds"] = round(time.monotonic() - started, 1)
    entry["runs"].append(result)
    for phase, message in result["errors"].items():
        entry["errors"].append(f"run {run + 1}, {phase}: {message}")
    shown = {k: round(v, 2) for k, v in result["figures"].items() if v is not None}
    log(f"  {shown} in {result['seconds']} s")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wall_started = time.monotonic()
    params = build_params(args)
    runs = args.runs or (1 if args.quick else 3)
    rss_jobs = args.rss_jobs
    if rss_jobs is None:
        rss_jobs = QUICK_RSS_JOBS if args.quick else FULL_RSS_JOBS
    starts = args.startup_starts
    if starts is None:
        starts = startup.QUICK_STARTS if args.quick else startup.FULL_STARTS
    selected = select(args.only)
    checkout = commit()  # before this run writes anything
    installs = prepare_all(selected, args.venvs, args.reinstall)
    install_s = time.monotonic() - wall_started

    entries = {lib.key: new_entry(lib, installs[lib.key]) for lib in selected}
    runnable = [lib for lib in selected if installs[lib.key].ok]
    rss: dict[str, Any] | None = None
    started_worker: dict[str, Any] | None = None
    with RedisServer() as server:
        log(f"Redis: {server.description}")
        client = redis.Redis.from_url(server.url)
        machine = machine_info(client)
        for lib in runnable:
            info, error = run_adapter(lib, installs[lib.key].python, ["info"], 120)
            entries[lib.key].update(info or {})
            if error:
                entries[lib.key]["errors"].append(f"info: {error}")
        for run in range(runs):
            order = runnable[run % len(runnable) :] + runnable[: run % len(runnable)]
            for lib in order:
                log(f"run {run + 1}/{runs}: {lib.key}")
                python = installs[lib.key].python
                run_once(lib, python, server.url, params, run=run, entry=entries[lib.key])
                client.flushall()
        if rss_jobs > 0 and "queue_core" in installs and installs["queue_core"].ok:
            rss = run_rss(server.url, installs["queue_core"].python, params, rss_jobs)
        if starts > 0 and "queue_core" in installs and installs["queue_core"].ok:
            log(f"start-up: {starts} starts of the queue-core worker command")
            started_worker = startup.measure(server.url, installs["queue_core"].python, starts)
            log(f"  {report.startup_line(started_worker)[:300]}")
        client.close()

    for entry in entries.values():
        entry["figures"] = medians(entry["runs"])
    document = {
        "title": "queue_core against the queues users would pick instead",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.run " + shlex.join(list(argv or sys.argv[1:])),
        "make_target": "make bench (runs: python -m bench.run --readme)",
        "machine": machine,
        "commit": checkout,
        "runs": runs,
        "quick": args.quick,
        "params": asdict(params),
        "libraries": entries,
        "rss": rss,
        "startup": started_worker,
        "install_seconds": round(install_s, 1),
        "wall_seconds": round(time.monotonic() - wall_started, 1),
    }
    write_results(args, document)
    log(f"done in {document['wall_seconds']:.0f} s; {args.output / 'latest.json'}")
    return 0


def write_results(args: argparse.Namespace, document: dict[str, Any]) -> None:
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(document, indent=1) + "\n")
    markdown = report.render(document)
    (args.output / "latest.md").write_text(markdown)
    if args.readme and (args.quick or args.only or args.set):
        log("README.md left alone: only a full run of every library replaces its table")
    elif args.readme:
        report.update_readme(ROOT / "README.md", document)
        log("README.md updated")
    print(markdown)


def run_rss(url: str, python: str, params: Params, jobs: int) -> dict[str, Any]:
    """queue_core's worker RSS across ``jobs`` jobs (one worker process)."""
    library = BY_KEY["queue_core"]
    rss_params = Params(**asdict(params))
    rss_params.phases = ["rss"]
    rss_params.rss_jobs = jobs
    rss_params.rss_warmup = min(20_000, max(1000, jobs // 10))
    rss_params.phase_timeout = 3600.0
    log(f"RSS run: queue_core, {jobs:,} jobs, one worker process")
    result, error = run_adapter(
        library,
        python,
        ["suite", "--redis", url, "--params", json.dumps(asdict(rss_params))],
        timeout=rss_params.phase_timeout + 120,
    )
    if result is None:
        return {"jobs": jobs, "error": error}
    errors = result["errors"]
    return {
        "jobs": jobs,
        "warmup_jobs": rss_params.rss_warmup,
        "settings": result["settings"],
        **result["figures"],
        **result["details"].get("rss", {}),
        "error": "; ".join(f"{k}: {v}" for k, v in errors.items()),
    }


if __name__ == "__main__":
    raise SystemExit(main())
