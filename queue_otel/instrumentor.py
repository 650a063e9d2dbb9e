"""``QueueInstrumentor``: turns the tracing and metrics hooks on for every queue and worker
in the process, following opentelemetry-python-contrib's conventions.

    QueueInstrumentor().instrument(tracer_provider=..., meter_provider=...)

or, with no code change, ``opentelemetry-instrument python worker.py`` (found through the
``opentelemetry_instrumentor`` entry point ``queue_core``; disable it with
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=queue_core``). Options are keywords of
``instrument()`` or environment variables (see ``Settings``).
"""

from __future__ import annotations

import dataclasses
import os
import weakref
from collections.abc import Collection
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from opentelemetry import metrics
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from queue_core import (
    Hook,
    get_logger,
    register_hook,
    register_log_processor,
    unregister_hook,
    unregister_log_processor,
)
from queue_otel import semconv as sc
from queue_otel.logs import (
    BRIDGE_MISSING,
    OtlpExport,
    add_trace_context,
    structlog_bridge_installed,
)
from queue_otel.metrics import MetricsHook
from queue_otel.package import _instruments
from queue_otel.queue_stats import QueueStatsObserver
from queue_otel.settings import ENV, Settings
from queue_otel.tracing import Tracers, TracingHook

__all__ = ["QueueInstrumentor"]

try:
    __version__ = version("queue-core")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

_log = get_logger("queue_otel")


# One metrics hook per meter: instruments cannot be removed from a meter, so instrumenting
# again with the same provider must reuse the instruments (and their counts), not make
# duplicates whose callbacks the SDK would ignore.
_metrics_hooks: weakref.WeakKeyDictionary[Any, MetricsHook] = weakref.WeakKeyDictionary()


def _metrics_hook(meter: Any) -> MetricsHook:
    hook = _metrics_hooks.get(meter)
    if hook is None:
        hook = _metrics_hooks[meter] = MetricsHook(meter)
    return hook


def _log_export_available(kwargs: dict[str, Any]) -> bool:
    """Log export needs the optional structlog bridge: on by default means "when
    installed"; asked for by keyword it raises (before anything is registered), by
    environment it is logged, as bad settings are."""
    if structlog_bridge_installed():
        return True
    if kwargs.get("export_logs") is not None:
        raise ImportError(f"export_logs=True: {BRIDGE_MISSING}")
    if os.environ.get(ENV["export_logs"], "").strip():
        _log.warning("log_export_unavailable", reason=BRIDGE_MISSING)
    return False


class QueueInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Keywords of ``instrument()``: ``tracer_provider``, ``meter_provider``,
    ``logger_provider``, and the ``Settings`` options (``trace_mode``,
    ``propagate_baggage``, ``new_trace_after``, ``export_logs``, ``observe_queues``,
    ``observe_redis_url``, ``observe_prefix``, ``suppress_internal``)."""

    _hooks: list[Hook]
    _observer: QueueStatsObserver | None
    _log_processors: list[Any]

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        settings = Settings.load(kwargs)
        if settings.export_logs and not _log_export_available(kwargs):
            settings = dataclasses.replace(settings, export_logs=False)
        self.settings = settings
        meter = metrics.get_meter(
            "queue_otel", __version__, kwargs.get("meter_provider"), schema_url=sc.SCHEMA_URL
        )
        tracers = Tracers(kwargs.get("tracer_provider"), __version__)
        # Tracing first: the metrics hook then runs inside each span, so its measurements
        # carry exemplars of the trace.
        self._hooks = [TracingHook(tracers, settings), _metrics_hook(meter)]
        for hook in self._hooks:
            register_hook(hook)

        self._log_processors = [add_trace_context]
        if settings.export_logs:
            self._log_processors.append(OtlpExport(kwargs.get("logger_provider")))
        for processor in self._log_processors:
            register_log_processor(processor)

        self._observer = None
        if settings.observe_queues:
            self._observer = QueueStatsObserver(
                settings.observe_queues,
                meter,
                redis=settings.observe_redis_url,
                prefix=settings.observe_prefix,
            )

    def _uninstrument(self, **kwargs: Any) -> None:
        for hook in getattr(self, "_hooks", []):
            unregister_hook(hook)
        for processor in getattr(self, "_log_processors", []):
            unregister_log_processor(processor)
        observer = getattr(self, "_observer", None)
        if observer is not None:
            observer.close()
        self._hooks, self._log_processors, self._observer = [], [], None
