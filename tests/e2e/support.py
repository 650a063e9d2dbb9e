"""Helpers of the end-to-end tests: subprocesses with their output in files, polling with
deadlines, and the environment the instrumented processes run with."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


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


class Process:
    """A subprocess started from the repository root, its output in files."""

    def __init__(
        self, command: Sequence[str], env: Mapping[str, str], workdir: Path, tag: str
    ) -> None:
        self.tag = tag
        self.command = list(command)
        self.stdout_path = workdir / f"{tag}.out"
        self.stderr_path = workdir / f"{tag}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=dict(env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (
            f"{self.tag} (pid {self.popen.pid}, exit code {self.popen.poll()})\n"
            f"--- stdout ---\n{self.stdout()[-3000:]}\n--- stderr ---\n{self.stderr()[-6000:]}"
        )

    def check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(f"{self.tag} exited unexpectedly\n{self.describe()}")

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        def seen() -> bool:
            self.check_alive()
            return text in self.stderr() or text in self.stdout()

        wait_until(seen, timeout=timeout, what=f"{text!r} from {self.tag}")

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.tag} did not exit within {timeout}s\n{self.describe()}"
            ) from None

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit (a graceful shutdown flushes telemetry)."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=10)
