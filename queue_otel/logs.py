"""Logs tied to traces.

``add_trace_context`` is a structlog processor that adds ``trace_id`` and ``span_id`` (hex,
as Loki's derived fields and Tempo expect) to every line logged while a span is current:
inside a job that is the ``process`` span, at enqueue the ``send`` span. queue_core already
binds ``job_id``, ``queue``, ``job_name`` and ``attempt`` inside jobs. The instrumentor
registers it in queue_core's logging chain; add it to your own structlog chain otherwise.

OTLP export of log lines goes through opentelemetry-instrumentation-structlog's
processor, added once: when ``opentelemetry-instrument`` has already installed it, the
instrumentor does not add another, so no line is exported twice.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger

__all__ = ["OtlpExport", "add_trace_context", "structlog_export_installed"]


def add_trace_context(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", f"{span_context.trace_id:032x}")
        event_dict.setdefault("span_id", f"{span_context.span_id:016x}")
    return event_dict


class OtlpExport:
    """Exports each line as an OpenTelemetry log record, unless the structlog
    instrumentation already does. Asked at every line, because instrumentors load in no
    fixed order: whichever comes second must not export the line again."""

    def __init__(self, logger_provider: Any = None) -> None:
        from opentelemetry.instrumentation.structlog import (  # noqa: PLC0415
            StructlogProcessor,
        )

        self._export: Any = StructlogProcessor(logger_provider)  # type: ignore[no-untyped-call]

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if structlog_export_installed():
            return event_dict
        result: EventDict = self._export(logger, method, event_dict)
        return result


def structlog_export_installed() -> bool:
    """True when opentelemetry-instrumentation-structlog already exports structlog lines."""
    try:
        from opentelemetry.instrumentation.structlog import (  # noqa: PLC0415
            StructlogInstrumentor,
        )
    except ImportError:
        return False
    instrumentor: Any = StructlogInstrumentor()
    return bool(getattr(instrumentor, "is_instrumented_by_opentelemetry", False))
