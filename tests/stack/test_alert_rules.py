"""The alert rules (``prometheus/rules/queue_alerts.yml``) pass ``promtool check rules``
and their unit tests (``queue_alerts_test.yml``, firing and not-firing cases for every
alert) pass ``promtool test rules``, with the Debian ``promtool``.

``tests/stack/test_dashboards.py`` also loads the rules into a real Prometheus scraping a
real worker and checks that they evaluate without errors on real series.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.e2e.prometheus_server import PROMTOOL

RULES_DIR = Path(__file__).resolve().parents[2] / "prometheus" / "rules"
RULES = RULES_DIR / "queue_alerts.yml"
RULE_TESTS = RULES_DIR / "queue_alerts_test.yml"
ALERTS = {
    "QueueBacklogGrowing",
    "QueueWaitTimeHigh",
    "QueueOldestJobTooOld",
    "QueueJobFailureRatioHigh",
    "QueueJobsStalled",
    "QueueNoLiveWorkers",
    "QueueWorkerLoopFailing",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, check=False, cwd=RULES_DIR, timeout=60
    )


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def test_every_alert_is_documented_and_tested_both_ways() -> None:
    """Each alert has a severity, a summary and a description, and the unit tests expect
    it to fire somewhere and expect an empty result somewhere else."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule
        assert {"summary", "description"} <= rule["annotations"].keys(), rule

    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == ALERTS, f"no firing case for {ALERTS - fires}"
    assert quiet == ALERTS, f"no not-firing case for {ALERTS - quiet}"
