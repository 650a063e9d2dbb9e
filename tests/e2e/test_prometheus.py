"""A real Prometheus (Debian package ``prometheus``) scrapes a worker's ``/metrics`` and
answers PromQL queries over those metrics.

- One worker process (``tests/e2e/prom_worker.py``: ``PrometheusReader``, an SDK tracer,
  ``QueueInstrumentor`` observing its queue) runs a known workload while a private
  Prometheus scrapes it every second. PromQL then gives exact counts per outcome, error
  type and job name, the queue's depth per state, the worker gauges and a p95.
- Prometheus stores the exemplars it read (it negotiates OpenMetrics): trace and span ids
  of spans the worker really recorded, each in the bucket its value belongs to.
- Names: the official ``opentelemetry-exporter-prometheus`` reader (the reference for the
  OpenTelemetry-to-Prometheus naming rules, which a Collector's Prometheus exporter also
  follows) and ``PrometheusReader`` on one ``MeterProvider`` expose the same families,
  with the same labels: for queue_otel's own metrics, and for instruments in other units
  of the semantic conventions from a meter with scope attributes.
- ``OTEL_METRICS_EXPORTER=queue_core_prometheus`` under ``opentelemetry-instrument`` serves
  the histograms of a worker that has no telemetry code.

Nothing is mocked and nothing sleeps for correctness: every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition, parser
from prometheus_client.parser import text_string_to_metric_families as parse_text

from queue_core import Queue, SyncQueue, Worker
from queue_otel import PrometheusReader, QueueInstrumentor
from queue_otel.semconv import JOB_BUCKETS
from tests.conftest import wait_counts
from tests.e2e.prom_worker import RATE_LIMIT_S, process
from tests.e2e.prometheus_server import JOB, PrometheusServer, finite, until
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
SPAN_ID = re.compile(r"^[0-9a-f]{16}$")

# The workload of the scraped worker: one "ok" job first (so that Prometheus has a sample
# before the rest and rate() sees an increase), then the others.
FIRST = ["enqueue ok 1"]
REST = ["enqueue ok 4", "enqueue flaky 2 3", "enqueue doomed 1 2", "enqueue throttled 1"]
FINAL_COUNTS = {
    "waiting": 0,
    "active": 0,
    "delayed": 0,
    "completed": 8,
    "failed": 1,
    "waiting_children": 0,
}


def generate_openmetrics(registry: CollectorRegistry) -> bytes:
    return exposition.generate_latest(registry)  # type: ignore[no-untyped-call, no-any-return]


def parse_openmetrics(text: str) -> list[Metric]:
    return list(parser.text_string_to_metric_families(text))  # type: ignore[no-untyped-call]


def child_env(**extra: str) -> dict[str, str]:
    """This environment without OpenTelemetry or queue_core settings, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "QUEUE_CORE_"))
    }
    env.update(PYTHONUNBUFFERED="1", QUEUE_CORE_LOG_FORMAT="json")
    env.update(extra)
    return env


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no output)"


@dataclass
class Scraped:
    """The scraped worker after its workload, and the Prometheus that scraped it."""

    prometheus: PrometheusServer
    queue: str
    started: float
    span_log: Path
    worker_log: Path

    @property
    def selector(self) -> str:
        return f'messaging_system="queue_core",messaging_destination_name="{self.queue}"'

    def expect(
        self, promql: str, expected: dict[str, float], by: str | tuple[str, ...] = ()
    ) -> None:
        """Poll until ``promql`` gives ``expected`` (keyed by the ``by`` labels)."""
        self.prometheus.until(
            lambda: self.prometheus.values(promql, by),
            lambda values: values == expected,
            what=f"{promql} == {expected}",
        )

    def spans(self) -> list[dict[str, str]]:
        """The spans the worker has written so far (a line being written is left out)."""
        complete = self.span_log.read_text().split("\n")[:-1]
        return [json.loads(line) for line in complete if line]


@pytest.fixture(scope="module")
def scraped(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scraped]:
    queue = f"q-prom-{uuid.uuid4().hex[:10]}"
    port = free_port()
    tmp = tmp_path_factory.mktemp("prom-worker")
    started = time.time()
    prometheus = PrometheusServer([f"127.0.0.1:{port}"]).start()
    scraped = Scraped(prometheus, queue, started, tmp / "spans.jsonl", tmp / "worker.log")
    with scraped.worker_log.open("wb") as log:
        command = [sys.executable, "-m", "tests.e2e.prom_worker", redis_server.url, queue]
        worker = subprocess.Popen(
            [*command, str(port), str(scraped.span_log)],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    stats = SyncQueue(queue, redis=redis_server.url)
    assert worker.stdin is not None

    def send(lines: Iterable[str]) -> None:
        assert worker.stdin is not None
        for line in lines:
            worker.stdin.write(line + "\n")
        worker.stdin.flush()

    try:
        try:
            scraped.expect(f'up{{job="{JOB}"}}', {"": 1.0})
            send(FIRST)
            scraped.expect(
                f"sum(messaging_process_duration_seconds_count{{{scraped.selector}}})", {"": 1.0}
            )
            send(REST)
            until(stats.get_counts, lambda counts: counts == FINAL_COUNTS, what="the workload")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nworker output:\n{tail(scraped.worker_log)}") from None
        yield scraped
    finally:
        stats.close()
        worker.stdin.close()  # the worker's command loop ends at EOF
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop(worker)
        prometheus.cleanup()


def test_promql_over_a_scraped_worker(scraped: Scraped) -> None:
    """Exact values, through PromQL, of what the workload did."""
    s = scraped.selector
    expect = scraped.expect

    # Job attempts: 5 ok, 2 flaky (fail, then complete), 1 doomed (fails twice, the second
    # time for good), 1 throttled (rate limited, then completes): 13 attempts.
    # Each attempt is one delivery, counted at the fetch, with no outcome; the outcomes
    # are on the process-duration histogram.
    expect(f"sum(messaging_client_consumed_messages_total{{{s}}})", {"": 13.0})
    for label in ("queue_core_job_outcome", "error_type"):
        expect(f'count(messaging_client_consumed_messages_total{{{s},{label}!=""}})', {})
    expect(
        f"sum by (queue_core_job_outcome) (messaging_process_duration_seconds_count{{{s}}})",
        {"completed": 8.0, "retry": 3.0, "failed": 1.0, "rate_limited": 1.0},
        by="queue_core_job_outcome",
    )
    expect(
        f"sum by (queue_core_job_outcome, error_type) "
        f'(messaging_process_duration_seconds_count{{{s},error_type!=""}})',
        {"retry/TransientError": 2.0, "retry/PoisonError": 1.0, "failed/PoisonError": 1.0},
        by=("queue_core_job_outcome", "error_type"),
    )
    expect(f"sum(messaging_process_duration_seconds_count{{{s}}})", {"": 13.0})
    expect(
        f"sum by (queue_core_job_name) (messaging_process_duration_seconds_count{{{s}}})",
        {"ok": 5.0, "flaky": 4.0, "doomed": 2.0, "throttled": 2.0},
        by="queue_core_job_name",
    )
    expect(
        f"sum by (queue_core_job_name) (messaging_client_sent_messages_total{{{s}}})",
        {"ok": 5.0, "flaky": 2.0, "doomed": 1.0, "throttled": 1.0},
        by="queue_core_job_name",
    )
    expect(f"sum(messaging_client_operation_duration_seconds_count{{{s}}})", {"": 9.0})

    # Failures for good, retries, end-to-end durations and first waits.
    expect(
        f"queue_core_job_failures_total{{{s}}}",
        {"doomed/PoisonError": 1.0},
        by=("queue_core_job_name", "error_type"),
    )
    expect(
        f"sum by (error_type) (queue_core_job_retries_total{{{s}}})",
        {"TransientError": 2.0, "PoisonError": 1.0},
        by="error_type",
    )
    expect(
        f"sum by (queue_core_job_outcome) (queue_core_job_duration_seconds_count{{{s}}})",
        {"completed": 8.0, "failed": 1.0},
        by="queue_core_job_outcome",
    )
    expect(f"sum(queue_core_job_wait_duration_seconds_count{{{s}}})", {"": 9.0})
    # The RateLimitError's hold. Only kind="manual" is checked: queue_core's worker also
    # reports the same hold a second time as kind="limiter" (no limiter is configured)
    # when the settling script's fetch of the next job sees the rate-limit key.
    manual = f'{s},queue_core_rate_limit_kind="manual"'
    expect(f"queue_core_rate_limit_delay_seconds_count{{{manual}}}", {"": 1.0})
    expect(f"queue_core_rate_limit_delay_seconds_sum{{{manual}}}", {"": RATE_LIMIT_S})

    # The gauges: the queue as Redis holds it, and the worker that is still running.
    expect(
        f"queue_core_queue_depth{{{s}}}",
        {state: float(n) for state, n in FINAL_COUNTS.items()},
        by="queue_core_job_state",
    )
    expect(f"queue_core_queue_oldest_job_age_seconds{{{s}}}", {"": 0.0})  # nothing waits
    expect(f"queue_core_worker_count{{{s}}}", {"": 1.0})
    expect(f"queue_core_worker_capacity{{{s}}}", {"": 2.0})
    expect(f"sum(queue_core_job_active{{{s}}})", {"": 0.0})

    # A latency percentile over the buckets, as a dashboard computes it.
    p95 = (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(messaging_process_duration_seconds_bucket{{{s}}}[1m])))"
    )
    value = scraped.prometheus.until(
        lambda: scraped.prometheus.values(p95).get("", float("nan")), finite, what=p95
    )
    assert 0.0 < value <= JOB_BUCKETS[-1], value

    # The scrape itself, and the resource as target_info.
    expect(f'up{{job="{JOB}"}}', {"": 1.0})
    expect(f'count(target_info{{job="{JOB}",telemetry_sdk_language="python"}})', {"": 1.0})


def bucket_bounds(le: str) -> tuple[float, float]:
    upper = float(le)
    bounds = [float("-inf"), *JOB_BUCKETS]
    lower = bounds[len([b for b in JOB_BUCKETS if b < upper])]
    return lower, upper


def test_exemplars_reach_prometheus(scraped: Scraped) -> None:
    """Every process-duration series got exemplars, each in its bucket, each pointing at
    the worker's ``process`` span that took the measurement."""
    prometheus, s = scraped.prometheus, scraped.selector
    by = ("queue_core_job_name", "error_type")
    series = {"ok/", "flaky/TransientError", "flaky/", "doomed/PoisonError", "throttled/"}
    counts = f"sum by ({', '.join(by)}) (messaging_process_duration_seconds_count{{{s}}})"
    prometheus.until(
        lambda: set(prometheus.values(counts, by)),
        lambda seen: seen == series,
        what=f"the process-duration series {series}",
    )

    def covered(groups: list[dict[str, Any]]) -> set[str]:
        return {"/".join(g["seriesLabels"].get(label, "") for label in by) for g in groups}

    buckets = prometheus.until(
        lambda: prometheus.exemplars(
            f"messaging_process_duration_seconds_bucket{{{s}}}", scraped.started
        ),
        lambda groups: covered(groups) == series,
        what=f"exemplars on the buckets of every series {series}",
    )
    ids: set[tuple[str, str]] = set()
    for group in buckets:
        lower, upper = bucket_bounds(group["seriesLabels"]["le"])
        assert group["exemplars"], group
        for exemplar in group["exemplars"]:
            labels = exemplar["labels"]
            assert set(labels) == {"trace_id", "span_id"}, exemplar
            assert TRACE_ID.match(labels["trace_id"]), exemplar
            assert SPAN_ID.match(labels["span_id"]), exemplar
            assert labels["trace_id"] != "0" * 32, exemplar
            assert lower < float(exemplar["value"]) <= upper, (group["seriesLabels"], exemplar)
            ids.add((labels["trace_id"], labels["span_id"]))

    # The ids are those of "process <queue>" spans the worker ended (and wrote down).
    until(
        lambda: {
            (span["trace_id"], span["span_id"])
            for span in scraped.spans()
            if span["name"] == f"process {scraped.queue}"
        },
        lambda spans: ids <= spans and len(spans) == 13,  # one span per attempt
        what=f"the exemplars' spans {ids} in the worker's span log",
    )


# ----------------------------------------------------------------------------- names

Shape = dict[str, tuple[str, frozenset[str], frozenset[str]]]


def shape(families: Iterable[Metric]) -> Shape:
    """Per family name: its type, the names of its samples and the names of its labels."""
    result: Shape = {}
    for family in families:
        samples = frozenset(sample.name for sample in family.samples)
        labels = frozenset(label for sample in family.samples for label in sample.labels)
        assert family.name not in result, family.name
        result[family.name] = (family.type, samples, labels)
    return result


def describe(family: tuple[str, frozenset[str], frozenset[str]]) -> str:
    kind, samples, labels = family
    return f"{kind} samples={sorted(samples)} labels={sorted(labels)}"


def differences(reference: Shape, ours: Shape) -> list[str]:
    """What ``ours`` does differently from ``reference``, one line per difference."""
    problems = [f"missing {n}: {describe(reference[n])}" for n in sorted(reference.keys() - ours)]
    problems += [f"extra {n}: {describe(ours[n])}" for n in sorted(ours.keys() - reference)]
    for name in sorted(reference.keys() & ours.keys()):
        (ref_type, ref_samples, ref_labels), (our_type, our_samples, our_labels) = (
            reference[name],
            ours[name],
        )
        if ref_type != our_type:
            problems.append(f"{name}: type {our_type}, the reference says {ref_type}")
        if ref_samples != our_samples:
            problems.append(f"{name}: samples {sorted(our_samples)} vs {sorted(ref_samples)}")
        if ref_labels != our_labels:
            problems.append(
                f"{name}: labels missing {sorted(ref_labels - our_labels)}, "
                f"extra {sorted(our_labels - ref_labels)}"
            )
    return problems


def sample_values(
    families: Iterable[Metric],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }


async def test_names_match_the_official_exporter(
    redis_url: str, queue_name: str, make_worker: Callable[..., Worker]
) -> None:
    official_registry = CollectorRegistry()
    official = PrometheusMetricReader(registry=official_registry)
    ours = PrometheusReader()
    meter_provider = MeterProvider(metric_readers=[official, ours])
    tracer_provider = TracerProvider()
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        observe_queues=[queue_name],
        observe_redis_url=redis_url,
    )
    try:
        queue = Queue(queue_name, redis=redis_url)
        try:
            async with make_worker(process, concurrency=2):
                for name, attempts in [("ok", 1), ("ok", 1), ("flaky", 2), ("doomed", 2)]:
                    await queue.add(name, attempts=attempts)
                await queue.add("throttled")
                await wait_counts(queue, completed=4, failed=1)
        finally:
            await queue.close()
        # The worker has stopped: nothing changes between the collections below.
        reference_text = generate_latest(official_registry).decode()
        our_text = generate_latest(ours.registry).decode()
        reference_om = generate_openmetrics(official_registry).decode()
        our_om = generate_openmetrics(ours.registry).decode()
    finally:
        instrumentor.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()

    reference, mine = shape(parse_text(reference_text)), shape(parse_text(our_text))
    # The workload reached every family (the parser names counters without _total): a
    # comparison of empty outputs would prove nothing.
    assert {
        "messaging_client_sent_messages",
        "messaging_client_consumed_messages",
        "messaging_client_operation_duration_seconds",
        "messaging_process_duration_seconds",
        "queue_core_job_wait_duration_seconds",
        "queue_core_job_duration_seconds",
        "queue_core_job_retries",
        "queue_core_job_failures",
        "queue_core_rate_limit_delay_seconds",
        "queue_core_job_active",
        "queue_core_worker_count",
        "queue_core_worker_capacity",
        "queue_core_queue_depth",
        "queue_core_queue_oldest_job_age_seconds",
        "target_info",
    } <= reference.keys(), sorted(reference)
    problems = differences(reference, mine)
    assert not problems, "text format, ours vs the reference:\n" + "\n".join(problems)
    om_differences = differences(
        shape(parse_openmetrics(reference_om)), shape(parse_openmetrics(our_om))
    )
    assert not om_differences, "OpenMetrics, ours vs the reference:\n" + "\n".join(om_differences)
    # Both readers saw the same measurements: the same samples, with the same values.
    assert sample_values(parse_text(our_text)) == sample_values(parse_text(reference_text))


def test_names_of_other_instruments_match_the_official_exporter() -> None:
    """``PrometheusReader`` reads every meter of its provider, not only queue_otel's (the
    module promises the Collector's names for "the OTLP stream"): units of the
    semantic conventions (``J``, ``Cel``, ``Hz``, ``W``, ``m``, ``TBy``, per week) and
    scope attributes must come out as the reference names them."""
    official_registry = CollectorRegistry()
    official = PrometheusMetricReader(registry=official_registry)
    ours = PrometheusReader()
    meter_provider = MeterProvider(metric_readers=[official, ours])
    try:
        meter = meter_provider.get_meter("hw.sensors", "1.0", attributes={"sensor.kind": "hw"})
        meter.create_counter("hw.energy", unit="J").add(5, {"hw.id": "psu0"})
        meter.create_histogram("hw.temperature", unit="Cel").record(41.5, {"hw.id": "cpu0"})
        meter.create_gauge("system.cpu.frequency", unit="Hz").set(2.4e9)
        meter.create_up_down_counter("hw.power", unit="W").add(120)
        meter.create_counter("cable.length", unit="m").add(3)
        meter.create_counter("disk.written", unit="TBy").add(2)
        meter.create_counter("backup.runs", unit="{run}/w").add(1)
        reference_text = generate_latest(official_registry).decode()
        our_text = generate_latest(ours.registry).decode()
    finally:
        meter_provider.shutdown()
    reference, mine = shape(parse_text(reference_text)), shape(parse_text(our_text))
    assert len(reference) == 8, sorted(reference)  # target_info and the seven instruments
    problems = differences(reference, mine)
    assert not problems, "PrometheusReader differs from the reference:\n" + "\n".join(problems)


# ------------------------------------------------------------- opentelemetry-instrument


def test_opentelemetry_instrument_serves_metrics(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    """``OTEL_METRICS_EXPORTER=queue_core_prometheus``: a worker with no telemetry code
    serves its histograms (with exemplars) on the configured host and port."""
    port = free_port()
    env = child_env(
        OTEL_METRICS_EXPORTER="queue_core_prometheus",
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(port),
        OTEL_TRACES_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="prom-e2e-worker",
    )
    log_path = tmp_path / "worker.log"
    command = [str(BIN / "opentelemetry-instrument"), sys.executable]
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [*command, "-m", "tests.e2e.prom_plain_worker", redis_url, queue_name],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    queue = SyncQueue(queue_name, redis=redis_url)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0)
    try:

        def answers() -> bool:
            assert worker.poll() is None, f"the worker exited:\n{tail(log_path)}"
            try:
                return http.get("/metrics").status_code == 200
            except httpx.TransportError:
                return False

        until(answers, bool, timeout=30, what=f"/metrics on port {port}", interval=0.1)
        queue.add("ok")
        until(queue.get_counts, lambda c: c["completed"] == 1, what="the job to complete")

        def histogram() -> list[Metric]:
            response = http.get("/metrics", headers={"Accept": OPENMETRICS})
            assert response.headers["content-type"].startswith("application/openmetrics-text")
            families = parse_openmetrics(response.text)
            return [f for f in families if f.name == "messaging_process_duration_seconds"]

        found = until(histogram, bool, timeout=15, what="the histogram", interval=0.1)
        buckets = [s for s in found[0].samples if s.name.endswith("_bucket")]
        assert {s.labels["messaging_destination_name"] for s in buckets} == {queue_name}
        assert [s.value for s in buckets if s.labels["le"] == "+Inf"] == [1.0]
        # The first collection that shows the measurement carries its exemplar.
        exemplars = [s.exemplar for s in buckets if s.exemplar is not None]
        assert len(exemplars) == 1, buckets
        assert TRACE_ID.match(exemplars[0].labels["trace_id"]), exemplars

        families = {f.name: f for f in parse_text(http.get("/metrics").text)}
        names = {s.name for s in families["messaging_process_duration_seconds"].samples}
        assert "messaging_process_duration_seconds_bucket" in names
        assert families["target_info"].samples[0].labels["service_name"] == "prom-e2e-worker"
    finally:
        http.close()
        queue.close()
        stop(worker)
    assert worker.returncode == 0, tail(log_path)
