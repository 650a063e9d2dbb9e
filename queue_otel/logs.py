"""Logs tied to traces.

``add_trace_context`` is a structlog processor that adds ``trace_id`` and ``span_id`` (hex,
as Loki's derived fields and Tempo expect) to every line logged while a span is current:
inside a job that is the ``process`` span, at enqueue the ``send`` span. queue_core already
binds ``job_id``, ``queue``, ``job_name`` and ``attempt`` inside jobs. The instrumentor
registers it in queue_core's logging chain; add it to your own structlog chain otherwise.

OTLP export of log lines goes through opentelemetry-instrumentation-structlog's
processor, added once: when ``opentelemetry-instrument`` has already installed it (or, for
queue_core's lines, which are ``logging`` records, OpenTelemetry's logging handler), the
instrumentor does not export them again, so no line is exported twice. That package is optional
(the ``structlog-bridge`` extra): without it there is no log export.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any, Final

from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger

__all__ = [
    "BRIDGE_MISSING",
    "OtlpExport",
    "add_trace_context",
    "structlog_bridge_installed",
    "structlog_export_installed",
]

BRIDGE_MISSING: Final = (
    "OTLP log export needs opentelemetry-instrumentation-structlog: "
    "pip install 'queue-core[structlog-bridge]'"
)


def add_trace_context(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict.setdefault("trace_id", f"{span_context.trace_id:032x}")
        event_dict.setdefault("span_id", f"{span_context.span_id:016x}")
    return event_dict


class OtlpExport:
    """Exports each line as an OpenTelemetry log record, unless another exporter already
    does: for queue_core's lines (``logging`` records), OpenTelemetry's logging handler
    when one is on the logger's way to the root; for the application's structlog lines
    (``configure_logging``'s chain), the structlog instrumentation. Asked at every line,
    because instrumentors load in no fixed order: whichever comes second must not export
    the line again."""

    def __init__(self, logger_provider: Any = None) -> None:
        from opentelemetry.instrumentation.structlog import (  # noqa: PLC0415
            StructlogProcessor,
        )

        self._export: Any = StructlogProcessor(logger_provider)  # type: ignore[no-untyped-call]

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
        if isinstance(logger, logging.Logger):
            if _logging_handler_exports(logger, event_dict.get("level", method)):
                return event_dict
        elif structlog_export_installed():
            return event_dict
        result: EventDict = self._export(logger, method, event_dict)
        return result


def _logging_handler_exports(logger: logging.Logger, level: str) -> bool:
    """True when an OpenTelemetry ``LoggingHandler`` (opentelemetry-instrumentation-logging's,
    or the SDK's) will see this logger's record at ``level``."""
    levelno = logging.getLevelName(str(level).upper())
    if not isinstance(levelno, int):
        levelno = logging.INFO
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if handler.level <= levelno and any(
                cls.__name__ == "LoggingHandler" and cls.__module__.startswith("opentelemetry.")
                for cls in type(handler).__mro__
            ):
                return True
        current = current.parent if current.propagate else None
    return False


def structlog_bridge_installed() -> bool:
    """True when opentelemetry-instrumentation-structlog can be imported."""
    return importlib.util.find_spec("opentelemetry.instrumentation.structlog") is not None


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
