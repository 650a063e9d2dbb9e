"""collector/config.yaml: every pipeline wired, and only component names the pinned release has.

The allow-list below is for otel/opentelemetry-collector-contrib 0.160.0, the tag pinned in
compose.yaml (a test below keeps the two equal). It was checked, with the search tool over
the collector and contrib repositories, issues and release notes, as follows:

- receiver ``otlp``, processors ``memory_limiter`` and ``batch``: core components whose
  ``metadata.yaml`` declares exactly these types and lists ``contrib`` among their
  distributions; the core rename issue (open-telemetry/opentelemetry-collector#14396) lists
  them as needing no rename.
- exporters ``otlp_grpc`` and ``otlp_http``: core v0.144.0 renamed ``otlp`` to ``otlp_grpc``
  (PR #14403) and ``otlphttp`` to ``otlp_http`` (PR #14397); the old names stay as
  deprecated aliases that log a warning at start ("alias is deprecated; use ...").
  ``exporter/otlphttpexporter/metadata.yaml``: ``type: otlp_http``, ``deprecated_type: otlphttp``.
- connector ``span_metrics``: contrib renamed ``spanmetrics`` (PR #47963, merged 2026-04-28,
  part of contrib issue #45339); ``connector/spanmetricsconnector/metadata.yaml``:
  ``type: span_metrics``, ``deprecated_type: spanmetrics``. The v0.154.0 release notes
  already refer to ``connector/span_metrics``; collectors built on 0.157 warn that
  ``"spanmetrics" alias is deprecated; use "span_metrics" instead``.
- extension ``health_check``: ``extension/healthcheckextension/metadata.yaml``,
  ``type: health_check``, distributions core, contrib, k8s.
- connector ``forward``: core ``connector/forwardconnector/metadata.yaml``, ``type: forward``,
  distributions core, contrib, k8s; ``traces_to_traces`` (beta).
- processor ``tail_sampling``: contrib ``processor/tailsamplingprocessor/metadata.yaml``,
  ``type: tail_sampling``, distributions include contrib; traces (beta).

Setting keys, from the components' config structs (``config.go``, and the generated
``config.schema.yaml`` of the newest stored contrib snapshot):

- ``span_metrics``: ``SPAN_METRICS_KEYS`` below. ``series_expiration`` came with contrib
  PR #48270 ("[connector/span_metrics] Expire stale series", merged 2026-05-12, fixing
  issue #44187), before the 0.155.0 release PR (#49298), so 0.160.0 has it.
  ``metrics_expiration`` only drops a resource's metrics when that resource sent no span
  for the whole period (``resetState``: ``now.Sub(m.lastSeen) >= MetricsExpiration`` per
  resource), so a removed queue's series live on while its worker runs;
  ``series_expiration`` is the per-series one.
- ``tail_sampling``: ``TAIL_SAMPLING_KEYS`` and the policy types and keys below.
- ``debug`` (core exporter, unchanged) is allowed for local troubleshooting, not used.

The deprecated aliases, and the ``loki`` and ``jaeger`` exporters (deprecated, removed), are
refused: they would load with a warning at best.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.stack.stackfiles import (
    COLLECTOR_CONFIG,
    collector,
    go_duration_seconds,
    mounts,
    services,
)

ALLOWLIST_VERSION = "0.160.0"
ALLOWED_TYPES: dict[str, frozenset[str]] = {
    "receivers": frozenset({"otlp"}),
    "processors": frozenset({"memory_limiter", "batch", "tail_sampling"}),
    "exporters": frozenset({"otlp_grpc", "otlp_http", "debug"}),
    "connectors": frozenset({"span_metrics", "forward"}),
    "extensions": frozenset({"health_check"}),
}
REFUSED_TYPES: dict[str, frozenset[str]] = {
    "exporters": frozenset({"otlp", "otlphttp", "loki", "jaeger", "prometheusremotewrite"}),
    "connectors": frozenset({"spanmetrics"}),
}
SIGNALS = frozenset({"traces", "metrics", "logs", "profiles"})
# The span metrics connector turns traces into metrics: exporter of the one, receiver of the
# other. The forward connector passes traces on to another traces pipeline.
CONNECTOR_SIGNALS = {"span_metrics": ("traces", "metrics"), "forward": ("traces", "traces")}

# Every top-level key of the span metrics connector's Config struct (mapstructure tags) in
# contrib 0.160.0; see the module docstring for where each was read.
SPAN_METRICS_KEYS = frozenset({
    "dimensions",
    "calls_dimensions",
    "exclude_dimensions",
    "dimensions_cache_size",  # deprecated since 0.130.0 for aggregation_cardinality_limit
    "resource_metrics_cache_size",
    "resource_metrics_key_attributes",
    "aggregation_temporality",
    "histogram",
    "metrics_flush_interval",
    "metrics_expiration",  # per resource, not per series: see the docstring
    "series_expiration",  # per series
    "metric_timestamp_cache_size",
    "namespace",
    "exemplars",
    "events",
    "include_instrumentation_scope",
    "aggregation_cardinality_limit",
    "add_resource_attributes",
    "enable_metrics_sampling_method",
})  # fmt: skip

# The tail sampling processor's Config struct (config.schema.yaml, top-level properties).
TAIL_SAMPLING_KEYS = frozenset({
    "decision_wait",
    "decision_wait_after_root_received",
    "num_traces",
    "expected_new_traces_per_sec",
    "policies",
    "decision_cache",
    "sample_on_first_match",
    "drop_pending_traces_on_shutdown",
    "block_on_overflow",
    "maximum_trace_size_bytes",
})  # fmt: skip
TAIL_SAMPLING_DECISION_CACHE_KEYS = frozenset({"sampled_cache_size", "non_sampled_cache_size"})
# Policy type -> the keys of its own block, for the three types used here.
TAIL_SAMPLING_POLICY_KEYS = {
    "status_code": frozenset({"status_codes"}),
    "latency": frozenset({"threshold_ms", "upper_threshold_ms"}),
    "probabilistic": frozenset({"sampling_percentage", "hash_salt"}),
}


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def pipelines() -> dict[str, dict[str, list[str]]]:
    found = collector()["service"]["pipelines"]
    assert isinstance(found, dict)
    return found


def defined(section: str) -> set[str]:
    return set(collector().get(section) or {})


def used_as(role: str) -> set[str]:
    return {component for pipeline in pipelines().values() for component in pipeline.get(role, [])}


def test_pipelines_are_the_three_signals() -> None:
    assert {component_type(name) for name in pipelines()} == {"traces", "metrics", "logs"}
    assert {component_type(name) for name in pipelines()} <= SIGNALS


@pytest.mark.parametrize("role", ["receivers", "processors", "exporters"])
def test_every_component_a_pipeline_uses_is_defined(role: str) -> None:
    definable = defined(role) | (defined("connectors") if role != "processors" else set())
    for name, pipeline in pipelines().items():
        assert pipeline.get(role), f"pipeline {name} has no {role}"
        missing = set(pipeline[role]) - definable
        assert not missing, f"pipeline {name} uses undefined {role}: {sorted(missing)}"


@pytest.mark.parametrize("section", ["receivers", "processors", "exporters", "connectors"])
def test_every_defined_component_is_used(section: str) -> None:
    used = used_as("receivers") | used_as("processors") | used_as("exporters")
    unused = defined(section) - used
    assert not unused, f"defined but in no pipeline: {sorted(unused)}"


def test_every_extension_is_defined_and_enabled() -> None:
    enabled = set(collector()["service"].get("extensions", []))
    assert enabled == defined("extensions")


@pytest.mark.parametrize("connector", sorted(defined("connectors")))
def test_connectors_join_two_pipelines(connector: str) -> None:
    exporting = [name for name, p in pipelines().items() if connector in p.get("exporters", [])]
    receiving = [name for name, p in pipelines().items() if connector in p.get("receivers", [])]
    assert exporting, f"{connector} is no pipeline's exporter"
    assert receiving, f"{connector} is no pipeline's receiver"
    assert set(exporting).isdisjoint(receiving), f"{connector} feeds its own pipeline"
    signals = CONNECTOR_SIGNALS.get(component_type(connector))
    if signals is not None:
        assert {component_type(p) for p in exporting} == {signals[0]}
        assert {component_type(p) for p in receiving} == {signals[1]}


@pytest.mark.parametrize("pipeline", sorted(pipelines()))
def test_memory_limiter_comes_first_and_batch_follows(pipeline: str) -> None:
    processors = [component_type(p) for p in pipelines()[pipeline]["processors"]]
    assert processors[0] == "memory_limiter", processors
    assert "batch" in processors[1:], processors
    assert processors.count("memory_limiter") == 1, processors


@pytest.mark.parametrize("section", sorted(ALLOWED_TYPES))
def test_component_types_exist_in_the_pinned_release(section: str) -> None:
    for component_id in defined(section):
        kind = component_type(component_id)
        assert kind not in REFUSED_TYPES.get(section, frozenset()), (
            f"{component_id}: deprecated or removed name in {ALLOWLIST_VERSION}"
        )
        assert kind in ALLOWED_TYPES[section], (
            f"{component_id}: {kind!r} is not a {section[:-1]} type checked for {ALLOWLIST_VERSION}"
        )


def test_no_unknown_top_level_sections() -> None:
    assert set(collector()) <= {*ALLOWED_TYPES, "service"}


def test_the_pinned_image_is_the_release_the_allow_list_was_made_for() -> None:
    image = services()["otel-collector"]["image"]
    repository, _, tag = image.partition(":")
    assert repository == "otel/opentelemetry-collector-contrib"
    assert tag == ALLOWLIST_VERSION


def test_the_config_says_which_release_its_names_were_checked_against() -> None:
    header = COLLECTOR_CONFIG.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert f"otel/opentelemetry-collector-contrib:{ALLOWLIST_VERSION}" in header
    assert "checked against" in header


def test_the_collector_reads_this_file_where_the_image_expects_it() -> None:
    targets = {m.target for m in mounts() if m.service == "otel-collector" and m.bind}
    assert "/etc/otelcol-contrib/config.yaml" in targets


def test_otlp_receiver_takes_grpc_and_http_from_the_network() -> None:
    protocols = collector()["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_health_check_extension_listens_on_13133() -> None:
    assert collector()["extensions"]["health_check"]["endpoint"] == "0.0.0.0:13133"


def test_memory_limiter_is_sized_in_percentages_with_headroom_for_spikes() -> None:
    limiter = collector()["processors"]["memory_limiter"]
    assert go_duration_seconds(limiter["check_interval"]) <= 5
    assert 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"] <= 90
    # percentages need a container memory limit to be a percentage of
    assert services()["otel-collector"].get("mem_limit")


def exporter_of(kind: str, endpoint: str) -> dict[str, Any]:
    matches = [
        config
        for name, config in collector()["exporters"].items()
        if component_type(name) == kind and config["endpoint"] == endpoint
    ]
    assert len(matches) == 1, f"one {kind} exporter to {endpoint}, found {len(matches)}"
    return matches[0]


def test_exporters_send_to_tempo_prometheus_and_loki_over_otlp() -> None:
    tempo = exporter_of("otlp_grpc", "tempo:4317")
    assert tempo["tls"]["insecure"] is True  # plain gRPC inside the compose network
    exporter_of("otlp_http", "http://prometheus:9090/api/v1/otlp")
    exporter_of("otlp_http", "http://loki:3100/otlp")


def test_each_signal_goes_to_its_backend() -> None:
    def endpoints(signal: str) -> set[str]:
        exporters = collector()["exporters"]
        return {
            exporters[e]["endpoint"]
            for name, p in pipelines().items()
            if component_type(name) == signal
            for e in p["exporters"]
            if e in exporters
        }

    assert endpoints("traces") == {"tempo:4317"}
    assert endpoints("metrics") == {"http://prometheus:9090/api/v1/otlp"}
    assert endpoints("logs") == {"http://loki:3100/otlp"}


def span_metrics() -> dict[str, Any]:
    (name,) = [c for c in defined("connectors") if component_type(c) == "span_metrics"]
    config = collector()["connectors"][name]
    assert isinstance(config, dict)
    return config


def test_span_metrics_histogram_is_in_seconds_with_explicit_buckets() -> None:
    histogram = span_metrics()["histogram"]
    assert histogram["unit"] == "s"  # the default is changing from ms to s: never rely on it
    buckets = [go_duration_seconds(b) for b in histogram["explicit"]["buckets"]]
    assert buckets == sorted(set(buckets)), "buckets must be strictly increasing"
    assert buckets[0] <= 0.01
    assert buckets[-1] >= 60, "jobs run for minutes; the top bucket must reach them"


def test_span_metrics_dimensions_are_the_bounded_messaging_attributes() -> None:
    names = [d["name"] for d in span_metrics()["dimensions"]]
    assert len(names) == len(set(names))
    assert {
        "messaging.system",
        "messaging.operation.type",
        "messaging.destination.name",
        "queue_core.job.name",
    } <= set(names)
    # Never per-job or per-worker identifiers: they would make a series per job.
    assert not {"messaging.message.id", "messaging.client.id"} & set(names)
    # The connector already adds these; listing them again is a startup error.
    assert not {"service.name", "span.name", "span.kind", "status.code"} & set(names)


def test_span_metrics_keys_are_fields_of_the_connector_config() -> None:
    unknown = set(span_metrics()) - SPAN_METRICS_KEYS
    assert not unknown, f"not keys of the span_metrics Config struct: {sorted(unknown)}"


def test_span_metrics_forget_each_idle_series() -> None:
    config = span_metrics()
    # series_expiration is the per-series setting; metrics_expiration would only drop a
    # worker's metrics once the whole worker sent nothing, so a removed queue's series
    # would be exported as long as the worker runs.
    assert "metrics_expiration" not in config
    expiry = go_duration_seconds(config["series_expiration"])
    # well above the flush interval, so an idle but live queue is not forgotten between flushes
    assert expiry >= 10 * go_duration_seconds(config["metrics_flush_interval"])
    assert expiry <= 24 * 3600


def test_span_metrics_cardinality_is_limited_exemplars_kept_and_flushed_regularly() -> None:
    config = span_metrics()
    assert isinstance(config["aggregation_cardinality_limit"], int)
    assert config["aggregation_cardinality_limit"] > 0  # 0 means unlimited
    assert config["exemplars"]["enabled"] is True
    assert 1 <= go_duration_seconds(config["metrics_flush_interval"]) <= 60


def test_no_component_id_is_listed_twice_in_a_pipeline() -> None:
    for name, pipeline in pipelines().items():
        for role, components in pipeline.items():
            assert len(components) == len(set(components)), f"{name}.{role}: {components}"


def test_component_ids_are_well_formed() -> None:
    pattern = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.-]+)?$")
    for section in ALLOWED_TYPES:
        for component_id in defined(section):
            assert pattern.match(component_id), component_id


# ---------------------------------------------------------------- tail sampling


def pipelines_with(role: str, component_kind: str) -> list[str]:
    return [
        name
        for name, pipeline in pipelines().items()
        if any(component_type(c) == component_kind for c in pipeline.get(role, []))
    ]


def upstream_processors(pipeline: str) -> set[str]:
    """Processor types on every path from a receiver to the end of ``pipeline``, through
    the connectors that feed it (a pipeline's own processors included)."""
    seen: set[str] = set()
    found: set[str] = set()

    def walk(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        found.update(component_type(p) for p in pipelines()[name]["processors"])
        for receiver in pipelines()[name]["receivers"]:
            for feeder, p in pipelines().items():
                if receiver in p.get("exporters", []):
                    walk(feeder)

    walk(pipeline)
    return found


def tail_sampling() -> dict[str, Any]:
    (name,) = [p for p in defined("processors") if component_type(p) == "tail_sampling"]
    config = collector()["processors"][name]
    assert isinstance(config, dict)
    return config


def test_span_metrics_see_every_span_before_any_sampling() -> None:
    feeding = pipelines_with("exporters", "span_metrics")
    assert feeding
    for name in feeding:
        assert "tail_sampling" not in upstream_processors(name), name
        assert "otlp" in pipelines()[name]["receivers"], name


def test_tempo_gets_traces_only_through_tail_sampling() -> None:
    to_tempo = [
        name
        for name, p in pipelines().items()
        if any(
            e in collector()["exporters"]
            and collector()["exporters"][e]["endpoint"] == "tempo:4317"
            for e in p["exporters"]
        )
    ]
    assert to_tempo
    for name in to_tempo:
        processors = [component_type(p) for p in pipelines()[name]["processors"]]
        assert "tail_sampling" in processors, name
        # batch after the sampler, which regroups spans by trace anyway
        assert processors.index("tail_sampling") < processors.index("batch"), processors


def test_the_sampling_pipeline_is_fed_every_span_through_a_forward_connector() -> None:
    (sampling,) = pipelines_with("processors", "tail_sampling")
    receivers = pipelines()[sampling]["receivers"]
    assert receivers and all(component_type(r) == "forward" for r in receivers), receivers
    for receiver in receivers:
        feeders = [n for n, p in pipelines().items() if receiver in p.get("exporters", [])]
        assert feeders
        for feeder in feeders:
            assert "span_metrics" in {component_type(e) for e in pipelines()[feeder]["exporters"]}


def test_tail_sampling_keys_are_fields_of_the_processor_config() -> None:
    config = tail_sampling()
    assert not set(config) - TAIL_SAMPLING_KEYS, sorted(set(config) - TAIL_SAMPLING_KEYS)
    assert not set(config.get("decision_cache", {})) - TAIL_SAMPLING_DECISION_CACHE_KEYS
    for policy in config["policies"]:
        kind = policy["type"]
        assert kind in TAIL_SAMPLING_POLICY_KEYS, kind
        assert set(policy) <= {"name", "type", kind}, policy
        assert not set(policy[kind]) - TAIL_SAMPLING_POLICY_KEYS[kind], policy


def test_tail_sampling_keeps_every_failed_and_slow_trace_and_samples_the_rest() -> None:
    policies = tail_sampling()["policies"]
    names = [p["name"] for p in policies]
    assert len(names) == len(set(names))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for policy in policies:
        by_type.setdefault(policy["type"], []).append(policy)
    # any span with status Error keeps the trace (a failed attempt or a failed job)
    (failed,) = by_type["status_code"]
    assert failed["status_code"]["status_codes"] == ["ERROR"]
    # a slow trace is kept, with no upper bound (which would drop the slowest)
    (slow,) = by_type["latency"]
    assert slow["latency"]["threshold_ms"] > 0
    assert "upper_threshold_ms" not in slow["latency"]
    # the rest: a fraction, neither none nor all
    (rest,) = by_type["probabilistic"]
    assert 0 < rest["probabilistic"]["sampling_percentage"] < 100
    # no policy that would drop a kept trace or keep everything
    assert set(by_type) == {"status_code", "latency", "probabilistic"}


def test_tail_sampling_waits_and_remembers_enough() -> None:
    config = tail_sampling()
    assert 5 <= go_duration_seconds(config["decision_wait"]) <= 120
    assert config["num_traces"] >= 10_000
    assert config["expected_new_traces_per_sec"] > 0
    cache = config["decision_cache"]
    # kept trace ids outlive their spans in memory, so late spans of kept traces are kept
    assert cache["sampled_cache_size"] >= 10 * config["num_traces"]
    # a cache of dropped ids would drop a failing span arriving after its trace was dropped
    assert "non_sampled_cache_size" not in cache
