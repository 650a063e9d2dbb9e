"""Every YAML file of the stack parses, and the Tempo and Loki configs fit their containers."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from tests.stack.stackfiles import (
    LOKI_CONFIG,
    REPO,
    TEMPO_CONFIG,
    load_yaml,
    mounts,
    services,
)

OWN_FILES = [
    "compose.yaml",
    "collector/config.yaml",
    "prometheus/prometheus.yml",
    "tempo/tempo.yaml",
    "loki/loki.yaml",
]
# Written by others against the same conventions; parsed here too when they exist.
OTHER_FILES = sorted(
    str(p.relative_to(REPO))
    for pattern in ("grafana/provisioning/**/*.yaml", "grafana/provisioning/**/*.yml",
                    "prometheus/rules/*.yml", "prometheus/rules/*.yaml")
    for p in REPO.glob(pattern)
)  # fmt: skip


@pytest.mark.parametrize("relative", OWN_FILES + OTHER_FILES)
def test_yaml_parses_without_duplicate_keys(relative: str) -> None:
    data = load_yaml(REPO / relative)
    assert isinstance(data, dict), f"{relative}: top level is not a mapping"
    assert data, f"{relative} is empty"


def volume_target(service: str) -> PurePosixPath:
    (target,) = [PurePosixPath(m.target) for m in mounts() if m.service == service and not m.bind]
    return target


def is_under(path: str, directory: PurePosixPath) -> bool:
    return directory in PurePosixPath(path).parents


def test_tempo_is_a_tempo_3_monolith_storing_on_its_volume() -> None:
    tempo = load_yaml(TEMPO_CONFIG)
    # Removed in Tempo 3.0 (block-builders, live-stores and the backend scheduler replace
    # them); Tempo refuses unknown blocks.
    assert not {"ingester", "ingester_client", "compactor", "metrics_generator_client"} & set(tempo)
    assert "-target=all" in services()["tempo"]["command"]
    assert "tempo:3." in services()["tempo"]["image"]
    data = volume_target("tempo")
    trace = tempo["storage"]["trace"]
    assert trace["backend"] == "local"
    assert is_under(trace["local"]["path"], data)
    assert is_under(trace["wal"]["path"], data)
    assert is_under(tempo["metrics_generator"]["storage"]["path"], data)


def test_tempo_generates_service_graphs_but_not_a_second_set_of_span_metrics() -> None:
    processors = load_yaml(TEMPO_CONFIG)["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert "service-graphs" in processors
    # Span RED metrics come from the collector's span_metrics connector only.
    assert "span-metrics" not in processors


def test_loki_takes_otlp_with_structured_metadata_on_its_volume() -> None:
    loki = load_yaml(LOKI_CONFIG)
    assert loki["auth_enabled"] is False  # single tenant behind the compose network
    assert loki["limits_config"]["allow_structured_metadata"] is True
    schema = loki["schema_config"]["configs"][-1]
    # Structured metadata (trace_id, span_id from OTLP) needs the tsdb index and schema v13.
    assert schema["store"] == "tsdb"
    assert schema["schema"] == "v13"
    assert schema["object_store"] == "filesystem"
    data = volume_target("loki")
    common = loki["common"]
    assert is_under(common["path_prefix"] + "/x", data)
    for directory in common["storage"]["filesystem"].values():
        assert is_under(directory, data)
    assert is_under(loki["compactor"]["working_directory"], data)
    assert common["replication_factor"] == 1


def test_the_config_directories_hold_no_stray_files() -> None:
    # A misspelt file name (prometheus.yaml next to prometheus.yml) would be silently unused.
    for directory, expected in {
        "collector": {"config.yaml"},
        "tempo": {"tempo.yaml"},
        "loki": {"loki.yaml"},
    }.items():
        present = {p.name for p in Path(REPO / directory).iterdir() if p.is_file()}
        assert present == expected, directory
