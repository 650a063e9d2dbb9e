"""The instrumentor follows opentelemetry-python-contrib's conventions."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points

import pytest

from queue_core import Queue, Worker
from queue_core.hooks import GLOBAL_HOOKS
from queue_core.log import _plugins
from queue_otel import QueueInstrumentor, Settings
from queue_otel import semconv as sc
from queue_otel.logs import add_trace_context
from queue_otel.metrics import MetricsHook
from queue_otel.settings import ENV
from queue_otel.tracing import TracingHook
from tests.conftest import wait_counts
from tests.log_capture import capture_logs
from tests.otel.conftest import Telemetry


def installed_hooks() -> list[type]:
    return [type(h) for h in GLOBAL_HOOKS.all()]


def test_entry_point_for_opentelemetry_instrument() -> None:
    (point,) = [
        p for p in entry_points(group="opentelemetry_instrumentor") if p.name == "queue_core"
    ]
    assert point.load() is QueueInstrumentor
    (reader,) = [
        p for p in entry_points(group="opentelemetry_metrics_exporter")
        if p.name == "queue_core_prometheus"
    ]  # fmt: skip
    assert reader.load().__name__ == "AutoPrometheusReader"


def test_instrument_and_uninstrument(telemetry: Telemetry) -> None:
    assert installed_hooks() == [TracingHook, MetricsHook]  # tracing first: exemplars
    assert QueueInstrumentor() is telemetry.instrumentor  # a singleton
    assert QueueInstrumentor().instrumentation_dependencies() == ("queue-core >= 0.1",)
    assert add_trace_context in _plugins
    telemetry.instrumentor.uninstrument()
    assert installed_hooks() == []
    assert add_trace_context not in _plugins


def test_instrumenting_twice_adds_nothing(telemetry: Telemetry) -> None:
    telemetry.instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    assert installed_hooks() == [TracingHook, MetricsHook]


async def test_hooks_reach_queues_created_before_instrumenting(
    queue_name: str, redis_url: str, telemetry: Telemetry
) -> None:
    telemetry.instrumentor.uninstrument()
    async with Queue(queue_name, redis=redis_url) as queue:
        telemetry.instrumentor.instrument(
            tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
        )
        await queue.add("x")
    assert len(telemetry.spans(f"send {queue_name}")) == 1


def test_settings_from_keywords_then_environment() -> None:
    environ = {
        ENV["trace_mode"]: "link",
        ENV["propagate_baggage"]: "true",
        ENV["new_trace_after"]: "60",
        ENV["observe_queues"]: "emails, images,",
        ENV["observe_prefix"]: "qc-demo",
        ENV["suppress_internal"]: "off",
    }
    settings = Settings.load({}, environ)
    assert settings == Settings(
        trace_mode="link",
        propagate_baggage=True,
        new_trace_after=60.0,
        observe_queues=("emails", "images"),
        observe_prefix="qc-demo",
        suppress_internal=False,
    )
    assert Settings.load({"trace_mode": "parent"}, environ).trace_mode == "parent"
    assert Settings.load({}, {}) == Settings()


def test_bad_environment_values_are_ignored_with_a_warning() -> None:
    with capture_logs() as logs:
        settings = Settings.load({}, {ENV["trace_mode"]: "sideways", ENV["new_trace_after"]: "-1"})
    assert settings == Settings()
    assert {e["variable"] for e in logs if e["event"] == "invalid_setting_ignored"} == {
        ENV["trace_mode"], ENV["new_trace_after"]
    }  # fmt: skip


@pytest.mark.parametrize(
    ("options", "fragment"),
    [({"trace_mode": "sideways"}, "trace_mode"), ({"new_trace_after": 0}, "new_trace_after"),
     ({"observe_queues": "emails"}, "list of queue names"), ({"export_logs": "yes"}, "bool")],
)  # fmt: skip
def test_bad_keywords_raise(options: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        Settings.load(options, {})


async def test_instrumenting_again_keeps_counting(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    await queue.add("x")
    telemetry.instrumentor.uninstrument()
    telemetry.instrumentor.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    await queue.add("y")
    async with make_worker(lambda job: None):
        await wait_counts(queue, completed=2)
    assert telemetry.total(sc.SENT_MESSAGES, {sc.DESTINATION: queue.name}) == 2
    assert telemetry.total(sc.CONSUMED_MESSAGES, {sc.DESTINATION: queue.name}) == 2
