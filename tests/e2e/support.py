"""Helpers of the end-to-end tests: subprocesses with their output in files, polling with
deadlines, and the environment the instrumented processes run with."""

from __future__ import annotations

import os
import socket

from tests.processes import ROOT, Process
from tests.waiting import wait_until

__all__ = ["ROOT", "Process", "clean_env", "port_open", "wait_until"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any OpenTelemetry or queue_core settings a
    developer may have exported, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "QUEUE_CORE_")) and key != "REDIS_URL"
    }
    env.update(PYTHONUNBUFFERED="1", QUEUE_CORE_LOG_FORMAT="json")
    env.update(extra)
    return env


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0
