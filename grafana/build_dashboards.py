"""Generate queue_core's Grafana dashboards with grafana-foundation-sdk (pinned 0.0.21).

Run from the repository root:

    python -m grafana.build_dashboards          # (re)write grafana/dashboards/*.json
    python -m grafana.build_dashboards --check  # exit 1 if the committed JSON is stale

The JSON files are committed (Grafana's file provider reads them, see
``grafana/provisioning/dashboards/dashboards.yaml``); edit this module, never the JSON,
and run it again. The output is deterministic: sorted keys, panel ids in order, no
timestamps. ``tests/stack/test_dashboards.py`` fails when the two drift apart, and
evaluates every PromQL target of every panel against a real Prometheus.

Conventions (``docs/observability-stack.md``): datasources are referred to by their fixed
UIDs ``prometheus``, ``tempo`` and ``loki``; metric and label names are those queue_otel
exports (identical through ``/metrics`` and through the Collector), and every query
aggregates with ``sum by (...)``/``max by (...)``, so the extra labels of either path
(``job``, ``instance``, ``otel_scope_*``) do not matter. The four metrics of the messaging
conventions (``messaging_*``) are filtered on ``messaging_system="queue_core"``, since
other instrumented messaging clients export the same names.

Dashboards (uid: what it answers):

- ``queue-core-overview``: is work flowing? throughput, backlog, oldest job, latencies,
  failure and retry rates, across the selected queues;
- ``queue-core-queue``: one queue in detail, per job name: outcomes, enqueue rate and
  latency, wait/processing/end-to-end percentiles, retries, failures, holds, stalls;
- ``queue-core-workers``: live workers, capacity against active jobs (utilisation),
  rate-limit holds, stalled-job recoveries;
- ``queue-core-failures``: top error types, failures and retries by error type and job
  name, growth of the failed (dead-letter) set, and the failed attempts' traces and logs.

Thresholds drawn on panels match the alert rules in ``prometheus/rules/queue_alerts.yml``
(failure ratio 5 %, wait p95 30 s, waiting backlog 100 jobs).

Every dashboard links to the job browser (``queue-core ui``, the compose service ``ui``),
and panels by queue have data links to its queue pages (``<browser>/q/<queue>?state=...``).
Its base URL is the hidden textbox variable ``job_browser``, by default compose's
``http://localhost:8080``; ``?var-job_browser=https://...`` in a dashboard's URL (or its
settings) points the links at another one.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

# grafana-foundation-sdk marks the classic dashboard schema as deprecated in favour of the
# v2 schema, at import time. File provisioning of Grafana 11/12 reads the classic schema,
# which is what we generate, so the warning is noise here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import (
        bargauge,
        logs,
        loki,
        prometheus,
        stat,
        table,
        timeseries,
    )
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import dashboard as dash
    from grafana_foundation_sdk.builders import tempo as tempo_builders
    from grafana_foundation_sdk.cog.builder import Builder
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as model
    from grafana_foundation_sdk.models import prometheus as prometheus_model
    from grafana_foundation_sdk.models import tempo as tempo_model

__all__ = ["DASHBOARDS_DIR", "build_all", "main", "render"]

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
PanelT = TypeVar("PanelT")

PROMETHEUS = common.DataSourceRef(type_val="prometheus", uid="prometheus")
TEMPO = common.DataSourceRef(type_val="tempo", uid="tempo")
LOKI = common.DataSourceRef(type_val="loki", uid="loki")

TAG = "queue_core"
# Thresholds shared with prometheus/rules/queue_alerts.yml.
FAILURE_RATIO_THRESHOLD = 0.05
WAIT_P95_TARGET_S = 30.0
BACKLOG_THRESHOLD = 100.0
# The job browser: compose.yaml publishes it on 127.0.0.1:8080.
JOB_BROWSER_VAR = "job_browser"
JOB_BROWSER_URL = "http://localhost:8080"

# ------------------------------------------------------------------------------ PromQL

QUEUE_LABEL = "messaging_destination_name"
JOB_LABEL = "queue_core_job_name"
SYSTEM = 'messaging_system="queue_core"'
QUEUE = f'{QUEUE_LABEL}=~"$queue"'
JOB = f'{JOB_LABEL}=~"$job_name"'
WAITING = 'queue_core_job_state="waiting"'
BACKLOG_STATES = 'queue_core_job_state=~"waiting|active|delayed"'
KEPT_STATES = 'queue_core_job_state=~"completed|failed"'
FAILED_STATE = 'queue_core_job_state="failed"'
HAS_ERROR = 'error_type!=""'
RATE = "$__rate_interval"
RANGE = "$__range"
QUANTILES = (0.5, 0.95, 0.99)

CONSUMED = "messaging_client_consumed_messages_total"
SENT = "messaging_client_sent_messages_total"
ENQUEUE_DURATION = "messaging_client_operation_duration_seconds"
PROCESS_DURATION = "messaging_process_duration_seconds"
# Attempts by outcome: the process-duration histogram's count (consumed.messages counts
# deliveries at the fetch, before any outcome).
ATTEMPTS = f"{PROCESS_DURATION}_count"
WAIT_DURATION = "queue_core_job_wait_duration_seconds"
JOB_DURATION = "queue_core_job_duration_seconds"
RETRIES = "queue_core_job_retries_total"
FAILURES = "queue_core_job_failures_total"
STALLS = "queue_core_job_stalls_total"
RATE_LIMIT = "queue_core_rate_limit_delay_seconds"
ACTIVE = "queue_core_job_active"
WORKERS = "queue_core_worker_count"
CAPACITY = "queue_core_worker_capacity"
DEPTH = "queue_core_queue_depth"
OLDEST = "queue_core_queue_oldest_job_age_seconds"


def sel(metric: str, *matchers: str) -> str:
    """``metric{a, b}``."""
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def agg(operator: str, labels: Sequence[str], inner: str) -> str:
    """``sum by (a, b) (inner)``, or ``sum(inner)`` without labels."""
    return f"{operator} by ({', '.join(labels)}) ({inner})" if labels else f"{operator}({inner})"


def sum_rate(
    metric: str, matchers: Sequence[str], labels: Sequence[str] = (), window: str = RATE
) -> str:
    return agg("sum", labels, f"rate({sel(metric, *matchers)}[{window}])")


def sum_increase(
    metric: str, matchers: Sequence[str], labels: Sequence[str] = (), window: str = RANGE
) -> str:
    return agg("sum", labels, f"increase({sel(metric, *matchers)}[{window}])")


def quantile(q: float, histogram: str, matchers: Sequence[str], labels: Sequence[str]) -> str:
    rate = f"rate({sel(f'{histogram}_bucket', *matchers)}[{RATE}])"
    return f"histogram_quantile({q}, {agg('sum', ('le', *labels), rate)})"


def ratio_or_zero(numerator: str, denominator: str) -> str:
    """``numerator / denominator``, and 0 (not "no data") where the numerator has no
    series yet: a queue that never failed has a failure ratio of 0."""
    return f"{numerator} / {denominator} or {denominator} * 0"


def failure_ratio(matchers: Sequence[str], labels: Sequence[str], window: str = RATE) -> str:
    """Jobs failed for good over jobs finished (final outcomes, stalled failures included)."""
    count = f"{JOB_DURATION}_count"
    failed = sum_rate(count, [*matchers, 'queue_core_job_outcome="failed"'], labels, window)
    return ratio_or_zero(failed, sum_rate(count, matchers, labels, window))


# ------------------------------------------------------------------------------ panels


class Layout:
    """Adds rows and panels to a dashboard; the builder places them on the grid."""

    def __init__(self, dashboard: dash.Dashboard) -> None:
        self.dashboard = dashboard

    def row(self, title: str) -> None:
        self.dashboard.with_row(dash.Row(title))

    def add(self, *panels: Builder[Any]) -> None:
        for panel in panels:
            self.dashboard.with_panel(panel)


def target(
    expr: str,
    legend: str = "__auto",
    *,
    exemplar: bool = False,
    instant: bool = False,
    table_format: bool = False,
) -> prometheus.Dataquery:
    query = (
        prometheus.Dataquery()
        .datasource(PROMETHEUS)
        .expr(expr)
        .legend_format(legend)
        .editor_mode(prometheus_model.QueryEditorMode.CODE)
    )
    if exemplar:
        query.exemplar(True)
    if instant:
        query.instant()
    else:
        query.range()
    if table_format:
        query.format(prometheus_model.PromQueryFormat.TABLE)
    return query


def with_targets(panel: PanelT, targets: Sequence[Builder[Any]]) -> PanelT:
    """Add ``targets`` to ``panel`` with refIds A, B, C..."""
    builder: Any = panel  # every panel builder has with_target; they share no base class
    for index, query in enumerate(targets):
        with_ref: Any = query
        builder.with_target(with_ref.ref_id(chr(ord("A") + index)))
    return panel


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


BASE_THRESHOLDS = thresholds((None, "green"))


def graph(
    title: str,
    description: str,
    targets: Sequence[Builder[Any]],
    unit: str,
    *,
    width: int = 12,
    height: int = 8,
    limit: float | None = None,
    stack: bool = False,
    links: Sequence[dash.DashboardLink] = (),
) -> timeseries.Panel:
    """A time series panel. ``limit`` draws a threshold line (dashed, red above it);
    ``links``: data links of its series."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .min(0)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10)
        .show_points(common.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if stack:
        panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if links:
        panel.data_links(list(links))
    if limit is None:
        panel.thresholds(BASE_THRESHOLDS)
    else:
        panel.thresholds(thresholds((None, "green"), (limit, "red"))).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.DASHED
            )
        )
    return with_targets(panel, targets)


def single(
    title: str,
    description: str,
    expr: str,
    unit: str,
    *,
    width: int = 4,
    steps: Sequence[tuple[float | None, str]] = ((None, "green"),),
    over_range: bool = False,
    links: Sequence[dash.DashboardLink] = (),
) -> stat.Panel:
    """A stat panel: the latest value, with a sparkline; or, ``over_range``, one instant
    query whose expression covers the dashboard's time range (``$__range``)."""
    graph_mode = common.BigValueGraphMode.NONE if over_range else common.BigValueGraphMode.AREA
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(width)
        .height(4)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .graph_mode(graph_mode)
        .color_mode(common.BigValueColorMode.VALUE)
        .text_mode(common.BigValueTextMode.VALUE)
        .thresholds(thresholds(*steps))
    )
    if links:
        panel.data_links(list(links))
    return with_targets(panel, [target(expr, "", instant=over_range)])


def bars(
    title: str,
    description: str,
    expr: str,
    legend: str,
    unit: str,
    *,
    width: int = 12,
    height: int = 8,
) -> bargauge.Panel:
    """A bar gauge of one instant query over the dashboard's time range."""
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .min(0)
        .span(width)
        .height(height)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .thresholds(BASE_THRESHOLDS)
    )
    return with_targets(panel, [target(expr, legend, instant=True)])


def percentiles(
    histogram: str, matchers: Sequence[str], labels: Sequence[str], legend: str
) -> list[prometheus.Dataquery]:
    """p50, p95 and p99 of a histogram, with exemplars: the trace ids queue_otel attaches
    to histogram buckets, which the Prometheus datasource links to Tempo."""
    return [
        target(
            quantile(q, histogram, matchers, labels),
            f"p{round(q * 100)} {legend}".strip(),
            exemplar=True,
        )
        for q in QUANTILES
    ]


# ---------------------------------------------------------------------- dashboard parts


def queue_variable(*, multi: bool) -> dash.QueryVariable:
    """The queues that produced, consumed or were observed (depth), sorted by name."""
    query = f'label_values({{__name__=~"{SENT}|{CONSUMED}|{DEPTH}", {SYSTEM}}}, {QUEUE_LABEL})'
    variable = (
        dash.QueryVariable("queue")
        .label("Queue")
        .description("messaging.destination.name")
        .datasource(PROMETHEUS)
        .query(query)
        .definition(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        variable.all_value(".*")
    return variable


def job_name_variable() -> dash.QueryVariable:
    """The job names of the selected queues."""
    query = f'label_values({{__name__=~"{SENT}|{CONSUMED}", {SYSTEM}, {QUEUE}}}, {JOB_LABEL})'
    return (
        dash.QueryVariable("job_name")
        .label("Job name")
        .description("queue_core.job.name")
        .datasource(PROMETHEUS)
        .query(query)
        .definition(query)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def job_browser_variable() -> dash.TextBoxVariable:
    """The job browser's base URL, hidden: set it with ``?var-job_browser=...``."""
    return (
        dash.TextBoxVariable(JOB_BROWSER_VAR)
        .label("Job browser")
        .description("Base URL of the job browser (queue-core ui) that the links open.")
        .default_value(JOB_BROWSER_URL)
        .current(model.VariableOption(selected=True, text=JOB_BROWSER_URL, value=JOB_BROWSER_URL))
        .hide(model.VariableHide.HIDE_VARIABLE)
    )


def job_browser_link(path: str = "/") -> dash.DashboardLink:
    """The dashboard's link to the job browser (``path`` under its base URL)."""
    return (
        dash.DashboardLink("Job browser")
        .type(model.DashboardLinkType.LINK)
        .url(f"${{{JOB_BROWSER_VAR}}}{path}")
        .icon("external link")
        .tooltip("Queues and jobs in the job browser: retry, remove, open a job's trace")
        .target_blank(True)
    )


def queue_page(queue: str, state: str | None = None, name: str | None = None) -> dash.DashboardLink:
    """A data link to a queue's page in the job browser, jobs of ``state`` listed
    (``queue`` and ``state`` are Grafana expressions, e.g. a series' label; ``name``: the
    queue as the link's title shows it)."""
    query = f"?state={state}" if state else ""
    return (
        dash.DashboardLink(f"{name or queue}: open in the job browser")
        .url(f"${{{JOB_BROWSER_VAR}}}/q/{queue}{query}")
        .target_blank(True)
    )


# The queue and state of a series, in a data link.
SERIES_QUEUE = f"${{__field.labels.{QUEUE_LABEL}}}"
SERIES_STATE = "${__field.labels.queue_core_job_state}"
# The Queue dashboard's one queue, in a URL.
THE_QUEUE = "${queue:percentencode}"


def new_dashboard(
    uid: str,
    title: str,
    description: str,
    variables: Sequence[dash.QueryVariable],
    browser_path: str = "/",
) -> dash.Dashboard:
    dashboard = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            dash.DashboardLink("queue_core dashboards")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .link(job_browser_link(browser_path))
    )
    for variable in variables:
        dashboard.with_variable(variable)
    dashboard.with_variable(job_browser_variable())
    return dashboard


# --------------------------------------------------------------------------- dashboards


def overview() -> dash.Dashboard:
    dashboard = new_dashboard(
        "queue-core-overview",
        "queue_core / Overview",
        "Is work flowing? Throughput, backlog, latency and failures of the selected queues.",
        [queue_variable(multi=True)],
    )
    q = QUEUE
    layout = Layout(dashboard)
    finished = 'queue_core_job_outcome=~"completed|failed"'

    layout.row("Now")
    layout.add(
        single(
            "Live workers",
            "Running workers (queue_core.worker.count).",
            f"sum({sel(WORKERS, q)})",
            "none",
            steps=((None, "red"), (1, "green")),
        ),
        single(
            "Utilisation",
            "Jobs running over the jobs the running workers may run.",
            f"sum({sel(ACTIVE, q)}) / sum({sel(CAPACITY, q)})",
            "percentunit",
            steps=((None, "green"), (0.9, "orange")),
        ),
        single(
            "Waiting",
            "Jobs ready to run and not started (queue depth, state waiting).",
            f"sum({sel(DEPTH, q, WAITING)})",
            "none",
            steps=((None, "green"), (BACKLOG_THRESHOLD, "orange")),
        ),
        single(
            "Oldest waiting job",
            "How long the job that has waited longest has been ready.",
            f"max({sel(OLDEST, q)})",
            "s",
            steps=((None, "green"), (WAIT_P95_TARGET_S, "orange")),
        ),
        single(
            "Completed",
            "Jobs completed per second.",
            sum_rate(ATTEMPTS, [SYSTEM, q, 'queue_core_job_outcome="completed"']),
            "suffix: jobs/s",
        ),
        single(
            "Failure ratio",
            "Jobs failed for good over jobs finished.",
            failure_ratio([SYSTEM, q], []),
            "percentunit",
            steps=((None, "green"), (FAILURE_RATIO_THRESHOLD, "red")),
        ),
    )

    layout.row("Throughput")
    layout.add(
        graph(
            "Jobs finished per second, by queue and outcome",
            "Attempts that ended a job: completed, or failed for good "
            "(messaging.process.duration counts, by outcome).",
            [
                target(
                    sum_rate(
                        ATTEMPTS, [SYSTEM, q, finished], [QUEUE_LABEL, "queue_core_job_outcome"]
                    ),
                    "{{messaging_destination_name}} {{queue_core_job_outcome}}",
                )
            ],
            "suffix: jobs/s",
            links=[queue_page(SERIES_QUEUE, "${__field.labels.queue_core_job_outcome}")],
        ),
        graph(
            "Enqueued vs finished per second, by queue",
            "Producers' rate against workers' rate: a backlog grows while the first is higher.",
            [
                target(
                    sum_rate(SENT, [SYSTEM, q], [QUEUE_LABEL]),
                    "{{messaging_destination_name}} enqueued",
                ),
                target(
                    sum_rate(ATTEMPTS, [SYSTEM, q, finished], [QUEUE_LABEL]),
                    "{{messaging_destination_name}} finished",
                ),
            ],
            "suffix: jobs/s",
        ),
        graph(
            "Failure ratio, by queue",
            "Jobs failed for good over jobs finished (queue_core.job.duration counts). "
            f"The alert fires above {FAILURE_RATIO_THRESHOLD:.0%}.",
            [target(failure_ratio([SYSTEM, q], [QUEUE_LABEL]), "{{messaging_destination_name}}")],
            "percentunit",
            limit=FAILURE_RATIO_THRESHOLD,
        ),
        graph(
            "Retries and failures per second, by queue",
            "Retries scheduled after a failed attempt, and jobs that failed for good.",
            [
                target(
                    sum_rate(RETRIES, [SYSTEM, q], [QUEUE_LABEL]),
                    "{{messaging_destination_name}} retries",
                ),
                target(
                    sum_rate(FAILURES, [SYSTEM, q], [QUEUE_LABEL]),
                    "{{messaging_destination_name}} failed",
                ),
            ],
            "suffix: jobs/s",
        ),
    )

    layout.row("Backlog")
    layout.add(
        graph(
            "Backlog by state",
            "Jobs waiting (ready), active (running) and delayed (scheduled or backing off), "
            "read from Redis by the process that observes the queues.",
            [
                target(
                    agg(
                        "sum", [QUEUE_LABEL, "queue_core_job_state"], sel(DEPTH, q, BACKLOG_STATES)
                    ),
                    "{{messaging_destination_name}} {{queue_core_job_state}}",
                )
            ],
            "none",
            width=8,
            links=[queue_page(SERIES_QUEUE, SERIES_STATE)],
        ),
        graph(
            "Oldest waiting job, by queue",
            "How long the longest-waiting job has been ready: the queue's latency right now.",
            [
                target(
                    f"max by ({QUEUE_LABEL}) ({sel(OLDEST, q)})", "{{messaging_destination_name}}"
                )
            ],
            "s",
            width=8,
            limit=WAIT_P95_TARGET_S,
            links=[queue_page(SERIES_QUEUE, "waiting")],
        ),
        graph(
            "Kept jobs: completed and failed sets",
            "Finished jobs kept in Redis (remove_on_complete / remove_on_fail decide how many); "
            "the failed set is the dead-letter set.",
            [
                target(
                    f"sum by ({QUEUE_LABEL}, queue_core_job_state) ({sel(DEPTH, q, KEPT_STATES)})",
                    "{{messaging_destination_name}} {{queue_core_job_state}}",
                )
            ],
            "none",
            width=8,
            links=[queue_page(SERIES_QUEUE, SERIES_STATE)],
        ),
    )

    layout.row("Latency")
    layout.add(
        graph(
            "Wait time p50 / p95 / p99, by queue",
            "From a job becoming ready to its first attempt (delays excluded). "
            "Exemplars link to the attempt's trace.",
            percentiles(
                WAIT_DURATION, [SYSTEM, q], [QUEUE_LABEL], "{{messaging_destination_name}}"
            ),
            "s",
            width=8,
            limit=WAIT_P95_TARGET_S,
        ),
        graph(
            "Processing time p50 / p95 / p99, by queue",
            "One attempt, from the processor call to the result stored in Redis "
            "(messaging.process.duration). Exemplars link to the attempt's trace.",
            percentiles(
                PROCESS_DURATION, [SYSTEM, q], [QUEUE_LABEL], "{{messaging_destination_name}}"
            ),
            "s",
            width=8,
        ),
        graph(
            "End-to-end time p50 / p95 / p99, by queue",
            "From the enqueue to the final outcome, retries and delays included "
            "(queue_core.job.duration). Exemplars link to the job's trace.",
            percentiles(JOB_DURATION, [SYSTEM, q], [QUEUE_LABEL], "{{messaging_destination_name}}"),
            "s",
            width=8,
        ),
    )
    return dashboard


def queue_detail() -> dash.Dashboard:
    dashboard = new_dashboard(
        "queue-core-queue",
        "queue_core / Queue",
        "One queue in detail, per job name: outcomes, enqueues, latencies, retries, failures.",
        [queue_variable(multi=False), job_name_variable()],
        browser_path=f"/q/{THE_QUEUE}",
    )
    q, j = QUEUE, JOB
    layout = Layout(dashboard)

    def depth(state: str) -> str:
        matcher = f'queue_core_job_state="{state}"'
        return f"sum({sel(DEPTH, q, matcher)})"

    def jobs(state: str | None) -> list[dash.DashboardLink]:
        return [queue_page(THE_QUEUE, state, "${queue}")]

    layout.row("$queue now")
    layout.add(
        single(
            "Live workers",
            "Running workers of this queue.",
            f"sum({sel(WORKERS, q)})",
            "none",
            steps=((None, "red"), (1, "green")),
        ),
        single(
            "Waiting",
            "Jobs ready and not started.",
            depth("waiting"),
            "none",
            steps=((None, "green"), (BACKLOG_THRESHOLD, "orange")),
            links=jobs("waiting"),
        ),
        single("Active", "Jobs running.", depth("active"), "none", links=jobs("active")),
        single(
            "Delayed",
            "Jobs scheduled for later, or backing off before a retry.",
            depth("delayed"),
            "none",
            links=jobs("delayed"),
        ),
        single(
            "Oldest waiting job",
            "How long the longest-waiting job has been ready.",
            f"max({sel(OLDEST, q)})",
            "s",
            steps=((None, "green"), (WAIT_P95_TARGET_S, "orange")),
        ),
        single(
            "Failed set",
            "Jobs in the failed (dead-letter) set.",
            depth("failed"),
            "none",
            steps=((None, "green"), (1, "orange")),
            links=jobs("failed"),
        ),
    )

    layout.row("Backlog")
    layout.add(
        graph(
            "Backlog by state",
            "Jobs waiting (ready), active (running) and delayed (scheduled or backing off).",
            [
                target(
                    agg("sum", ["queue_core_job_state"], sel(DEPTH, q, BACKLOG_STATES)),
                    "{{queue_core_job_state}}",
                )
            ],
            "none",
            links=jobs(SERIES_STATE),
        ),
        graph(
            "Oldest waiting job",
            "How long the longest-waiting job has been ready: the queue's latency right now.",
            [target(f"max({sel(OLDEST, q)})", "oldest waiting job")],
            "s",
            limit=WAIT_P95_TARGET_S,
        ),
    )

    layout.row("Throughput")
    layout.add(
        graph(
            "Attempts per second, by job name and outcome",
            "Every attempt's outcome: completed, retry, failed (for good), rate_limited, "
            "delayed, lock_lost, interrupted.",
            [
                target(
                    sum_rate(ATTEMPTS, [SYSTEM, q, j], [JOB_LABEL, "queue_core_job_outcome"]),
                    "{{queue_core_job_name}} {{queue_core_job_outcome}}",
                )
            ],
            "suffix: attempts/s",
            width=16,
        ),
        bars(
            "Outcomes over the time range",
            "Attempts by outcome over the dashboard's time range.",
            sum_increase(ATTEMPTS, [SYSTEM, q, j], ["queue_core_job_outcome"]),
            "{{queue_core_job_outcome}}",
            "none",
            width=8,
        ),
        graph(
            "Enqueued per second, by job name",
            "Jobs handed to Redis by producers (messaging.client.sent.messages).",
            [target(sum_rate(SENT, [SYSTEM, q, j], [JOB_LABEL]), "{{queue_core_job_name}}")],
            "suffix: jobs/s",
        ),
        graph(
            "Enqueue latency p50 / p95 / p99",
            "Duration of the producers' add calls, one Redis round trip "
            "(messaging.client.operation.duration; per queue, not per job name).",
            percentiles(ENQUEUE_DURATION, [SYSTEM, q, 'messaging_operation_name="send"'], [], ""),
            "s",
        ),
    )

    layout.row("Latency by job name")
    layout.add(
        graph(
            "Wait time p50 / p95 / p99, by job name",
            "From ready to the first attempt. Exemplars link to the attempt's trace.",
            percentiles(WAIT_DURATION, [SYSTEM, q, j], [JOB_LABEL], "{{queue_core_job_name}}"),
            "s",
            width=8,
            limit=WAIT_P95_TARGET_S,
        ),
        graph(
            "Processing time p50 / p95 / p99, by job name",
            "One attempt. Exemplars link to the attempt's trace.",
            percentiles(PROCESS_DURATION, [SYSTEM, q, j], [JOB_LABEL], "{{queue_core_job_name}}"),
            "s",
            width=8,
        ),
        graph(
            "End-to-end time p95, by job name and outcome",
            "From the enqueue to the final outcome, retries and delays included. Exemplars "
            "link to the job's trace.",
            [
                target(
                    quantile(
                        0.95, JOB_DURATION, [SYSTEM, q, j], [JOB_LABEL, "queue_core_job_outcome"]
                    ),
                    "p95 {{queue_core_job_name}} {{queue_core_job_outcome}}",
                    exemplar=True,
                )
            ],
            "s",
            width=8,
        ),
    )

    layout.row("Problems")
    layout.add(
        graph(
            "Retries per second, by job name and error type",
            "Retries scheduled after a failed attempt (queue_core.job.retries).",
            [
                target(
                    sum_rate(RETRIES, [SYSTEM, q, j], [JOB_LABEL, "error_type"]),
                    "{{queue_core_job_name}} {{error_type}}",
                )
            ],
            "suffix: jobs/s",
        ),
        graph(
            "Failures per second, by job name and error type",
            "Jobs that failed for good (queue_core.job.failures).",
            [
                target(
                    sum_rate(FAILURES, [SYSTEM, q, j], [JOB_LABEL, "error_type"]),
                    "{{queue_core_job_name}} {{error_type}}",
                )
            ],
            "suffix: jobs/s",
        ),
        graph(
            "Failure ratio",
            f"Jobs failed for good over jobs finished. The alert fires above "
            f"{FAILURE_RATIO_THRESHOLD:.0%}.",
            [target(failure_ratio([SYSTEM, q, j], [JOB_LABEL]), "{{queue_core_job_name}}")],
            "percentunit",
            width=8,
            limit=FAILURE_RATIO_THRESHOLD,
        ),
        graph(
            "Rate-limit holds per second, by kind",
            "Fetching held by the queue's limiter, or by a RateLimitError / "
            "worker.rate_limit() (manual).",
            [
                target(
                    sum_rate(f"{RATE_LIMIT}_count", [SYSTEM, q], ["queue_core_rate_limit_kind"]),
                    "{{queue_core_rate_limit_kind}}",
                )
            ],
            "suffix: holds/s",
            width=8,
        ),
        graph(
            "Stalled jobs recovered",
            "Jobs taken back from a worker that stopped renewing its lock: requeued, or "
            "failed after max_stalled_count. Counted per rate interval.",
            [
                target(
                    sum_increase(STALLS, [SYSTEM, q], ["queue_core_stall_outcome"], RATE),
                    "{{queue_core_stall_outcome}}",
                )
            ],
            "none",
            width=8,
        ),
    )
    return dashboard


def workers() -> dash.Dashboard:
    dashboard = new_dashboard(
        "queue-core-workers",
        "queue_core / Workers",
        "Live workers, capacity against active jobs, rate-limit holds and stalled recoveries.",
        [queue_variable(multi=True)],
    )
    q = QUEUE
    layout = Layout(dashboard)
    utilisation = (
        f"sum by ({QUEUE_LABEL}) ({sel(ACTIVE, q)}) / sum by ({QUEUE_LABEL}) ({sel(CAPACITY, q)})"
    )

    layout.row("Now")
    layout.add(
        single(
            "Live workers",
            "Running workers.",
            f"sum({sel(WORKERS, q)})",
            "none",
            steps=((None, "red"), (1, "green")),
        ),
        single(
            "Capacity",
            "Jobs the running workers may run at once (their concurrency).",
            f"sum({sel(CAPACITY, q)})",
            "none",
        ),
        single("Active jobs", "Jobs running now.", f"sum({sel(ACTIVE, q)})", "none"),
        single(
            "Utilisation",
            "Active jobs over capacity.",
            f"sum({sel(ACTIVE, q)}) / sum({sel(CAPACITY, q)})",
            "percentunit",
            steps=((None, "green"), (0.9, "orange")),
        ),
        single(
            "Rate-limit holds",
            "Holds over the time range.",
            sum_increase(f"{RATE_LIMIT}_count", [SYSTEM, q]),
            "none",
            over_range=True,
        ),
        single(
            "Stalled recoveries",
            "Stalled jobs recovered over the time range.",
            sum_increase(STALLS, [SYSTEM, q]),
            "none",
            over_range=True,
            steps=((None, "green"), (1, "orange")),
        ),
    )

    layout.row("Workers and capacity")
    layout.add(
        graph(
            "Live workers, by queue",
            "Running workers (queue_core.worker.count). A queue with waiting jobs and no worker "
            "raises the QueueNoLiveWorkers alert.",
            [
                target(
                    f"sum by ({QUEUE_LABEL}) ({sel(WORKERS, q)})", "{{messaging_destination_name}}"
                )
            ],
            "none",
            width=8,
        ),
        graph(
            "Capacity vs active jobs, by queue",
            "Concurrency of the running workers against the jobs they are running.",
            [
                target(
                    f"sum by ({QUEUE_LABEL}) ({sel(CAPACITY, q)})",
                    "{{messaging_destination_name}} capacity",
                ),
                target(
                    f"sum by ({QUEUE_LABEL}) ({sel(ACTIVE, q)})",
                    "{{messaging_destination_name}} active",
                ),
            ],
            "none",
            width=8,
        ),
        graph(
            "Utilisation, by queue",
            "Active jobs over capacity: near 100 % with a growing backlog, add workers.",
            [target(utilisation, "{{messaging_destination_name}}")],
            "percentunit",
            width=8,
        ),
        graph(
            "Active jobs, by queue and job name",
            "What the workers are running now (queue_core.job.active).",
            [
                target(
                    f"sum by ({QUEUE_LABEL}, {JOB_LABEL}) ({sel(ACTIVE, q)})",
                    "{{messaging_destination_name}} {{queue_core_job_name}}",
                )
            ],
            "none",
            stack=True,
        ),
        bars(
            "Utilisation now, by queue",
            "Active jobs over capacity, latest value.",
            utilisation,
            "{{messaging_destination_name}}",
            "percentunit",
        ),
    )

    layout.row("Rate limits and stalled jobs")
    hold_labels = [QUEUE_LABEL, "queue_core_rate_limit_kind"]
    layout.add(
        graph(
            "Rate-limit holds per second, by queue and kind",
            "limiter: the queue's RateLimit; manual: RateLimitError or worker.rate_limit().",
            [
                target(
                    sum_rate(f"{RATE_LIMIT}_count", [SYSTEM, q], hold_labels),
                    "{{messaging_destination_name}} {{queue_core_rate_limit_kind}}",
                )
            ],
            "suffix: holds/s",
            width=8,
        ),
        graph(
            "Mean hold, by queue and kind",
            "Average length of a rate-limit hold.",
            [
                target(
                    f"{sum_rate(f'{RATE_LIMIT}_sum', [SYSTEM, q], hold_labels)} / "
                    f"{sum_rate(f'{RATE_LIMIT}_count', [SYSTEM, q], hold_labels)}",
                    "{{messaging_destination_name}} {{queue_core_rate_limit_kind}}",
                )
            ],
            "s",
            width=8,
        ),
        graph(
            "Stalled jobs recovered, by queue and outcome",
            "Jobs taken back from a dead worker (lock expired): requeued, or failed after "
            "max_stalled_count. Counted per rate interval.",
            [
                target(
                    sum_increase(
                        STALLS, [SYSTEM, q], [QUEUE_LABEL, "queue_core_stall_outcome"], RATE
                    ),
                    "{{messaging_destination_name}} {{queue_core_stall_outcome}}",
                )
            ],
            "none",
            width=8,
        ),
    )
    return dashboard


def failures() -> dash.Dashboard:
    dashboard = new_dashboard(
        "queue-core-failures",
        "queue_core / Failures",
        "Which errors, in which jobs, how fast the failed (dead-letter) set grows; "
        "the failed attempts' traces and logs.",
        [queue_variable(multi=True), job_name_variable()],
    )
    q, j = QUEUE, JOB
    layout = Layout(dashboard)
    failed_set = sel(DEPTH, q, FAILED_STATE)

    layout.row("Over the time range")
    layout.add(
        single(
            "Failed for good",
            "Jobs that failed for good over the time range.",
            sum_increase(FAILURES, [SYSTEM, q, j]),
            "none",
            over_range=True,
            width=6,
            steps=((None, "green"), (1, "red")),
        ),
        single(
            "Retries",
            "Retries scheduled over the time range.",
            sum_increase(RETRIES, [SYSTEM, q, j]),
            "none",
            over_range=True,
            width=6,
            steps=((None, "green"), (1, "orange")),
        ),
        single(
            "Failure ratio",
            "Jobs failed for good over jobs finished, over the time range.",
            failure_ratio([SYSTEM, q, j], [], RANGE),
            "percentunit",
            over_range=True,
            width=6,
            steps=((None, "green"), (FAILURE_RATIO_THRESHOLD, "red")),
        ),
        single(
            "Failed set",
            "Jobs in the failed (dead-letter) sets now.",
            f"sum({failed_set})",
            "none",
            width=6,
            steps=((None, "green"), (1, "orange")),
        ),
    )

    layout.row("Errors")
    top = panel_table(
        "Top error types of failed attempts",
        "Failed attempts (retried or final) over the time range, by error.type and job "
        "name: the ten most frequent.",
        "topk(10, "
        + sum_increase(ATTEMPTS, [SYSTEM, q, j, HAS_ERROR], ["error_type", JOB_LABEL, QUEUE_LABEL])
        + ")",
        {
            "error_type": "Error type",
            JOB_LABEL: "Job name",
            QUEUE_LABEL: "Queue",
            "Value": "Failed attempts",
        },
    )
    layout.add(
        top,
        bars(
            "Jobs failed for good, by error type",
            "Over the time range (queue_core.job.failures).",
            sum_increase(FAILURES, [SYSTEM, q, j], ["error_type"]),
            "{{error_type}}",
            "none",
        ),
        graph(
            "Failures per second, by error type and job name",
            "Jobs that failed for good.",
            [
                target(
                    sum_rate(FAILURES, [SYSTEM, q, j], ["error_type", JOB_LABEL]),
                    "{{error_type}} {{queue_core_job_name}}",
                )
            ],
            "suffix: jobs/s",
        ),
        graph(
            "Retries per second, by error type and job name",
            "Failed attempts that will run again after their backoff.",
            [
                target(
                    sum_rate(RETRIES, [SYSTEM, q, j], ["error_type", JOB_LABEL]),
                    "{{error_type}} {{queue_core_job_name}}",
                )
            ],
            "suffix: jobs/s",
        ),
    )

    layout.row("Dead letters")
    layout.add(
        graph(
            "Failed set, by queue",
            "Jobs kept in the failed set (remove_on_fail decides how many; by default all). "
            "Retry or remove them once the cause is fixed.",
            [target(f"sum by ({QUEUE_LABEL}) ({failed_set})", "{{messaging_destination_name}}")],
            "none",
            links=[queue_page(SERIES_QUEUE, "failed")],
        ),
        graph(
            "Failed set growth over the previous hour, by queue",
            "Change of the failed set over a sliding hour: steady growth means jobs keep "
            "failing for good.",
            [
                target(
                    f"sum by ({QUEUE_LABEL}) (delta({failed_set}[1h]))",
                    "{{messaging_destination_name}}",
                )
            ],
            "none",
            links=[queue_page(SERIES_QUEUE, "failed")],
        ),
    )

    layout.row("Traces and logs")
    layout.add(failed_traces(), job_logs())
    return dashboard


def panel_table(title: str, description: str, expr: str, names: dict[str, str]) -> table.Panel:
    """A table of one instant query, without its time column, columns renamed."""
    order = {name: index for index, name in enumerate(names)}
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .span(12)
        .height(8)
        .thresholds(BASE_THRESHOLDS)
        .sort_by([common_builders.TableSortByFieldState().display_name(names["Value"]).desc(True)])
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": order,
                    "renameByName": names,
                },
            )
        )
    )
    return with_targets(panel, [target(expr, "", instant=True, table_format=True)])


def failed_traces() -> table.Panel:
    """Tempo: the latest failed attempts of the selected queues and job names."""
    query = (
        '{ span.messaging.system = "queue_core" && span.messaging.operation.type = "process"'
        ' && span.messaging.destination.name =~ "${queue:regex}"'
        ' && span.queue_core.job.name =~ "${job_name:regex}" && status = error }'
    )
    panel = (
        table.Panel()
        .title("Failed attempts (traces)")
        .description(
            "The latest failed `process` spans in Tempo (status error, error.type set). "
            "Open one to see the job's whole trace, from the request that enqueued it."
        )
        .datasource(TEMPO)
        .span(12)
        .height(10)
    )
    panel.with_target(
        tempo_builders.Dataquery()
        .datasource(TEMPO)
        .ref_id("A")
        .query_type(tempo_model.TempoQueryType.TRACEQL.value)
        .query(query)
        .limit(20)
        .table_type(tempo_model.SearchTableType.TRACES)
    )
    return panel


def job_logs() -> logs.Panel:
    """Loki: the log lines of jobs of the selected queues and job names."""
    expr = '{service_name=~".+"} | queue =~ "${queue:regex}" | job_name =~ "${job_name:regex}"'
    panel = (
        logs.Panel()
        .title("Job logs")
        .description(
            "Lines logged inside jobs (queue_core binds queue, job_name, job_id and attempt; "
            "queue_otel adds trace_id). The trace_id field links to the trace in Tempo."
        )
        .datasource(LOKI)
        .span(12)
        .height(10)
        .show_time(True)
        .wrap_log_message(True)
        .enable_log_details(True)
        .sort_order(common.LogsSortOrder.DESCENDING)
    )
    panel.with_target(loki.Dataquery().datasource(LOKI).ref_id("A").expr(expr).query_type("range"))
    return panel


# ------------------------------------------------------------------------------ output


def number_panels(dashboard: model.Dashboard) -> None:
    """Give panels and rows ids 1, 2, ... in layout order (Grafana wants them unique)."""
    next_id = 1
    for panel in dashboard.panels or []:
        panel.id_val = next_id
        next_id += 1
        for child in getattr(panel, "panels", None) or []:
            child.id_val = next_id
            next_id += 1


def build_all() -> dict[str, model.Dashboard]:
    """File name -> dashboard."""
    dashboards = {
        "queue-overview.json": overview().build(),
        "queue-detail.json": queue_detail().build(),
        "queue-workers.json": workers().build(),
        "queue-failures.json": failures().build(),
    }
    for dashboard in dashboards.values():
        number_panels(dashboard)
    return dashboards


def render(dashboard: model.Dashboard) -> str:
    return json.dumps(dashboard, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(dashboard) for name, dashboard in build_all().items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON files are stale")
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR, help="output directory")
    args = parser.parse_args(argv)
    files = rendered()
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (args.out / name).is_file() or (args.out / name).read_text() != text
        ]
        extra = sorted({p.name for p in args.out.glob("*.json")} - files.keys())
        for name in stale:
            print(f"stale: {args.out / name}", file=sys.stderr)
        for name in extra:
            print(f"not generated by this script: {args.out / name}", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
