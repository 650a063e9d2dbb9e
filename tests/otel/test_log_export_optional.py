"""Without opentelemetry-instrumentation-structlog (the ``structlog-bridge`` extra, not part of
``[otel]``) the instrumentor still instruments: log export is off unless asked for, a keyword
asking for it raises before anything is registered, an environment variable is logged."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from queue_otel import QueueInstrumentor, add_trace_context
from tests.log_capture import capture_logs

EXPORT_LOGS = "OTEL_PYTHON_QUEUE_CORE_EXPORT_LOGS"


@pytest.fixture
def instrumentor(monkeypatch: pytest.MonkeyPatch) -> Iterator[QueueInstrumentor]:
    monkeypatch.setattr("queue_otel.instrumentor.structlog_bridge_installed", lambda: False)
    monkeypatch.delenv(EXPORT_LOGS, raising=False)
    instrumentor = QueueInstrumentor()
    yield instrumentor
    instrumentor.uninstrument()


def test_default_instruments_without_log_export(instrumentor: QueueInstrumentor) -> None:
    instrumentor.instrument(tracer_provider=TracerProvider())
    assert instrumentor.is_instrumented_by_opentelemetry
    assert instrumentor._log_processors == [add_trace_context]
    assert instrumentor.settings.export_logs is False


def test_keyword_asking_for_log_export_raises(instrumentor: QueueInstrumentor) -> None:
    with pytest.raises(ImportError, match=r"pip install 'queue-core\[structlog-bridge\]'"):
        instrumentor.instrument(tracer_provider=TracerProvider(), export_logs=True)
    assert not instrumentor.is_instrumented_by_opentelemetry
    assert getattr(instrumentor, "_hooks", []) == []


def test_environment_asking_for_log_export_is_logged(
    instrumentor: QueueInstrumentor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXPORT_LOGS, "true")
    with capture_logs() as logs:
        instrumentor.instrument(tracer_provider=TracerProvider())
    assert instrumentor._log_processors == [add_trace_context]
    (warning,) = [e for e in logs if e["event"] == "log_export_unavailable"]
    assert "queue-core[structlog-bridge]" in warning["reason"]
