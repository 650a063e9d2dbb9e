"""Readers for the bundled stack's files: compose.yaml, the component configs, the conventions doc.

The tests compare these files with each other and with docs/observability-stack.md, so that
a port, a path or a service name that drifts in one place shows up as a failing test.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
COLLECTOR_CONFIG = REPO / "collector" / "config.yaml"
PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
TEMPO_CONFIG = REPO / "tempo" / "tempo.yaml"
LOKI_CONFIG = REPO / "loki" / "loki.yaml"
DATASOURCES_DIR = REPO / "grafana" / "provisioning" / "datasources"
CONVENTIONS = REPO / "docs" / "observability-stack.md"

# Addresses a process binds to (its own listening sockets), as opposed to a peer's address.
LISTEN_HOSTS = frozenset({"0.0.0.0", "::", "[::]", "", "localhost", "127.0.0.1"})

# Defaults of the servers when their config says nothing (each from the project's docs).
REDIS_DEFAULT_PORT = 6379
PROMETHEUS_DEFAULT_LISTEN = 9090
GRAFANA_DEFAULT_HTTP_PORT = 3000


class DuplicateKeyError(yaml.YAMLError):
    """A mapping repeats a key: YAML loaders keep the last one silently."""


class _StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor`: keys written next to it override the merged ones
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise DuplicateKeyError(f"duplicate key {key!r} at {key_node.start_mark}")
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path) -> Any:
    """Parse `path` like yaml.safe_load, but refuse duplicate keys."""
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


@cache
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


@cache
def collector() -> dict[str, Any]:
    data = load_yaml(COLLECTOR_CONFIG)
    assert isinstance(data, dict)
    return data


def command_args(service: dict[str, Any]) -> list[str]:
    """The service's command as a list of arguments (compose accepts a string or a list)."""
    command = service.get("command", [])
    if isinstance(command, str):
        return shlex.split(command)
    return [str(arg) for arg in command]


def flag_value(args: list[str], *names: str) -> str | None:
    """The value of `--name=value`, `-name=value` or `--name value` in an argument list."""
    for i, arg in enumerate(args):
        for name in names:
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
            if arg == name and i + 1 < len(args):
                return args[i + 1]
    return None


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as a mapping (compose accepts a mapping or KEY=VALUE list)."""
    env = service.get("environment", {})
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {kv[0]: (kv[1] if len(kv) > 1 else "") for kv in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


@dataclass(frozen=True)
class Mount:
    service: str
    source: str  # as written in compose.yaml
    target: str
    bind: bool

    @property
    def host_path(self) -> Path:
        return (REPO / self.source).resolve()


def mounts() -> Iterator[Mount]:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str):
                parts = volume.split(":")
                source, target = parts[0], parts[1]
                bind = source.startswith((".", "/", "~"))
            else:
                source, target = str(volume.get("source", "")), str(volume["target"])
                bind = volume.get("type") == "bind"
            yield Mount(name, source, target, bind)


def container_ports(entries: list[Any]) -> set[int]:
    """Container-side ports of `expose` or `ports` entries (short or long syntax)."""
    found: set[int] = set()
    for entry in entries:
        if isinstance(entry, dict):
            found.add(int(entry["target"]))
            continue
        spec = str(entry).split("/")[0]  # drop /tcp
        found.add(int(spec.rsplit(":", 1)[-1]))
    return found


_ADDRESS = re.compile(
    r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?"
    r"(?P<host>\[[^\]]*\]|[A-Za-z0-9_.-]*)"
    r":(?P<port>\d{1,5})(?P<path>/\S*)?$"
)


@dataclass(frozen=True)
class Address:
    text: str
    host: str
    port: int

    @property
    def is_listen(self) -> bool:
        return self.host in LISTEN_HOSTS


def parse_address(text: str) -> Address | None:
    """`host:port` or `scheme://host:port/path`, else None."""
    match = _ADDRESS.match(text.strip())
    if match is None:
        return None
    return Address(text, match["host"], int(match["port"]))


def addresses_in(value: Any) -> Iterator[Address]:
    """Every host:port or URL among the strings of a nested YAML structure."""
    if isinstance(value, dict):
        for item in value.values():
            yield from addresses_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from addresses_in(item)
    elif isinstance(value, str):
        address = parse_address(value)
        if address is not None:
            yield address


def _conventions_table(heading: str) -> list[list[str]]:
    """The rows (cells without the markdown pipes) of the first table under `heading`."""
    lines = CONVENTIONS.read_text(encoding="utf-8").splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows[1:]  # without the header row


def _backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@dataclass(frozen=True)
class DocService:
    name: str
    image: str  # as the doc writes it: "redis 7 (...)", "prom/prometheus 3.x", "built from ..."
    ports: frozenset[int]


@cache
def doc_services() -> dict[str, DocService]:
    """docs/observability-stack.md, "Compose services and ports"."""
    found: dict[str, DocService] = {}
    for name_cell, image_cell, ports_cell in _conventions_table("## Compose services and ports"):
        name = _backticked(name_cell)[0]
        ports = frozenset(int(p) for p in re.findall(r"(?<![\w/])(\d{2,5})(?![\w])", ports_cell))
        found[name] = DocService(name, image_cell, ports)
    return found


@dataclass(frozen=True)
class DocFile:
    path: str
    mounted_at: str | None
    not_mounted: bool  # the doc says so explicitly (promtool's rule tests)


@cache
def doc_files() -> list[DocFile]:
    """docs/observability-stack.md, "Files": repository paths and where they are mounted."""
    found: list[DocFile] = []
    for path_cell, _what, mounted_cell in _conventions_table("## Files"):
        targets = [t for t in _backticked(mounted_cell) if t.startswith("/")]
        not_mounted = mounted_cell.strip().lower() == "not mounted"
        for path in _backticked(path_cell):
            found.append(DocFile(path, targets[0] if targets else None, not_mounted))
    return found


def _port_of(endpoint: str) -> int:
    address = parse_address(endpoint)
    assert address is not None, f"not a host:port: {endpoint!r}"
    return address.port


def listening_ports() -> dict[str, set[int]]:
    """The ports each compose service listens on, read from its command, environment and config.

    Internal-only listeners (Tempo's and Loki's gRPC ports for their own rings) are left
    out: nothing outside the process is meant to connect to them.
    """
    svc = services()
    ports: dict[str, set[int]] = {}

    redis_port = flag_value(command_args(svc["redis"]), "--port")
    ports["redis"] = {int(redis_port) if redis_port else REDIS_DEFAULT_PORT}

    col = collector()
    ports["otel-collector"] = {
        address.port
        for section in ("receivers", "extensions")
        for address in addresses_in(col.get(section, {}))
        if address.is_listen
    }

    listen = flag_value(command_args(svc["prometheus"]), "--web.listen-address")
    ports["prometheus"] = {_port_of(listen) if listen else PROMETHEUS_DEFAULT_LISTEN}

    tempo = load_yaml(TEMPO_CONFIG)
    ports["tempo"] = {int(tempo["server"]["http_listen_port"])} | {
        a.port for a in addresses_in(tempo["distributor"]["receivers"]) if a.is_listen
    }

    loki = load_yaml(LOKI_CONFIG)
    ports["loki"] = {int(loki["server"]["http_listen_port"])}

    grafana_port = environment(svc["grafana"]).get("GF_SERVER_HTTP_PORT")
    ports["grafana"] = {int(grafana_port) if grafana_port else GRAFANA_DEFAULT_HTTP_PORT}

    for app in ("api", "worker", "ui"):
        env = environment(svc[app])
        found = {int(env["METRICS_PORT"])} if "METRICS_PORT" in env else set()
        for flag in ("--port", "--health-port"):  # uvicorn's; queue-core worker's probe
            port = flag_value(command_args(svc[app]), flag)
            if port:
                found.add(int(port))
        ports[app] = found
    return ports


def datasource_files() -> list[Path]:
    return sorted([*DATASOURCES_DIR.glob("*.yaml"), *DATASOURCES_DIR.glob("*.yml")])


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def go_duration_seconds(text: str) -> float:
    """Seconds in a Go duration string such as 250ms, 2.5s or 1h30m."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Go duration: {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
