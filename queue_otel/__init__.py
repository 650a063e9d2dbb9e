"""queue_otel: OpenTelemetry instrumentation of queue_core, built on its public hooks.

- ``QueueInstrumentor().instrument(...)``, or ``opentelemetry-instrument`` with no code
  change: spans per the messaging conventions, one trace from the enqueue (and the HTTP
  request around it) to the job's outcome; metrics; trace ids in structlog lines.
- ``PrometheusReader`` / ``start_metrics_server``: a ``/metrics`` endpoint with the same
  names a Collector's Prometheus exporter produces, with exemplars.
- ``add_trace_context``: the structlog processor, for chains you configure yourself.
- ``QueueStatsObserver``: queue depth and oldest-job age gauges (one process per fleet).
"""

from queue_otel.instrumentor import QueueInstrumentor
from queue_otel.logs import add_trace_context
from queue_otel.prometheus import AutoPrometheusReader, PrometheusReader, start_metrics_server
from queue_otel.queue_stats import QueueStatsObserver
from queue_otel.settings import Settings, TraceMode

__all__ = [
    "AutoPrometheusReader",
    "PrometheusReader",
    "QueueInstrumentor",
    "QueueStatsObserver",
    "Settings",
    "TraceMode",
    "add_trace_context",
    "start_metrics_server",
]
