"""Links out of the job browser: a job's trace in Grafana's Tempo Explore and its log
lines in Loki. Templates hold ``{trace_id}``, ``{job_id}`` and ``{queue}``; each value is
URL-quoted before it is put in (a job id is anyone's text)."""

from __future__ import annotations

import json
from urllib.parse import quote

__all__ = ["DEFAULT_LOGS_URL", "DEFAULT_TRACE_URL", "fill"]

# The compose stack's Grafana (datasource uids from grafana/provisioning/datasources).
GRAFANA = "http://localhost:3000"


def _explore(datasource: dict[str, str], query: dict[str, object]) -> str:
    pane = {
        "datasource": datasource["uid"],
        "queries": [{"refId": "A", "datasource": datasource, **query}],
        "range": {"from": "now-7d", "to": "now"},
    }
    panes = quote(json.dumps({"job": pane}, separators=(",", ":")), safe="")
    # The placeholders must survive quoting: put them back.
    for name in ("trace_id", "job_id", "queue"):
        panes = panes.replace(quote("{" + name + "}", safe=""), "{" + name + "}")
    return f"{GRAFANA}/explore?schemaVersion=1&orgId=1&panes={panes}"


DEFAULT_TRACE_URL = _explore(
    {"type": "tempo", "uid": "tempo"}, {"queryType": "traceql", "query": "{trace_id}"}
)
DEFAULT_LOGS_URL = _explore(
    {"type": "loki", "uid": "loki"},
    {"expr": '{service_name=~".+"} | trace_id="{trace_id}"', "queryType": "range"},
)


def fill(template: str | None, *, trace_id: str | None, job_id: str, queue: str) -> str | None:
    """``template`` with the job's values, or None (no template, or it needs a trace id
    and the job has none)."""
    if not template or ("{trace_id}" in template and not trace_id):
        return None
    values = {"trace_id": trace_id or "", "job_id": job_id, "queue": queue}
    for name, value in values.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return template
