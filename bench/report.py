"""Render ``bench/results/latest.json`` as Markdown, and put it into README.md.

    python -m bench.report [--results bench/results/latest.json] [--readme]

prints the Markdown (and writes ``latest.md`` next to the JSON); ``--readme`` also
replaces the part of README.md between ``<!-- bench:start -->`` and ``<!-- bench:end -->``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
ROOT = Path(__file__).resolve().parent.parent


class Column(NamedTuple):
    key: str
    header: str
    higher_is_better: bool
    digits: int  # decimals shown


COLUMNS = (
    Column("enqueue_per_s", "enqueue /s", True, 0),
    Column("enqueue_p50_ms", "enqueue p50 ms", False, 2),
    Column("enqueue_p99_ms", "enqueue p99 ms", False, 2),
    Column("bulk_per_s", "bulk enqueue /s", True, 0),
    Column("process1_per_s", "1 worker jobs/s", True, 0),
    Column("process2_per_s", "2 workers jobs/s", True, 0),
    Column("startup_s", "worker start s", False, 2),
    Column("pickup_p50_ms", "pick-up p50 ms", False, 1),
    Column("pickup_p99_ms", "pick-up p99 ms", False, 1),
    Column("memory_bytes_per_job", "Redis bytes/job", False, 0),
)
# CPU per job, every row: the workers' (every process of their process groups, from the
# first jobs to the last) and the producer's (the harness process, over the timed calls).
CPU_COLUMNS = (
    Column("process1_cpu_ms", "worker CPU ms/job, 1 worker", False, 3),
    Column("process2_cpu_ms", "worker CPU ms/job, 2 workers", False, 3),
    Column("enqueue_cpu_ms", "producer CPU ms/enqueue call", False, 3),
)
# Redis per job, every row: what the library's calls cost the Redis every worker shares.
REDIS_COLUMNS = (
    Column("process1_redis_us", "Redis CPU us/job, 1 worker", False, 1),
    Column("process1_redis_commands", "Redis commands/job, 1 worker", False, 1),
    Column("process2_redis_us", "Redis CPU us/job, 2 workers", False, 1),
    Column("enqueue_redis_us", "Redis CPU us/enqueue call", False, 1),
    Column("enqueue_redis_commands", "Redis commands/enqueue call", False, 1),
)
PHASE_OF = {
    "process1_redis_us": "process1",
    "process1_redis_commands": "process1",
    "process2_redis_us": "process2",
    "enqueue_redis_us": "enqueue",
    "enqueue_redis_commands": "enqueue",
    "enqueue_cpu_ms": "enqueue",
    "process1_cpu_ms": "process1",
    "process2_cpu_ms": "process2",
    "enqueue_per_s": "enqueue",
    "enqueue_p50_ms": "enqueue",
    "enqueue_p99_ms": "enqueue",
    "bulk_per_s": "bulk",
    "process1_per_s": "process1",
    "process2_per_s": "process2",
    "startup_s": "process1",
    "pickup_p50_ms": "pickup",
    "pickup_p99_ms": "pickup",
    "memory_bytes_per_job": "memory",
}


def number(value: float, digits: int) -> str:
    if digits == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.{digits}f}"


def best_values(libraries: dict[str, Any], columns: Sequence[Column] = COLUMNS) -> dict[str, float]:
    """The best peer's value per column: this project's own rows, and the peers' rows
    with an OpenTelemetry instrumentation on, are compared with it, never counted in it."""
    best: dict[str, float] = {}
    for column in columns:
        values = [
            entry["figures"][column.key]
            for entry in libraries.values()
            if not entry.get("ours")
            and entry.get("variant") != "otel"
            and entry.get("figures", {}).get(column.key) is not None
        ]
        if values:
            best[column.key] = max(values) if column.higher_is_better else min(values)
    return best


def cell(entry: dict[str, Any], column: Column, best: dict[str, float]) -> str:
    value = entry.get("figures", {}).get(column.key)
    if value is None:
        if not entry["install"]["ok"]:
            return "install failed"
        if column.key == "bulk_per_s" and entry.get("bulk_api") is None and entry["runs"]:
            return "n/a"
        ran = {p for r in entry["runs"] for p in r.get("params", {}).get("phases", [])}
        if entry["runs"] and PHASE_OF[column.key] not in ran:
            return "-"
        return "failed"
    text = number(value, column.digits)
    if column.key in best and best[column.key] > 0:
        ratio = value / best[column.key]
        if abs(ratio - 1) < 1e-9 and not entry.get("ours"):
            return f"**{text}** (1.00x)"
        return f"{text} ({ratio:.2f}x)"
    return text


def main_table(document: dict[str, Any], columns: Sequence[Column] = COLUMNS) -> list[str]:
    libraries: dict[str, Any] = document["libraries"]
    best = best_values(libraries, columns)
    lines = [
        "| library | " + " | ".join(c.header for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for entry in libraries.values():
        lines.append(
            f"| {row_name(entry)} | " + " | ".join(cell(entry, c, best) for c in columns) + " |"
        )
    return lines


def row_name(entry: dict[str, Any]) -> str:
    return f"{entry['label']} {entry.get('version', '')}".strip()


def spread_text(entry: dict[str, Any], key: str) -> str:
    value = spread(entry, key)
    return "-" if value is None else f"{value:.0%}"


def spread_table(document: dict[str, Any]) -> list[str]:
    """(max - min) / median over each row's runs, per figure of the tables above."""
    columns = [*COLUMNS, *CPU_COLUMNS, *REDIS_COLUMNS]
    lines = [
        "| library | " + " | ".join(c.header for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for entry in document["libraries"].values():
        cells = [spread_text(entry, c.key) for c in columns]
        lines.append(f"| {row_name(entry)} | " + " | ".join(cells) + " |")
    return lines


def processes_seen(entry: dict[str, Any], key: str, workers: int) -> int | None:
    """The most processes seen per worker in its process group at the end of a phase."""
    counts = [
        r["details"][key]["processes"]
        for r in entry.get("runs", [])
        if r.get("details", {}).get(key, {}).get("processes")
    ]
    return max(counts) // workers if counts else None


def worker_model_table(document: dict[str, Any]) -> list[str]:
    """What was benchmarked as "a worker", per row, side by side."""
    lines = [
        "| library | one worker process started by the harness | OS processes per worker "
        "(seen) | 1-worker phase: jobs at once | 2-worker phase: jobs at once |",
        "|---|---|---:|---:|---:|",
    ]
    for entry in document["libraries"].values():
        model = entry.get("worker_model") or entry.get("settings", {}).get("concurrency", "")
        seen = [processes_seen(entry, f"process{n}", n) for n in (1, 2)]
        shown = "; ".join(dict.fromkeys(str(n) for n in seen if n is not None)) or "-"
        at_once = entry.get("jobs_at_once")
        phases = [f"{n} x {at_once} = {n * at_once}" for n in (1, 2)] if at_once else ["-", "-"]
        lines.append(f"| {row_name(entry)} | {model} | {shown} | {phases[0]} | {phases[1]} |")
    return lines


def otel_pairs(libraries: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(plain row, otel row) of every library measured with and without its
    instrumentation, in the order of the rows."""
    pairs = []
    for key, entry in libraries.items():
        base = libraries.get(key.removesuffix("+otel"))
        if entry.get("variant") == "otel" and key.endswith("+otel") and base is not None:
            pairs.append((base, entry))
    return pairs


def _figure(entry: dict[str, Any], key: str) -> float | None:
    value = entry.get("figures", {}).get(key)
    return float(value) if value is not None else None


def _off_on(off: float | None, on: float | None, digits: int) -> list[str]:
    return ["-" if v is None else number(v, digits) for v in (off, on)]


def _added(off: float | None, on: float | None) -> str:
    if off is None or on is None:
        return "-"
    return f"{on - off:+.3f} ({number(off, 3)} -> {number(on, 3)})"


def instrumented_table(document: dict[str, Any]) -> list[str]:
    """Every library with an OpenTelemetry instrumentation, off and on, and queue_core's
    instrumented throughput against the best instrumented peer's."""
    libraries: dict[str, Any] = document["libraries"]
    pairs = otel_pairs(libraries)
    if not pairs:
        return ["Not measured in this run (it needs a library's row and its otel row)."]
    lines = [
        "| library | instrumentation | jobs/s, 1 worker: off | on | on/off "
        "| spread (off; on) | added worker CPU ms/job (off -> on) | enqueue /s: off | on "
        "| added producer CPU ms/enqueue (off -> on) | spans exported by the worker, per run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for off, on in pairs:
        jobs = [_figure(off, "process1_per_s"), _figure(on, "process1_per_s")]
        ratio = f"{jobs[1] / jobs[0]:.2f}x" if jobs[0] and jobs[1] is not None else "-"
        spreads = "; ".join(spread_text(e, "process1_per_s") for e in (off, on))
        enqueue = [_figure(off, "enqueue_per_s"), _figure(on, "enqueue_per_s")]
        cells = [
            f"{off['label']} {off.get('version', '')}".strip(),
            on.get("instrumentation") or "?",
            *_off_on(jobs[0], jobs[1], 0),
            ratio,
            spreads,
            _added(_figure(off, "process1_cpu_ms"), _figure(on, "process1_cpu_ms")),
            *_off_on(enqueue[0], enqueue[1], 0),
            _added(_figure(off, "enqueue_cpu_ms"), _figure(on, "enqueue_cpu_ms")),
            spans_text(on),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *instrumented_headline(pairs)]
    none = [e["label"] for e in libraries.values() if e.get("instrumentation") == "none"]
    if none:
        lines += [
            "",
            f"No OpenTelemetry instrumentation exists for {', '.join(none)} (none on PyPI, "
            "none in the library): not measured instrumented.",
        ]
    return lines


def spans_text(entry: dict[str, Any]) -> str:
    """The spans the worker of the 1-worker phase had exported when it was stopped, per run
    (- when it exported none by then: a BatchSpanProcessor exports every 512 spans or 5 s)."""
    counts = [
        r.get("details", {}).get("process1", {}).get("spans_exported")
        for r in entry.get("runs", [])
    ]
    if not any(counts):
        return "-"
    return "; ".join("-" if not n else number(n, 0) for n in counts)


def instrumented_headline(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[str]:
    ours = [on for _, on in pairs if on.get("ours")]
    peers = [on for _, on in pairs if not on.get("ours")]
    if not ours or not peers:
        return []
    lines = []
    for key, what in (("process1_per_s", "jobs/s with 1 worker"), ("enqueue_per_s", "enqueue /s")):
        value = _figure(ours[0], key)
        measured = [(v, e) for e in peers if (v := _figure(e, key)) is not None]
        if value is None or not measured:
            continue
        best, entry = max(measured, key=lambda pair: pair[0])
        lines.append(
            f"- {what}, instrumented: {ours[0]['label']} {number(value, 0)}, "
            f"**{value / best:.2f}x** the best instrumented peer ({entry['label']}, "
            f"{number(best, 0)})."
        )
    return lines


def caps(document: dict[str, Any]) -> list[str]:
    """Where a library hit a time cap: fewer jobs processed or pick-ups sampled."""
    notes: list[str] = []
    params = document["params"]
    for entry in document["libraries"].values():
        parts: list[str] = []
        for key, label in (("process1", "1 worker"), ("process2", "2 workers")):
            done = [r["details"][key] for r in entry["runs"] if key in r.get("details", {})]
            capped = [d for d in done if d.get("stopped_after_s")]
            if capped:
                counts = ", ".join(f"{d['done']:,}" for d in capped)
                parts.append(
                    f"{label}: stopped after {params['process_max_s']:g} s ({counts} jobs)"
                )
            filled = [d["jobs"] for d in done if d["jobs"] < params["process_jobs"]]
            if filled:
                parts.append(
                    f"{label}: {', '.join(f'{n:,}' for n in filled)} jobs enqueued "
                    f"in the {params['fill_max_s']:g} s allowed"
                )
        samples = [
            r["details"]["pickup"]["samples"]
            for r in entry["runs"]
            if "pickup" in r.get("details", {})
        ]
        if samples and min(samples) < params["pickup_samples"]:
            parts.append(
                f"pick-up: {', '.join(map(str, samples))} samples per run "
                f"(capped at {params['pickup_max_s']:g} s)"
            )
        if parts:
            notes.append(f"- {entry['label']}: " + "; ".join(parts) + ".")
    return notes


def settings_table(document: dict[str, Any]) -> list[str]:
    lines = [
        "| library | installed | producer | worker | concurrency per process | bulk API |",
        "|---|---|---|---|---|---|",
    ]
    for entry in document["libraries"].values():
        settings = entry.get("settings", {})
        extra = "; ".join(
            f"{k}: {v}"
            for k, v in settings.items()
            if k not in ("producer", "worker", "concurrency")
        )
        worker = settings.get("worker", "")
        if extra:
            worker = f"{worker}; {extra}"
        pins = ", ".join(f"`{r}`" for r in entry["requirements"])
        lines.append(
            f"| {entry['label']} | {pins} (redis-py {entry.get('redis_py', '?')}) "
            f"| {settings.get('producer', '')} | {worker} | {settings.get('concurrency', '')} "
            f"| {entry.get('bulk_api') or 'none'} |"
        )
    return lines


def otel_table(document: dict[str, Any]) -> list[str]:
    libraries = document["libraries"]
    off = libraries.get("queue_core", {}).get("figures")
    on = libraries.get("queue_core+otel", {}).get("figures")
    if not off or not on:
        return ["Not measured in this run (it needs the queue_core and queue_core+otel rows)."]
    lines = [
        "| figure | queue_otel off | on | change |",
        "|---|---:|---:|---:|",
    ]
    for column in COLUMNS:
        a, b = off.get(column.key), on.get(column.key)
        if a is None or b is None or a == 0:
            continue
        change = (b - a) / a
        lines.append(
            f"| {column.header} | {number(a, column.digits)} | {number(b, column.digits)} "
            f"| {change:+.0%} |"
        )
    return lines


# The figures that deadlines and events can move (per-call costs of enqueueing and
# processing).
VARIANT_FIGURES = (
    "enqueue_per_s",
    "enqueue_p50_ms",
    "enqueue_p99_ms",
    "bulk_per_s",
    "process1_per_s",
    "process2_per_s",
    "pickup_p50_ms",
    "pickup_p99_ms",
    "process1_redis_us",
    "process1_redis_commands",
    "enqueue_redis_us",
)


def spread(entry: dict[str, Any], key: str) -> float | None:
    """How far apart a row's runs are for one figure: (max - min) / median."""
    values: list[float] = [
        r["figures"][key] for r in entry.get("runs", []) if r.get("figures", {}).get(key)
    ]
    if len(values) < 2:
        return None
    return (max(values) - min(values)) / statistics.median(values)


def variant_table(document: dict[str, Any], off_key: str, what: str) -> list[str]:
    """queue_core with a feature off (the ``off_key`` row) against on (its own row, the
    default): the change per figure, and how much each row's runs varied."""
    libraries = document["libraries"]
    on_entry = libraries.get("queue_core", {})
    off_entry = libraries.get(off_key, {})
    on, off = on_entry.get("figures"), off_entry.get("figures")
    if not off or not on:
        return [f"Not measured in this run (it needs the queue_core and {off_key} rows)."]
    lines = [
        f"| figure | {what} off | on (default: the queue_core row) | change "
        "| spread between runs (off; on) |",
        "|---|---:|---:|---:|---:|",
    ]
    for column in (*COLUMNS, *REDIS_COLUMNS):
        if column.key not in VARIANT_FIGURES:
            continue
        a, b = off.get(column.key), on.get(column.key)
        if a is None or b is None or a == 0:
            continue
        spreads = [spread(entry, column.key) for entry in (off_entry, on_entry)]
        shown = (
            "-"
            if spreads == [None, None]
            else "; ".join("-" if s is None else f"{s:.1%}" for s in spreads)
        )
        lines.append(
            f"| {column.header} | {number(a, column.digits)} | {number(b, column.digits)} "
            f"| {(b - a) / a:+.1%} | {shown} |"
        )
    return lines


def rss_lines(document: dict[str, Any]) -> list[str]:
    rss = document.get("rss")
    if not rss:
        return ["RSS run: not run."]
    if "rss_end_mib" not in rss:
        return [f"RSS run ({rss['jobs']:,} jobs): failed: {rss.get('error', '')[:500]}"]
    growth = rss["rss_end_mib"] - rss["rss_warm_mib"]
    hwm = rss.get("vm_hwm_kib")
    return [
        f"queue_core worker RSS (one process, concurrency "
        f"{rss.get('settings', {}).get('concurrency', '?')}): "
        f"**{rss['rss_warm_mib']:.1f} MiB** after {rss['warmup_jobs']:,} warm-up jobs, "
        f"**{rss['rss_end_mib']:.1f} MiB** after {rss['jobs']:,} jobs "
        f"({growth:+.1f} MiB; peak VmHWM {hwm / 1024 if hwm else 0:.1f} MiB), "
        f"at {rss.get('per_s', 0):,.0f} jobs/s while the producer kept at most 40,000 "
        "jobs waiting.",
    ]


def startup_line(result: dict[str, Any] | None) -> str:
    """``bench/startup.py``'s result as one line."""
    if not result:
        return "Worker start-up from the command: not measured in this run."
    if result.get("error"):
        return f"Worker start-up from the command: failed: `{_short(result['error'])}`"
    figures = result["figures"]
    done, start = figures["first_job_done_s"], figures["first_job_start_s"]
    return (
        f"`{result['command']}` with one job waiting, started {result['starts']} times "
        f"(after one warm-up start): **{done['median']:.2f} s** median from starting the "
        f"process to the job completed (p90 {done['p90']:.2f} s; to the job's start "
        f"{start['median']:.2f} s). Importing the command alone (`python -c 'import "
        f"queue_core.cli.worker'`) takes {figures['import_s']['median']:.2f} s of it. "
        f"After SIGTERM the process exits in {figures['stop_s']['median']:.2f} s."
    )


def problems(document: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for entry in document["libraries"].values():
        if not entry["install"]["ok"]:
            lines.append(
                f"- {entry['label']}: install failed: `{_short(entry['install']['error'])}`"
            )
        for error in entry["errors"]:
            lines.append(f"- {entry['label']}: `{_short(error)}`")
    return lines


def _short(text: str, limit: int = 400) -> str:
    one_line = " ".join(text.split()).replace("`", "'")
    return one_line if len(one_line) <= limit else one_line[:limit] + "..."


def render(document: dict[str, Any], heading: str = "###") -> str:
    machine = document["machine"]
    params = document["params"]
    runs = document["runs"]
    out = [
        f"{heading} Results",
        "",
        f"Run of {document['date']}, commit `{document.get('commit', 'unknown')}`, on "
        f"{machine['cpu']} ({machine['cores']} cores), kernel "
        f"{machine.get('kernel', machine['platform'])}, Python {machine['python']}. Every "
        "figure and every ratio in these tables comes from this one run.",
        "",
        f"{'Quick smoke run, not for comparison. ' if document.get('quick') else ''}"
        f"Median of {runs} run{'s' if runs != 1 else ''} per library; every library on the "
        f"same private Redis {machine['redis']}, one after another, in the same run. "
        "In brackets: the ratio to the best peer's value of the column (in bold; "
        "queue_core's own rows are not peers, nor are the peers' *+ OpenTelemetry* rows); "
        "higher is better for throughputs (/s), lower for times and memory.",
        "",
        *main_table(document),
        "",
        f"- enqueue: {params['enqueue_jobs']:,} calls one at a time (after 100 warm-up calls); "
        "p50/p99 of one call.",
        f"- bulk: {params['bulk_jobs']:,} jobs in calls of {params['bulk_batch']} through the "
        "library's bulk API; n/a where it has none (a loop or a `group` is not bulk).",
        f"- workers: up to {params['process_jobs']:,} no-op jobs enqueued first, then one (two) "
        "worker processes started; jobs per second from the first job's start to the last "
        "one's. Worker start: from starting one worker process to its first job's start "
        "(imports, connecting, the library's own set-up). Concurrency per process: each "
        f"library's default (table below); a library is stopped after "
        f"{params['process_max_s']:g} s and measured on the jobs it started by then.",
        f"- pick-up: one idle worker; up to {params['pickup_samples']} times (at most "
        f"{params['pickup_max_s']:g} s per run): take the time, enqueue one job, the job "
        "records when it starts (`time.monotonic()` written to a pipe); randomized pauses "
        "between samples so that pollers are caught at random points of their period.",
        f"- memory: Redis `used_memory` (less client buffers) before and after "
        f"{params['memory_jobs']:,} waiting jobs, divided; Redis flushed between libraries "
        "(first run only: it does not vary).",
        *caps(document),
        "",
        f"{heading}# OpenTelemetry instrumentation: each library off and on",
        "",
        "Every library that has an OpenTelemetry instrumentation, without it (its row above) "
        "and with it (its *+ OpenTelemetry* row, the same pins plus the instrumentation, in "
        "a venv of its own), on in the producer and in the workers, all with one set-up: "
        "every trace sampled (ALWAYS_ON), spans through a BatchSpanProcessor into an "
        "exporter that drops them, and the instrumentation's metrics, where it has any, "
        "read every second into one that drops them (`bench/peers/_otel.py`; queue_core's "
        "`bench/otel_overhead.py`). Jobs/s: one worker process (the *1 worker* column). "
        "Added worker CPU: the worker processes' CPU per job (user + system of every "
        "process in their process groups, from the first job to the last) with the "
        "instrumentation less without. Added producer CPU: the producer process's CPU per "
        "enqueue call, likewise. Spread: (max - min) / median of jobs/s over each row's "
        "runs. Spans exported: what the worker's exporter had received when the worker was "
        "stopped (the proof that the instrumentation was on; - before the first export).",
        "",
        *instrumented_table(document),
        "",
        f"{heading}# CPU per job",
        "",
        "Every row: the worker processes' CPU time per job (user + system, from "
        "`/proc/<pid>/stat`, of every process in each worker's process group, children "
        "waited for included, from the first jobs to the last: start-up left out), and the "
        "producer's (`time.process_time()` of the producer process over the timed enqueue "
        "calls). In brackets: the ratio to the best peer's value (lower is better).",
        "",
        *main_table(document, CPU_COLUMNS),
        "",
        f"{heading}# Redis per job",
        "",
        "Every row: Redis's CPU time per job (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`) "
        "and the commands it ran per job (`INFO commandstats`: the commands a script or "
        "function runs counted one by one, the script call itself not), over the same span "
        "as the worker CPU above, and over the timed enqueue calls. Every worker of a "
        "deployment shares one Redis, so Redis's CPU per job bounds the throughput of all "
        "of them together. In brackets: the ratio to the best peer's value (lower is "
        "better). `python -m bench.events_cost --before <checkout>` compares queue_core's "
        "figures with another version's in one run.",
        "",
        *main_table(document, REDIS_COLUMNS),
        "",
        f"{heading}# Worker models as benchmarked",
        "",
        "What one worker is for each library (the 1-worker phase starts one, the 2-worker "
        "phase two, each as its own process group): its processes and how many jobs it runs "
        "at once. OS processes seen: counted in the worker's process group at the end of "
        "each phase (a library's main process and its pool or worker processes).",
        "",
        *worker_model_table(document),
        "",
        f"{heading}# Spread between runs",
        "",
        "(max - min) / median of each figure over the runs of each row (- for one run): "
        "the noise a difference between rows is to be read against.",
        "",
        *spread_table(document),
        "",
        f"{heading}# queue_otel off and on",
        "",
        "queue_core alone and with queue_otel on in the producer and the workers: every trace "
        "sampled, a BatchSpanProcessor into an exporter that drops spans, metrics read every "
        "second.",
        "",
        *otel_table(document),
        "",
        f"{heading}# Deadlines off and on",
        "",
        "queue_core's default is a deadline on every Redis call (`redis_timeout=5.0`): the "
        "**on** column is the queue_core row above. **Off** is the row *queue_core, no "
        "deadlines*: the same code with `redis_timeout=None` in the producer (`Queue`) and "
        "in the workers (`Worker`), run in the same rotation. On costs a producer one "
        "shared timer for all its calls in flight and a worker one watchdog timer for its "
        "command pipeline. "
        "Change: on / off - 1 (for /s, negative is slower; for ms, positive is slower). "
        "Spread: (max - min) / median over each row's runs, the noise a change is to be "
        "read against.",
        "",
        *variant_table(document, "queue_core+no_deadlines", "deadlines"),
        "",
        f"{heading}# Job events off and on",
        "",
        "queue_core records every transition of a job in its queue's events stream (an "
        "`XADD` inside each transition's script, capped with `MAXLEN ~ 10000`: added, "
        "active, completed, failed...; `QueueEvents` and `wait_until_finished` read it). "
        "The **on** column is "
        "the queue_core row above; **off** is the row *queue_core, no events*: the same code "
        "with `queue.set_events_max_length(0)`, run in the same rotation. "
        "Change and spread as above: on a shared machine throughput swings by tens of "
        "percent between runs, more than events cost. `python -m bench.events_cost` "
        "measures the cost where it is steadiest, alternating events on and off in one run: "
        "Redis CPU and Redis commands per job, the worker's CPU per job, jobs per second.",
        "",
        *variant_table(document, "queue_core+no_events", "events"),
        "",
        f"{heading}# Worker memory over a long run",
        "",
        *rss_lines(document),
        "",
        f"{heading}# Worker start-up from the command",
        "",
        startup_line(document.get("startup")),
        "",
        f"{heading}# Settings per library",
        "",
        "Each library's recommended or default production settings (details in the "
        "docstring of its adapter, `bench/peers/<name>.py`); every peer in its own venv "
        "with `hiredis` installed, as queue_core has it.",
        "",
        *settings_table(document),
        "",
    ]
    trouble = problems(document)
    if trouble:
        out += [f"{heading}# Failures", "", *trouble, ""]
    out += [
        f"{heading}# Machine and command",
        "",
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB; "
        f"{machine['platform']}; Python {machine['python']}; Redis {machine['redis']}. "
        f"{document['date']}; commit `{document.get('commit', 'unknown')}`. "
        f"Installs took {document['install_seconds']:.0f} s, "
        f"the whole run {document['wall_seconds']:.0f} s.",
        "",
        "```sh",
        "make bench   # = " + document["command"],
        "```",
        "",
    ]
    return "\n".join(out)


def update_readme(readme: Path, document: dict[str, Any]) -> None:
    """Replace the text between the bench markers with the rendered results."""
    text = readme.read_text()
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme}: no {START} ... {END} section")
    body = render(document, heading="###")
    readme.write_text(text[: start + len(START)] + "\n\n" + body + "\n" + text[end:])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/latest.json")
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text())
    markdown = render(document)
    args.results.with_suffix(".md").write_text(markdown)
    if args.readme:
        update_readme(ROOT / "README.md", document)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
