"""prometheus/prometheus.yml: checked by promtool, as far as the promtool here can.

The build machines have Debian's Prometheus 2.42, whose promtool predates the `otlp`
section of the configuration file (added in 2.47, and the reason the stack needs
Prometheus 3). So the file is checked twice: as it is (skipped, with the reason, if 2.42
rejects exactly the 3.x-only sections) and without those sections, which 2.42 must accept.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

from tests.stack.stackfiles import PROMETHEUS_CONFIG, load_yaml, mounts, services

PROMTOOL = shutil.which("promtool")
# Top-level sections a Prometheus 3.x file may have that promtool 2.42 does not know.
NEWER_THAN_PROMTOOL = frozenset({"otlp"})
TRANSLATION_STRATEGIES = frozenset({
    "UnderscoreEscapingWithSuffixes",
    "UnderscoreEscapingWithoutSuffixes",
    "NoUTF8EscapingWithSuffixes",
    "NoTranslation",
})  # fmt: skip

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def promtool_check_config(path: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_promtool
def test_promtool_accepts_the_config_as_written() -> None:
    result = promtool_check_config(PROMETHEUS_CONFIG)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        unknown = set(re.findall(r"field (\w+) not found in type config\.plain", output))
        if unknown and unknown <= NEWER_THAN_PROMTOOL:
            pytest.skip(
                f"promtool here is older than the Prometheus 3.x the stack runs and does not know "
                f"{sorted(unknown)}; the rest of the file is checked by the next test"
            )
    assert result.returncode == 0, output


def rules_prometheus_loads() -> dict[str, Path]:
    """The files Prometheus's rule_files patterns match inside its container, by container
    path, mapped back to the repository through compose.yaml's bind mounts."""
    found: dict[str, Path] = {}
    for mount in mounts():
        if mount.service != "prometheus" or not mount.bind:
            continue
        target = PurePosixPath(mount.target)
        inside = (
            {target / p.name: p for p in mount.host_path.iterdir() if p.is_file()}
            if mount.host_path.is_dir()
            else {target: mount.host_path}
        )
        for container_path, host_path in inside.items():
            for pattern in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
                if fnmatch.fnmatchcase(str(container_path), pattern):
                    found[str(container_path)] = host_path
    return found


def test_prometheus_loads_rule_files_and_nothing_else() -> None:
    loaded = rules_prometheus_loads()
    assert loaded, "rule_files matches no mounted file: no alert would ever fire"
    for container_path, host_path in loaded.items():
        # A promtool unit-test file (rule_files/tests at its top) here would stop Prometheus
        # from loading its rules at all.
        content = load_yaml(host_path)
        assert set(content) == {"groups"}, f"{container_path} ({host_path.name}) is no rule file"


@needs_promtool
def test_promtool_accepts_the_config_without_its_prometheus_3_sections(tmp_path: Path) -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    for section in NEWER_THAN_PROMTOOL:
        config.pop(section, None)
    # The rule files as the container sees them, so promtool checks exactly what
    # Prometheus will load.
    rules = tmp_path / "rules"
    rules.mkdir()
    for container_path, host_path in rules_prometheus_loads().items():
        shutil.copyfile(host_path, rules / PurePosixPath(container_path).name)
    config["rule_files"] = [str(rules / PurePosixPath(p).name) for p in config["rule_files"]]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = promtool_check_config(copy)
    assert result.returncode == 0, result.stdout + result.stderr


def test_otlp_section_keeps_the_metric_names_the_dashboards_use() -> None:
    otlp = load_yaml(PROMETHEUS_CONFIG)["otlp"]
    assert otlp["translation_strategy"] in TRANSLATION_STRATEGIES
    # messaging_process_duration_seconds_bucket, not messaging.process.duration: the names
    # the dashboards, the alert rules and queue_otel's /metrics endpoint share.
    assert otlp["translation_strategy"] == "UnderscoreEscapingWithSuffixes"
    promoted = otlp["promote_resource_attributes"]
    assert len(promoted) == len(set(promoted))
    assert all(isinstance(a, str) and a for a in promoted)
    assert not otlp.get("promote_all_resource_attributes", False)


def test_rules_are_loaded_from_the_mounted_directory() -> None:
    assert load_yaml(PROMETHEUS_CONFIG)["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_prometheus_3_is_what_runs() -> None:
    image = services()["prometheus"]["image"]
    assert image.startswith("prom/prometheus:v3.")
