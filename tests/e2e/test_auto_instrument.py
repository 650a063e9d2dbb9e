"""``opentelemetry-instrument`` with no code change.

``tests/e2e/app_auto.py`` (a producer and a worker in one process, no instrumentation
code) runs under ``opentelemetry-instrument`` with OTLP/HTTP exporters configured by
environment variables only. Every instrumentation installed here auto-loads: queue_core's
(through its entry point), redis, structlog, logging and fastapi. What the process exports
at exit lands in the OTLP receiver the tests start.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.e2e.app_auto import JOB_LOG_LINE
from tests.e2e.otlp_receiver import OtlpReceiver, ReceivedLog, ReceivedSpan, latest
from tests.e2e.support import ROOT, clean_env
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

INSTRUMENT = Path(sys.executable).parent / "opentelemetry-instrument"
REDIS_SCOPE = "opentelemetry.instrumentation.redis"


@dataclass(frozen=True)
class AutoRun:
    queue: str
    service: str
    jobs: list[str]
    receiver: OtlpReceiver
    bzpopmin_calls: int  # BZPOPMIN calls Redis served while the app ran
    output: str

    def spans(self) -> list[ReceivedSpan]:
        return self.receiver.spans()

    def queue_spans(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans() if s.name == f"{name} {self.queue}"]

    def redis_spans(self) -> list[ReceivedSpan]:
        return [s for s in self.spans() if s.scope == REDIS_SCOPE]

    def logs(self, event: str) -> list[ReceivedLog]:
        """Records of ``event``: structlog lines have it as their body; queue_core's
        (logging records, exported by OpenTelemetry's logging handler) as an attribute."""
        return [
            r for r in self.receiver.logs() if r.body == event or r.attributes.get("event") == event
        ]

    def by_job(self, name: str) -> dict[str, ReceivedSpan]:
        spans = self.queue_spans(name)
        found = {s.attributes["messaging.message.id"]: s for s in spans}
        assert len(found) == len(spans) == len(self.jobs), (name, spans)
        assert sorted(found) == sorted(self.jobs)
        return found


def _bzpopmin_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_bzpopmin", {})
    return int(stats.get("calls", 0))


def run_app(receiver: OtlpReceiver, redis_url: str, queue: str, **settings: str) -> AutoRun:
    """Run the app under opentelemetry-instrument until it exits; it flushes at exit."""
    service = f"e2e-auto-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        E2E_QUEUE=queue,
        REDIS_URL=redis_url,
        OTEL_SERVICE_NAME=service,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
        OTEL_METRIC_EXPORT_INTERVAL="500",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_BLRP_SCHEDULE_DELAY="100",
        OTEL_PYTHON_LOG_CORRELATION="true",
    )
    env.update(settings)
    client = redis.Redis.from_url(redis_url)
    try:
        before = _bzpopmin_calls(client)
        result = subprocess.run(
            [str(INSTRUMENT), sys.executable, "-m", "tests.e2e.app_auto"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=45,
            check=False,
        )
        after = _bzpopmin_calls(client)
    finally:
        client.close()
    output = f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr[-6000:]}"
    assert result.returncode == 0, output
    # queue_core logs a hook's exception and carries on: none may have happened.
    assert "hook failed" not in result.stderr, output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ran"] == sorted(summary["jobs"]), output
    return AutoRun(queue, service, summary["jobs"], receiver, after - before, output)


def first_on_path(directory: Path, distribution: str) -> Path:
    """Put a copy of ``distribution``'s metadata in ``directory``. First on PYTHONPATH, it
    makes importlib.metadata find that distribution's entry points before the ones in
    site-packages (as with an app installed by ``pip install --target`` ahead of the
    environment), so opentelemetry-instrument loads its instrumentor first."""
    dist = importlib.metadata.distribution(distribution)
    name = str(dist.metadata["Name"]).replace("-", "_")
    target = directory / f"{name}-{dist.version}.dist-info"
    target.mkdir(parents=True)
    for file in ("METADATA", "entry_points.txt"):
        (target / file).write_text(dist.read_text(file) or "")
    return directory


def instrumentor_order(pythonpath: Path) -> list[str]:
    script = (
        "import json; from importlib.metadata import entry_points; "
        "print(json.dumps([e.name for e in entry_points(group='opentelemetry_instrumentor')]))"
    )
    env = clean_env(PYTHONPATH=str(pythonpath))
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return list(json.loads(result.stdout))


@pytest.fixture(scope="module")
def default_run(redis_server: RedisServer) -> Iterator[AutoRun]:
    """One run with every instrumentation on and the default settings."""
    with OtlpReceiver() as receiver:
        yield run_app(receiver, redis_server.url, f"q-{uuid.uuid4().hex[:12]}")


# ------------------------------------------------------------------------ spans


def test_the_queue_spans_arrive_from_opentelemetry_instrument(default_run: AutoRun) -> None:
    run = default_run
    sends, jobs, attempts = run.by_job("send"), run.by_job("job"), run.by_job("process")
    for job_id in run.jobs:
        send, job, attempt = sends[job_id], jobs[job_id], attempts[job_id]
        assert (send.kind, send.scope, send.parent_span_id) == ("PRODUCER", "queue_otel", None)
        assert (job.kind, job.scope) == ("INTERNAL", "queue_otel.jobs")
        assert (attempt.kind, attempt.scope) == ("CONSUMER", "queue_otel")
        assert job.parent_span_id == send.span_id
        assert attempt.parent_span_id == job.span_id
        assert {send.trace_id, job.trace_id, attempt.trace_id} == {send.trace_id}
        assert [(link.trace_id, link.span_id) for link in attempt.links] == [
            (send.trace_id, send.span_id)
        ]
        for span in (send, job, attempt):
            assert span.resource["service.name"] == run.service
            assert span.attributes["messaging.system"] == "queue_core"
            assert span.attributes["messaging.destination.name"] == run.queue
        assert attempt.attributes["messaging.operation.name"] == "process"
        assert attempt.status_code == "UNSET"
    # One trace per enqueue: the send spans are the only roots.
    roots = {s.span_id for s in run.spans() if s.parent_span_id is None}
    assert roots == {s.span_id for s in sends.values()}

    def total(metric: str) -> float:
        points = [
            p
            for p in run.receiver.metric_points(metric)
            if p.scope == "queue_otel" and p.resource.get("service.name") == run.service
        ]
        assert points, f"no {metric} from the run"
        return sum(p.value or 0 for p in latest(points))

    assert total("messaging.client.sent.messages") == len(run.jobs)
    assert total("messaging.client.consumed.messages") == len(run.jobs)


def test_worker_bookkeeping_makes_no_redis_spans(default_run: AutoRun) -> None:
    run = default_run
    # The worker did wait idle in Redis (the jobs were delayed), and did its own calls
    # (connect, fetch, stalled check) outside any job.
    assert run.bzpopmin_calls >= 1
    redis_spans = run.redis_spans()
    assert redis_spans, "the redis instrumentation exported nothing"
    assert [s for s in redis_spans if s.name == "BZPOPMIN"] == []
    # Every Redis call traced belongs to an enqueue or to an attempt: none of the
    # worker's own calls starts a trace of its own.
    sends, attempts = run.by_job("send"), run.by_job("process")
    owners = {s.span_id for s in [*sends.values(), *attempts.values()]}
    strays = [(s.name, s.parent_span_id) for s in redis_spans if s.parent_span_id not in owners]
    assert strays == []
    # The processor's own Redis call is a child of its attempt's span.
    for attempt in attempts.values():
        children = [s for s in redis_spans if s.parent_span_id == attempt.span_id]
        assert [s.name for s in children].count("SET") == 1, children
        set_span = next(s for s in children if s.name == "SET")
        assert set_span.trace_id == attempt.trace_id
        assert set_span.kind == "CLIENT"


# ------------------------------------------------------------------------ logs


def _check_logs_once(run: AutoRun) -> None:
    attempts = run.by_job("process")
    lines = run.logs(JOB_LOG_LINE)
    exported = Counter(r.attributes.get("job_id") for r in lines)
    assert exported == Counter(run.jobs), f"{JOB_LOG_LINE!r} records per job id: {exported}"
    for record in lines:
        attempt = attempts[record.attributes["job_id"]]
        assert (record.trace_id, record.span_id) == (attempt.trace_id, attempt.span_id)
        assert record.attributes["queue"] == run.queue
        assert record.attributes["attempt"] == 1
        assert record.resource["service.name"] == run.service
    # queue_core's own lines, outside jobs, once each too.
    assert len(run.logs("worker_started")) == 1
    assert len(run.logs("worker_stopped")) == 1


def test_log_lines_are_exported_once(default_run: AutoRun) -> None:
    _check_logs_once(default_run)


@pytest.mark.parametrize("first", ["opentelemetry-instrumentation-structlog", "queue-core"])
def test_log_lines_are_exported_once_whatever_the_instrumentor_order(
    first: str,
    receiver: OtlpReceiver,
    redis_url: str,
    queue_name: str,
    tmp_path: Path,
) -> None:
    """opentelemetry-instrument loads instrumentors in importlib.metadata's order, which
    follows sys.path and the directory listing of site-packages: either order happens."""
    path = first_on_path(tmp_path, first)
    order = instrumentor_order(path)
    expected_first = "structlog" if first.endswith("structlog") else "queue_core"
    assert order.index(expected_first) < order.index(
        "queue_core" if expected_first == "structlog" else "structlog"
    ), order
    run = run_app(receiver, redis_url, queue_name, PYTHONPATH=str(path))
    _check_logs_once(run)


# ------------------------------------------------------------------------ settings


def test_disabled_instrumentations_turn_it_off(
    receiver: OtlpReceiver, redis_url: str, queue_name: str
) -> None:
    run = run_app(
        receiver, redis_url, queue_name, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="queue_core"
    )
    assert [s for s in run.spans() if s.scope.startswith("queue_otel")] == []
    metrics = run.receiver.metric_names()
    assert not {m for m in metrics if m.startswith(("messaging.", "queue_core."))}
    # The rest still works: the processor's Redis calls are traced, and so are the
    # worker's own (nothing suppresses them now: the control for the test above).
    names = [s.name for s in run.redis_spans()]
    assert names.count("SET") == len(run.jobs)
    assert "BZPOPMIN" in names
    # Log lines are still exported (by the structlog instrumentation), without trace ids.
    lines = run.logs(JOB_LOG_LINE)
    assert len(lines) == len(run.jobs)
    assert all(r.trace_id is None and "trace_id" not in r.attributes for r in lines)


def test_link_mode_starts_a_trace_per_job(
    receiver: OtlpReceiver, redis_url: str, queue_name: str
) -> None:
    run = run_app(receiver, redis_url, queue_name, OTEL_PYTHON_QUEUE_CORE_TRACE_MODE="link")
    sends, jobs, attempts = run.by_job("send"), run.by_job("job"), run.by_job("process")
    for job_id in run.jobs:
        send, job, attempt = sends[job_id], jobs[job_id], attempts[job_id]
        assert job.trace_id != send.trace_id
        assert job.parent_span_id is None
        assert [(link.trace_id, link.span_id) for link in job.links] == [
            (send.trace_id, send.span_id)
        ]
        assert (attempt.trace_id, attempt.parent_span_id) == (job.trace_id, job.span_id)
        assert [(link.trace_id, link.span_id) for link in attempt.links] == [
            (send.trace_id, send.span_id)
        ]
    assert len({s.trace_id for s in sends.values()} | {j.trace_id for j in jobs.values()}) == 4
