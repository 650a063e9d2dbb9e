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
    "processors": frozenset({"memory_limiter", "batch"}),
    "exporters": frozenset({"otlp_grpc", "otlp_http", "debug"}),
    "connectors": frozenset({"span_metrics"}),
    "extensions": frozenset({"health_check"}),
}
REFUSED_TYPES: dict[str, frozenset[str]] = {
    "exporters": frozenset({"otlp", "otlphttp", "loki", "jaeger", "prometheusremotewrite"}),
    "connectors": frozenset({"spanmetrics"}),
}
SIGNALS = frozenset({"traces", "metrics", "logs", "profiles"})
# The span metrics connector turns traces into metrics: exporter of the one, receiver of the other.
CONNECTOR_SIGNALS = {"span_metrics": ("traces", "metrics")}


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
