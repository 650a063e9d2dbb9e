"""The Prometheus reader's names and exemplars, compared with the official exporter.

``opentelemetry-exporter-prometheus`` is the reference implementation of the
OpenTelemetry-to-Prometheus naming rules that a Collector's Prometheus exporter follows.
Both readers sit on one MeterProvider; each must expose the same families and labels.
(tests/e2e/test_prometheus.py scrapes a worker with a real Prometheus.)
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from queue_core import Job, Queue, RateLimitError, Worker
from queue_otel import PrometheusReader, QueueInstrumentor
from queue_otel.prometheus import metric_name, unit_suffix
from tests.conftest import wait_counts


def families(text: str) -> dict[str, set[str]]:
    """Family name -> label names (sample label names, minus le/quantile)."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        out[family.name] = labels
    return out


async def test_same_names_and_labels_as_the_official_exporter(
    queue: Queue, make_worker: Callable[..., Worker], redis_url: str
) -> None:
    official_registry = CollectorRegistry()
    official = PrometheusMetricReader(registry=official_registry)
    ours = PrometheusReader()
    resource = Resource.create({"service.name": "worker"})
    meter_provider = MeterProvider(metric_readers=[official, ours], resource=resource)
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=TracerProvider(resource=resource),
        meter_provider=meter_provider,
        export_logs=False,
        observe_queues=[queue.name],
        observe_redis_url=redis_url,
    )
    try:

        async def process(job: Job) -> None:
            if job.name == "limited" and job.attempts_started == 1:
                raise RateLimitError(0.05)
            if job.name == "bad":
                raise ValueError("bad")

        for name in ("ok", "bad", "limited"):
            await queue.add(name)
        async with make_worker(process):
            await wait_counts(queue, completed=2, failed=1)
        reference = families(generate_latest(official_registry).decode())
        mine = families(generate_latest(ours.registry).decode())
    finally:
        instrumentor.uninstrument()
        meter_provider.shutdown()
    assert mine == reference
    for expected in (
        "messaging_process_duration_seconds",
        "messaging_client_sent_messages",  # a counter: samples are ..._total
        "messaging_client_consumed_messages",
        "messaging_client_operation_duration_seconds",
        "queue_core_job_wait_duration_seconds",
        "queue_core_queue_depth",
        "queue_core_queue_oldest_job_age_seconds",
        "queue_core_job_active",
        "queue_core_worker_count",
        "target_info",
    ):
        assert expected in mine, expected
    assert "messaging_destination_name" in mine["messaging_process_duration_seconds"]


async def test_exemplars_in_openmetrics(queue: Queue, make_worker: Callable[..., Worker]) -> None:
    reader = PrometheusReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    tracer_provider = TracerProvider()
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, export_logs=False
    )
    try:
        await queue.add("x")
        async with make_worker(lambda job: None):
            await wait_counts(queue, completed=1)
        first_scrape = generate_openmetrics(reader.registry).decode()
        classic = generate_latest(reader.registry).decode()
        text = generate_openmetrics(reader.registry).decode()  # a second scraper
    finally:
        instrumentor.uninstrument()
        meter_provider.shutdown()
    bucket_lines = [
        line for line in text.splitlines()
        if line.startswith("messaging_process_duration_seconds_bucket") and " # " in line
    ]  # fmt: skip
    assert bucket_lines, "no exemplar on any bucket (the second scrape must still see it)"
    assert " # " in first_scrape
    assert 'trace_id="' in bucket_lines[0] and 'span_id="' in bucket_lines[0]
    wait_lines = [
        line for line in text.splitlines()
        if line.startswith("queue_core_job_wait_duration_seconds_bucket") and " # " in line
    ]  # fmt: skip
    assert wait_lines, "no exemplar on the wait histogram"
    # The classic text format has no exemplars and still parses.
    assert "messaging_process_duration_seconds" in families(classic)


def test_name_rules() -> None:
    assert metric_name("queue_core.job.wait.duration") == "queue_core_job_wait_duration"
    assert metric_name("9lives") == "_lives"
    assert unit_suffix("s") == "seconds"
    assert unit_suffix("{message}") == ""
    assert unit_suffix("By/s") == "bytes_per_second"
    assert unit_suffix("1") == ""
