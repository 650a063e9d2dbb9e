"""What queue_otel instruments, in the form ``opentelemetry-instrument`` checks."""

_instruments = ("queue-core >= 0.1",)
_supports_metrics = True
_semconv_status = "development"
