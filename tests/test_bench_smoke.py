"""The benchmark harness: a quick run of queue_core, with deadlines on (its default) and
off, in its own venv (created under bench/.venvs when missing, as `make bench` does; plus
a peer whose venv already exists), and the report logic on a made-up document. Speed is
measured, never asserted."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.libraries import BY_KEY, LIBRARIES, OTEL_SDK, PROJECT
from bench.lua_steps import ALONE, STEPS, AnchorError, Mark, mark_scripts
from bench.peers._kit import Params, group_cpu, percentile
from bench.peers.queue_core import QueueCore, deadline_options
from bench.run import FIGURES, VENVS, build_params, commit, medians, parse_args, select

ROOT = Path(__file__).resolve().parent.parent


def _bench(*argv: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    """``python -m bench.<argv>`` from the checkout, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


# A peer that installs and runs quickly; used only when its venv is already there (the
# test suite does not create venvs: that needs the network and takes a while).
FAST_PEER = "bullmq"
NO_DEADLINES = "queue_core+no_deadlines"


def _ready_peer() -> list[str]:
    library = BY_KEY[FAST_PEER]
    stamp = VENVS / library.venv / ".bench-requirements"
    wanted = "\n".join(library.requirements) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return [FAST_PEER]
    return []


@pytest.mark.timeout(180)
def test_quick_run_writes_results(tmp_path: Path) -> None:
    keys = ["queue_core", NO_DEADLINES, *_ready_peer()]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--only",
            ",".join(keys),
            "--rss-jobs",
            "3000",
            "--output",
            str(tmp_path),
            "--readme",  # refused for a quick run: README.md must stay as it is
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((tmp_path / "latest.json").read_text())
    assert set(document) >= {"date", "command", "machine", "params", "libraries", "rss", "runs"}
    assert document["machine"]["redis"] and document["machine"]["cores"] >= 1
    assert document["quick"] is True and document["runs"] == 1
    assert list(document["libraries"]) == keys
    for key in keys:
        entry = document["libraries"][key]
        assert entry["install"]["ok"], entry["install"]
        assert entry["errors"] == [], entry["errors"]
        assert entry["version"] and entry["settings"]
        assert len(entry["runs"]) == 1
        for name in FIGURES:
            value = entry["figures"][name]
            if name == "bulk_per_s" and entry["bulk_api"] is None:
                assert value is None
            else:
                assert isinstance(value, float) and value > 0, (key, name, value)
    rss = document["rss"]
    assert rss["error"] == "" and rss["jobs"] == 3000
    assert rss["rss_warm_mib"] > 0 and rss["rss_end_mib"] > 0
    assert "README.md left alone" in done.stderr
    assert document["libraries"]["queue_core"]["ours"] is True
    assert document["libraries"]["queue_core"]["requirements"] == ["-e ."]
    variant = document["libraries"][NO_DEADLINES]
    assert variant["ours"] is True and variant["variant"] == "no_deadlines"
    assert "redis_timeout" in variant["settings"]
    assert "redis_timeout" not in document["libraries"]["queue_core"]["settings"]
    markdown = (tmp_path / "latest.md").read_text()
    assert "| queue_core 0.1.0 |" in markdown
    assert "| queue_core, no deadlines 0.1.0 |" in markdown
    deadlines = markdown.split("#### Deadlines off and on", 1)[1].split("####", 1)[0]
    assert "| on (default: the queue_core row) |" in deadlines
    for header in ("enqueue /s", "bulk enqueue /s", "1 worker jobs/s", "2 workers jobs/s"):
        assert f"| {header} |" in deadlines, header
    assert "python -m bench.run --quick" in markdown
    # Redis per job: a no-op job is one settle-and-fetch call of a couple of dozen commands
    # (20 to 30 with events on); an add, one call of about ten.
    assert "#### Redis per job" in markdown
    ours = document["libraries"]["queue_core"]["figures"]
    assert 15 <= ours["process1_redis_commands"] <= 40, ours
    assert 5 <= ours["enqueue_redis_commands"] <= 20, ours
    # The worker command's start-up, timed in queue_core's venv (3 starts when quick).
    started = document["startup"]
    assert started["error"] == "" and started["starts"] == 3, started
    assert started["command"].startswith("queue-core worker bench.startup:noop --queue")
    figures = started["figures"]
    assert 0 < figures["first_job_start_s"]["median"] <= figures["first_job_done_s"]["median"]
    assert figures["import_s"]["median"] > 0 and figures["stop_s"]["median"] > 0
    section = markdown.split("#### Worker start-up from the command", 1)[1].split("####")[0]
    assert "`queue-core worker bench.startup:noop" in section and "s** median" in section


@pytest.mark.timeout(120)
def test_startup_times_the_worker_command_on_its_own_redis() -> None:
    done = _bench("bench.startup", "--starts", "1", "--json")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["error"] == "" and result["starts"] == 1 and len(result["samples"]) == 1
    sample = result["samples"][0]
    assert 0 < sample["first_job_start_s"] <= sample["first_job_done_s"] < 60
    assert report.startup_line(result).startswith("`queue-core worker bench.startup:noop")
    failed = report.startup_line({"starts": 1, "error": "RuntimeError: exited with 2"})
    assert failed == "Worker start-up from the command: failed: `RuntimeError: exited with 2`"
    assert "not measured" in report.startup_line(None)


def _document() -> dict[str, Any]:
    def entry(label: str, figures: dict[str, float | None], **extra: Any) -> dict[str, Any]:
        return {
            "label": label,
            "version": "1.0",
            "requirements": [f"{label}==1.0"],
            "install": {"ok": True, "error": ""},
            "bulk_api": "add_bulk" if figures.get("bulk_per_s") else None,
            "settings": {"producer": "p", "worker": "w", "concurrency": "10"},
            "runs": [{"params": {"phases": ["enqueue", "bulk", "memory"]}, "details": {}}],
            "errors": [],
            "figures": figures,
            **extra,
        }

    return {
        "date": "2026-01-01T00:00:00+00:00",
        "command": "python -m bench.run",
        "machine": {
            "cpu": "CPU",
            "cores": 2,
            "memory_gib": 4,
            "platform": "Linux",
            "python": "3.11",
            "redis": "7.0",
        },
        "runs": 3,
        "quick": False,
        "params": {
            "enqueue_jobs": 10,
            "bulk_jobs": 10,
            "bulk_batch": 5,
            "process_jobs": 10,
            "process_max_s": 1,
            "fill_max_s": 1,
            "pickup_samples": 5,
            "pickup_max_s": 1,
            "memory_jobs": 10,
        },
        "libraries": {
            "a": entry("A", {"enqueue_per_s": 100.0, "bulk_per_s": 1000.0, "pickup_p50_ms": 2.0}),
            "b": entry("B", {"enqueue_per_s": 200.0, "bulk_per_s": None, "pickup_p50_ms": 4.0}),
            "c": {
                **entry("C", {}),
                "install": {"ok": False, "error": "pip said no"},
                "runs": [],
            },
            "ours": entry(
                "Ours",
                {"enqueue_per_s": 1000.0, "bulk_per_s": 500.0, "pickup_p50_ms": 1.0},
                ours=True,
            ),
        },
        "rss": None,
        "install_seconds": 1,
        "wall_seconds": 2,
    }


def test_report_ratios_to_the_best_and_failures() -> None:
    markdown = report.render(_document())
    row_a = next(line for line in markdown.splitlines() if line.startswith("| A 1.0 |"))
    row_b = next(line for line in markdown.splitlines() if line.startswith("| B 1.0 |"))
    row_c = next(line for line in markdown.splitlines() if line.startswith("| C 1.0 |"))
    # Throughput: higher is better; latency: lower is better.
    assert "| 100 (0.50x) |" in row_a and "| **200** (1.00x) |" in row_b
    assert "**2.0** (1.00x)" in row_a and "4.0 (2.00x)" in row_b
    assert "n/a" in row_b  # no bulk API
    assert "install failed" in row_c
    assert "pip said no" in markdown
    # This project's row is compared with the best peer, never counted as one.
    row_ours = next(line for line in markdown.splitlines() if line.startswith("| Ours 1.0 |"))
    assert "| 1,000 (5.00x) |" in row_ours and "| 500 (0.50x) |" in row_ours
    assert "1.0 (0.50x)" in row_ours and "**" not in row_ours


def test_report_deadlines_off_and_on() -> None:
    document = _document()
    assert "Not measured in this run" in report.render(document).split("Deadlines off")[1]

    def runs(*values: float) -> list[dict[str, Any]]:
        return [{"figures": {"process1_per_s": v}, "params": {}, "details": {}} for v in values]

    on = {"enqueue_per_s": 990.0, "process1_per_s": 4900.0, "memory_bytes_per_job": 400.0}
    off = {"enqueue_per_s": 1000.0, "process1_per_s": 5000.0, "memory_bytes_per_job": 400.0}
    libraries = document["libraries"]
    libraries["queue_core"] = {
        **libraries.pop("ours"),
        "label": "queue_core",
        "figures": on,
        "runs": runs(4800.0, 4900.0, 5045.0),
    }
    libraries[NO_DEADLINES] = {
        **libraries["queue_core"],
        "label": "queue_core, no deadlines",
        "figures": off,
        "runs": runs(5000.0, 5000.0, 5100.0),
    }
    markdown = report.render(document)
    section = markdown.split("#### Deadlines off and on", 1)[1].split("####", 1)[0]
    assert "the **on** column is the queue_core row above" in section
    assert "| enqueue /s | 1,000 | 990 | -1.0% | - |" in section
    assert "| 1 worker jobs/s | 5,000 | 4,900 | -2.0% | 2.0%; 5.0% |" in section
    assert "Redis bytes/job" not in section  # deadlines add no data to Redis
    # Both rows are this project's: compared with the best peer, never counted as one.
    for label, enqueue in (
        ("queue_core 1.0", "| 990 (4.95x) |"),
        ("queue_core, no deadlines 1.0", "| 1,000 (5.00x) |"),
    ):
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {label} |"))
        assert enqueue in row and "**" not in row, row


def test_readme_section_is_replaced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.START}\nOLD TABLE\n{report.END}\n\n## next\n")
    report.update_readme(readme, _document())
    text = readme.read_text()
    assert "OLD TABLE" not in text and "| A 1.0 |" in text
    assert text.startswith("# x\n") and text.endswith(f"{report.END}\n\n## next\n")
    again = copy.deepcopy(text)
    report.update_readme(readme, _document())
    assert readme.read_text() == again  # idempotent


def test_the_real_readme_has_the_markers() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.index("## Benchmarks") < text.index(report.START) < text.index(report.END)
    assert text.index(report.END) < text.index("## Redis in production")


def test_harness_helpers() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert Params.from_json('{"enqueue_jobs": 5}').enqueue_jobs == 5
    with pytest.raises(ValueError, match="unknown"):
        Params.from_json('{"nope": 1}')
    runs = [{"figures": {"enqueue_per_s": v, "bulk_per_s": None}} for v in (1.0, 3.0, 2.0)]
    assert medians(runs)["enqueue_per_s"] == 2.0 and medians(runs)["bulk_per_s"] is None
    assert {lib.key for lib in LIBRARIES} >= {
        "queue_core",
        "arq",
        "saq",
        "rq",
        "celery",
        "dramatiq",
        "taskiq",
        "bullmq",
    }
    variant = BY_KEY[NO_DEADLINES]  # the same code and venv as queue_core, deadlines off
    assert (variant.module, variant.venv, variant.variant) == (
        "queue_core",
        BY_KEY["queue_core"].venv,
        "no_deadlines",
    )
    assert deadline_options("no_deadlines") == {"redis_timeout": None}
    assert deadline_options("") == deadline_options("otel") == {}  # the default deadline
    with pytest.raises(ValueError, match="unknown variant 'no_deadline'"):
        QueueCore("no_deadline")
    by_venv: dict[str, set[tuple[str, ...]]] = {}
    for library in LIBRARIES:  # variants sharing a venv (installed once) need the same pins
        by_venv.setdefault(library.venv, set()).add(library.requirements)
    assert all(len(pins) == 1 for pins in by_venv.values()), by_venv
    for library in LIBRARIES:  # every peer pins exact versions; queue_core is this checkout
        assert library.requirements, library
        assert all("==" in r or PROJECT in r for r in library.requirements), library


@pytest.mark.timeout(120)
def test_profile_worker_shows_where_the_time_goes() -> None:
    done = _bench("bench.profile_worker", "--jobs", "3000", "--top", "8")
    if done.returncode != 0 and "ermission" in done.stdout + done.stderr:
        pytest.skip("py-spy may not attach here (no ptrace rights): " + done.stderr[-300:])
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "3,000 no-op jobs, concurrency 10" in out and "us/job" in out
    # At most one script call per job, settle and fetch in one (a function: Redis 7
    # here); completions that leave in one write may share a call.
    fcalls = re.search(r"fcall: (\d+\.\d\d) calls", out)
    assert fcalls is not None and 0.2 <= float(fcalls.group(1)) <= 1.0, out
    frames = out.split("busy samples:", 1)[1].strip().splitlines()
    assert 1 <= len(frames) <= 8 and all(line.strip().split("%")[0] for line in frames)
    assert any("queue_core/" in line for line in frames), frames


def test_events_cost_compares_events_on_and_off() -> None:
    done = _bench("bench.events_cost", "--jobs", "500", "--rounds", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:5]]
        for line in done.stdout.splitlines()
        if line.startswith("| ") and "figure" not in line
    }
    assert set(rows) == {
        "jobs/s (one worker)",
        "worker CPU per job (us)",
        "Redis CPU per job (us)",
        "Redis commands per job",
        "Redis CPU per job, worker only (us)",
        "Redis commands per job, worker only",
    }
    off, on, _ = (
        float(cell.rstrip("x").replace(",", "")) for cell in rows["Redis commands per job"]
    )
    # Each no-op job appends added, active and completed: about three XADDs more.
    assert 2.5 <= on - off <= 3.5, rows


# The commit before issues 9-14 (before the events stream): issue 14's Redis baseline.
BEFORE_EVENTS = "ea2b808"


def test_events_cost_runs_a_version_from_before_the_events_stream(tmp_path: Path) -> None:
    archive = subprocess.run(
        ["git", "archive", BEFORE_EVENTS], capture_output=True, cwd=ROOT, check=False
    )
    if archive.returncode != 0:
        pytest.skip(f"{BEFORE_EVENTS} is not in this clone's history")
    subprocess.run(["tar", "-x", "-C", str(tmp_path)], input=archive.stdout, check=True)
    before = ("--before", str(tmp_path))
    done = _bench("bench.events_cost", *before, "--jobs", "500", "--rounds", "1", timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"before: queue_core from {tmp_path}/queue_core/__init__.py" in done.stdout
    assert "(before has no events stream: its 'events on' and 'off' run the same code)" in (
        done.stdout
    )
    row = next(line for line in done.stdout.splitlines() if "| Redis commands per job |" in line)
    before_off, after_off, _, before_on, after_on, _ = (
        float(cell.strip().rstrip("x").replace(",", "")) for cell in row.split("|")[2:8]
    )
    assert abs(before_on - before_off) < 0.5, row  # the same code twice: no XADD in either
    assert 2.5 <= after_on - after_off <= 3.5, row


def test_bad_command_lines_are_refused_with_the_reason() -> None:
    with pytest.raises(SystemExit, match=r"unknown libraries \['celeri'\]; known: queue_core"):
        select("queue_core,celeri")
    with pytest.raises(SystemExit, match="unknown parameter 'jobs'"):
        build_params(parse_args(["--set", "jobs=5"]))
    with pytest.raises(SystemExit, match="enqueue_jobs must be int, not 'many'"):
        build_params(parse_args(["--set", "enqueue_jobs=many"]))
    assert build_params(parse_args(["--quick", "--set", "enqueue_jobs=7"])).enqueue_jobs == 7
    with pytest.raises(ValueError, match="unknown phases"):
        Params.from_json('{"phases": ["enqueue", "warp"]}')


def _instrumented_document() -> dict[str, Any]:
    """queue_core and a peer, each without and with its instrumentation (two runs each),
    and a peer that has none."""
    document = _document()

    def row(label: str, runs: list[dict[str, float]], **extra: Any) -> dict[str, Any]:
        return {
            **document["libraries"]["a"],
            "label": label,
            "version": "",
            "runs": [
                {
                    "figures": figures,
                    "params": {"phases": ["enqueue", "process1", "process2"]},
                    "details": {
                        "process1": {"jobs": 10, "done": 10, "processes": 2, **spans},
                        "process2": {"jobs": 10, "done": 10, "processes": 4},
                    },
                }
                for figures, spans in zip(runs, extra.pop("spans", [{}] * len(runs)), strict=True)
            ],
            "figures": medians([{"figures": figures} for figures in runs]),
            "worker_model": "1 main process + 1 pool process x 1 task",
            "jobs_at_once": 8,
            **extra,
        }

    def figures(jobs: float, cpu: float, enqueue: float, enqueue_cpu: float) -> dict[str, float]:
        return {
            "process1_per_s": jobs,
            "process1_cpu_ms": cpu,
            "enqueue_per_s": enqueue,
            "enqueue_cpu_ms": enqueue_cpu,
        }

    document["runs"] = 2
    document["commit"] = "abc1234+dirty"
    document["machine"]["kernel"] = "6.1.0"
    document["libraries"] = {
        "queue_core": row("queue_core", [figures(5000, 0.2, 3000, 0.3)] * 2, ours=True),
        "queue_core+otel": row(
            "queue_core + queue_otel",
            [figures(1500, 0.6, 1500, 0.6), figures(2500, 0.6, 1500, 0.6)],
            ours=True,
            variant="otel",
            instrumentation="queue_otel",
            spans=[{"spans_exported": 4096}, {"spans_exported": 512}],
        ),
        "p": row("P", [figures(1000, 1.0, 2000, 0.5)] * 2),
        "p+otel": row(
            "P + OpenTelemetry",
            [figures(500, 1.5, 1000, 0.75)] * 2,
            variant="otel",
            instrumentation="p-otel",
        ),
        "n": row("N", [figures(800, 1.0, 2000, 0.5)] * 2, instrumentation="none"),
    }
    return document


def test_report_instrumentation_off_and_on() -> None:
    markdown = report.render(_instrumented_document())
    assert "commit `abc1234+dirty`" in markdown.split("####", 1)[0]
    assert "kernel 6.1.0, Python 3.11" in markdown.split("####", 1)[0]
    section = markdown.split("#### OpenTelemetry instrumentation: each library off and on")[1]
    section = section.split("####", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| library | instrumentation | jobs/s, 1 worker: off | on |")
    assert rows[1] == (
        "| queue_core | queue_otel | 5,000 | 2,000 | 0.40x | 0%; 50% | +0.400 (0.200 -> 0.600) "
        "| 3,000 | 1,500 | +0.300 (0.300 -> 0.600) | 4,096; 512 |"
    )
    assert rows[2] == (
        "| P | p-otel | 1,000 | 500 | 0.50x | 0%; 0% | +0.500 (1.000 -> 1.500) | 2,000 | 1,000 "
        "| +0.250 (0.500 -> 0.750) | - |"
    )
    assert len(rows) == 3  # N has no otel row
    # queue_core instrumented against the best instrumented peer, from the same run.
    assert "jobs/s with 1 worker, instrumented: queue_core + queue_otel 2,000, **4.00x**" in (
        section
    )
    assert "enqueue /s, instrumented: queue_core + queue_otel 1,500, **1.50x**" in section
    assert "No OpenTelemetry instrumentation exists for N " in section
    cpu = markdown.split("#### CPU per job", 1)[1].split("####", 1)[0]
    assert "| P + OpenTelemetry | 1.500 (1.50x) |" in cpu and "| P | **1.000** (1.00x) |" in cpu
    models = markdown.split("#### Worker models as benchmarked", 1)[1].split("####", 1)[0]
    assert "| N | 1 main process + 1 pool process x 1 task | 2 | 1 x 8 = 8 | 2 x 8 = 16 |" in (
        models
    )
    spreads = markdown.split("#### Spread between runs", 1)[1].split("####", 1)[0]
    row = next(line for line in spreads.splitlines() if line.startswith("| queue_core + "))
    assert "| 50% |" in row  # 1 worker jobs/s: (2500 - 1500) / 2000
    # An instrumented peer row is compared with the best peer, never counted as one.
    document = _instrumented_document()
    document["libraries"]["p+otel"]["figures"]["process1_cpu_ms"] = 0.5
    cpu = report.render(document).split("#### CPU per job", 1)[1].split("####", 1)[0]
    assert "| P | **1.000** (1.00x) |" in cpu and "| P + OpenTelemetry | 0.500 (0.50x) |" in cpu


def test_report_without_instrumented_rows() -> None:
    markdown = report.render(_document())
    section = markdown.split("#### OpenTelemetry instrumentation: each library off and on")[1]
    assert "Not measured in this run" in section.split("####", 1)[0]


def test_group_cpu_counts_a_process_group() -> None:
    # A process group of its own (as the harness starts workers) that burns 0.35 s of CPU:
    # /proc counts it in clock ticks, which can read a burn of exactly 0.3 s as 0.29.
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.35: pass\n"
    busy = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(60)"], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        reading = group_cpu([busy.pid])
        while reading.seconds < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
            reading = group_cpu([busy.pid])
        assert reading.processes == 1 and 0.3 <= reading.seconds < 5, reading
        assert group_cpu([busy.pid + 10**7]).processes == 0  # no such group
    finally:
        busy.kill()
        busy.wait()


def test_commit_names_the_checkout() -> None:
    assert re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", commit()), commit()


def test_every_otel_row_is_its_peer_plus_an_instrumentation() -> None:
    otel = [library for library in LIBRARIES if library.variant == "otel"]
    assert {library.key for library in otel} >= {
        "queue_core+otel",
        "celery+otel",
        "dramatiq+otel",
        "taskiq+otel",
        "arq+otel",
        "rq+otel",
    }
    for library in otel:
        base = BY_KEY[library.key.removesuffix("+otel")]
        assert library.module == base.module and library.venv != base.venv, library
        assert library.instrumentation, library
        if not library.key.startswith("queue_core"):
            # The peer's own pins (its extras aside), the instrumentation's and the SDK's.
            plain = {re.sub(r"\[.*\]", "", r) for r in base.requirements}
            assert plain <= {re.sub(r"\[.*\]", "", r) for r in library.requirements}
            assert OTEL_SDK in library.requirements, library
    for key in ("saq", "bullmq"):  # no instrumentation exists: said so in the report
        assert BY_KEY[key].instrumentation == "none"


def test_lua_steps_clocks_every_step_of_a_settle() -> None:
    done = _bench("bench.lua_steps", "--jobs", "300", timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("300 no-op jobs, concurrency 10, events on; Redis CPU")
    assert lines[1].startswith("a mark costs ")
    steps = {
        line[:44].strip(): (float(line.split("us/job")[1].split("%")[0]), line)
        for line in lines[2:]
    }
    named = {mark.name for mark in STEPS if mark.name not in (None, ALONE)}
    # Every step ran (its mark was reached) for every job; the shares make the whole.
    assert set(steps) == named, set(steps) ^ named
    for name in ("complete: read and check the record", "finish: encode the record"):
        assert "(1.00 per job)" in steps[name][1], steps[name]
    assert 99.0 <= sum(share for share, _ in steps.values()) <= 101.0


def test_lua_steps_refuses_a_mark_whose_anchor_is_gone(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    shutil.copytree(ROOT / "queue_core" / "scripts", scripts)
    with pytest.raises(AnchorError, match=r"finish.lua: 0 lines read 'gone\(\)' \(a step\)"):
        mark_scripts(scripts, [Mark("includes/finish.lua", "gone()", "a step")])
    mark_scripts(scripts, STEPS[:3])  # the real marks apply, each where its anchor is
    marked = (scripts / "move_to_completed.lua").read_text()
    assert "--@include step_clock\n--@include allow_when_full" in marked
    assert "step_clock(nil)\nallow_when_full(K)\nlocal now = now_ms()\n" in marked
    assert f"step_clock('call: guard, clock')\nstep_clock('{ALONE}')\n" in marked


def test_redis_floor_runs_three_scripts_on_the_same_jobs() -> None:
    done = _bench("bench.redis_floor", "--jobs", "300", "--rounds", "1", "--per-call", "3,1")
    # Each script completes every job, or the run stops (checked in the script's replies).
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "300 no-op jobs x 1 rounds, calls made one at a time: Redis CPU per job (us)"
    rows = [line.split("|")[1:-1] for line in lines if line.startswith("| ") and "jobs" not in line]
    assert [row[0].strip() for row in rows] == ["1", "3"]
    for row in rows:
        off, on, least, ratio = (float(cell.strip().rstrip("x")) for cell in row[1:])
        assert min(off, on, least) > 0 and ratio == pytest.approx(off / least, abs=0.01)
    fits = [line.split() for line in lines if line.startswith("  ")]
    assert [" ".join(fit[:-3]) for fit in fits] == [
        "queue_core, events off",
        "queue_core, events on",
        "the least",
    ]


def test_redis_floor_refuses_bad_sizes() -> None:
    done = _bench("bench.redis_floor", "--per-call", "1,many")
    assert done.returncode == 2 and "--per-call takes whole numbers" in done.stderr
    done = _bench("bench.redis_floor", "--per-call", "0")
    assert done.returncode == 2 and "at least 1" in done.stderr
