"""A private ``prometheus`` process for tests: a free port, a generated config and its own
TSDB in a temporary directory, exemplar storage on, and a short scrape interval.

    server = PrometheusServer(targets=["127.0.0.1:9464"]).start()
    server.query('up{job="worker"}')   # the PromQL result vector
    server.cleanup()

Everything is polled with deadlines: ``start()`` waits for ``/-/ready``.
"""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.redis_server import free_port

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
JOB = "queue_worker"

T = TypeVar("T")


class PrometheusError(RuntimeError):
    """Prometheus answered a query with an error, or did not come up."""


class PrometheusServer:
    def __init__(
        self,
        targets: Sequence[str],
        *,
        scrape_interval: str = "1s",
        job: str = JOB,
    ) -> None:
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.job = job
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"qc-prometheus-{self.port}-"))
        self.config = self.dir / "prometheus.yml"
        self.log = self.dir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=5.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> None:
        targets = ", ".join(f'"{target}"' for target in self.targets)
        self.config.write_text(
            "global:\n"
            f"  scrape_interval: {self.scrape_interval}\n"
            f"  scrape_timeout: {self.scrape_interval}\n"
            f"  evaluation_interval: {self.scrape_interval}\n"
            "scrape_configs:\n"
            f"  - job_name: {self.job}\n"
            "    static_configs:\n"
            f"      - targets: [{targets}]\n"
        )
        check = subprocess.run(
            [PROMTOOL, "check", "config", str(self.config)],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.returncode != 0:
            raise PrometheusError(f"promtool rejected the config:\n{check.stdout}{check.stderr}")

    def command(self) -> list[str]:
        return [
            PROMETHEUS,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--enable-feature=exemplar-storage",
            "--log.level=warn",
        ]

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self.write_config()
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited early:\n{self.log_tail()}")
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise PrometheusError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    # ------------------------------------------------------------------------ queries

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raise on an error status."""
        response = self.http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: HTTP {response.status_code} {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query whose result is a vector: ``[{"metric": {...}, "value": [t, s]}]``."""
        data = self.api("query", query=promql)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{promql!r} gave a {data['resultType']}, not a vector")
        return list(data["result"])

    def values(self, promql: str, by: str | Sequence[str] = ()) -> dict[str, float]:
        """The query's samples as ``{label values joined by "/": value}``: ``by`` names the
        labels that tell the samples apart (``""`` is the key of a single sample)."""
        labels = [by] if isinstance(by, str) else list(by)
        result: dict[str, float] = {}
        for sample in self.query(promql):
            key = "/".join(sample["metric"].get(label, "") for label in labels)
            assert key not in result, f"{promql!r}: two samples for {labels}={key!r}: {sample}"
            result[key] = float(sample["value"][1])
        return result

    def scalar(self, promql: str) -> float:
        """The value of a query that must give exactly one sample."""
        result = self.query(promql)
        assert len(result) == 1, f"{promql!r} gave {len(result)} samples: {result}"
        return float(result[0]["value"][1])

    def exemplars(self, promql: str, since: float) -> list[dict[str, Any]]:
        return list(self.api("query_exemplars", query=promql, start=since, end=time.time() + 60))

    def targets_health(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def until(
        self,
        probe: Callable[[], T],
        done: Callable[[T], bool],
        timeout: float = 20.0,
        what: str = "condition",
    ) -> T:
        """``until`` with Prometheus's view of its targets in the failure message."""
        return until(probe, done, timeout, what, context=lambda: f"targets {self.targets_health()}")

    # --------------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def cleanup(self) -> None:
        self.stop()
        self.http.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def finite(value: float) -> bool:
    return not math.isnan(value) and not math.isinf(value)


def until(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    interval: float = 0.2,
    context: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until ``done(result)``; fail with the last result after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            extra = f"; {context()}" if context is not None else ""
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last result {result!r}{extra}"
            )
        time.sleep(interval)
