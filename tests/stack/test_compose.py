"""compose.yaml: valid Compose, and consistent with the configs and docs/observability-stack.md.

No container runs here (the build machines reach no image registry): these are static
checks. Each one ties a name, port or path in compose.yaml to the place that defines it,
so that a rename in one file fails here instead of at `docker compose up`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from examples.app import worker as app_worker
from tests.stack.stackfiles import (
    COMPOSE,
    PROMETHEUS_CONFIG,
    REPO,
    TEMPO_CONFIG,
    Address,
    addresses_in,
    collector,
    command_args,
    compose,
    container_ports,
    datasource_files,
    doc_files,
    doc_services,
    environment,
    flag_value,
    go_duration_seconds,
    listening_ports,
    load_yaml,
    mounts,
    parse_address,
    services,
)

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    # The schema ships inside check-jsonschema (vendor.compose-spec): no network needed.
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_uses_the_specification_format_without_a_version_key() -> None:
    assert "version" not in compose()


def test_the_services_are_the_ones_the_conventions_name() -> None:
    # loadgen is optional and lives under a profile; every other service is in the doc.
    optional = {name for name, service in services().items() if service.get("profiles")}
    assert set(services()) - optional == set(doc_services())
    assert optional <= {"loadgen"}


# --- images -------------------------------------------------------------------------------


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference; a registry port is not a tag."""
    name, _, digest = reference.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


@pytest.mark.parametrize("name", sorted(services()))
def test_every_image_is_pinned(name: str) -> None:
    service = services()[name]
    assert "image" in service, f"{name}: no image (a built service still gets a pinned tag)"
    _repo, tag, digest = split_image(service["image"])
    assert digest or (tag and tag != "latest"), f"{name}: {service['image']!r} is not pinned"
    if tag is not None:
        assert "$" not in tag, f"{name}: the tag comes from the environment"


def test_images_are_the_ones_the_conventions_name() -> None:
    for name, doc in doc_services().items():
        service = services()[name]
        if doc.image.startswith("built from"):
            assert service["build"]["dockerfile"] == "Dockerfile"
            continue
        repo, tag, _ = split_image(service["image"])
        assert doc.image.split()[0] == repo, name
        # "redis 7", "prom/prometheus 3.x": the major version the conventions ask for.
        major = re.match(r"\S+ (\d+)(?:\.x)?\b", doc.image)
        if major:
            assert tag is not None, name
            assert tag.lstrip("v").split(".")[0] == major[1], f"{name}: {tag}"


def test_built_services_share_one_image_from_the_repository_dockerfile() -> None:
    built = {name: s for name, s in services().items() if "build" in s}
    assert {"api", "worker"} <= set(built)
    assert len({s["image"] for s in built.values()}) == 1
    for service in built.values():
        assert service["build"]["context"] == "."


def test_the_dockerfile_the_app_is_built_from_exists() -> None:
    # Written alongside the compose file; until it lands, `docker compose build` cannot work.
    for name, service in services().items():
        if "build" in service:
            dockerfile = REPO / service["build"]["context"] / service["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile.relative_to(REPO)} is missing"


# --- mounts -------------------------------------------------------------------------------


def bind_mounts() -> list[Any]:
    return [m for m in mounts() if m.bind]


@pytest.mark.parametrize("mount", bind_mounts(), ids=lambda m: f"{m.service}:{m.source}")
def test_every_bind_mounted_path_exists_in_the_repository(mount: Any) -> None:
    assert mount.source.startswith("./"), f"{mount.source}: bind mounts come from the repository"
    assert mount.host_path.is_relative_to(REPO)
    assert mount.host_path.exists(), f"{mount.source} (mounted by {mount.service}) is missing"


def test_every_named_volume_is_declared() -> None:
    declared = set(compose().get("volumes") or {})
    used = {m.source for m in mounts() if not m.bind}
    assert used == declared


@pytest.mark.parametrize("doc_file", [f for f in doc_files() if f.mounted_at], ids=lambda f: f.path)
def test_files_are_mounted_where_the_conventions_say(doc_file: Any) -> None:
    wanted = PurePosixPath(doc_file.mounted_at)
    file = PurePosixPath(doc_file.path)
    places = []
    for mount in bind_mounts():
        source = PurePosixPath(mount.source.removeprefix("./"))
        target = PurePosixPath(mount.target)
        if source == file:
            places.append(target)
        elif source in file.parents:
            places.append(target / file.relative_to(source))
    # A target written with a trailing slash is a directory that holds the file.
    if doc_file.mounted_at.endswith("/"):
        assert any(place.parent == wanted for place in places), (doc_file, places)
    else:
        assert wanted in places, (doc_file, places)


@pytest.mark.parametrize(
    "doc_file", [f for f in doc_files() if f.not_mounted], ids=lambda f: f.path
)
def test_files_the_conventions_keep_out_of_the_containers_are_not_mounted(doc_file: Any) -> None:
    file = PurePosixPath(doc_file.path)
    for mount in bind_mounts():
        source = PurePosixPath(mount.source.removeprefix("./"))
        assert source != file, f"{mount.service} mounts {doc_file.path}"
        assert source not in file.parents, f"{mount.service} mounts {source}/, with {file.name}"


def config_flags(name: str) -> list[str]:
    args = command_args(services()[name])
    flags = ("--config", "--config.file", "-config.file")
    return [value for value in (flag_value(args, flag) for flag in flags) if value]


@pytest.mark.parametrize("name", ["otel-collector", "prometheus", "tempo", "loki"])
def test_each_component_reads_the_config_file_that_is_mounted(name: str) -> None:
    targets = {m.target for m in bind_mounts() if m.service == name}
    configs = config_flags(name)
    assert configs, f"{name}: no config flag in its command"
    for config in configs:
        assert config in targets, f"{name} reads {config}, which nothing mounts"


def test_prometheus_rule_files_point_into_a_mounted_directory() -> None:
    # The mounted file or directory is where the rule_files pattern looks (which files it
    # matches is checked in test_prometheus_config.py).
    targets = {PurePosixPath(m.target) for m in bind_mounts() if m.service == "prometheus"}
    for pattern in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
        directory = PurePosixPath(pattern).parent
        assert any(directory in (t, t.parent) for t in targets), pattern


# --- dependencies and health --------------------------------------------------------------


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


@pytest.mark.parametrize("name", sorted(services()))
def test_depends_on_names_services_and_waits_only_on_real_healthchecks(name: str) -> None:
    for dependency, condition in depends_on(services()[name]).items():
        assert dependency in services(), f"{name} depends on unknown {dependency!r}"
        assert dependency != name
        assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
        if condition == "service_healthy":
            assert "healthcheck" in services()[dependency], (
                f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
            )


def test_long_running_services_have_a_healthcheck_or_a_stated_reason() -> None:
    # The collector's image is FROM scratch: nothing in it can probe 13133 (see compose.yaml).
    without = {name for name, s in services().items() if "healthcheck" not in s}
    assert without <= {"otel-collector", "loadgen"}
    for name in ("redis", "prometheus", "tempo", "loki", "grafana", "api", "worker", "ui"):
        test = services()[name]["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"}, name


def test_every_service_has_a_restart_policy() -> None:
    for name, service in services().items():
        assert service.get("restart") in {"unless-stopped", "always", "on-failure", "no"}, name


def test_no_dependency_cycle() -> None:
    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join((*path, name))
        for dependency in depends_on(services()[name]):
            visit(dependency, (*path, name))

    for name in services():
        visit(name, ())


# --- ports and addresses ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(doc_services()))
def test_ports_read_from_the_configs_match_the_conventions(name: str) -> None:
    # listening_ports() reads each component's own config (collector receivers, tempo.yaml,
    # loki.yaml, command flags, METRICS_PORT ...), so a port changed there but not in the
    # doc, or the other way round, fails here.
    assert listening_ports()[name] == set(doc_services()[name].ports)


@pytest.mark.parametrize("name", sorted(doc_services()))
def test_exposed_and_published_ports_are_ports_the_service_listens_on(name: str) -> None:
    service = services()[name]
    assert container_ports(service.get("expose", [])) == set(doc_services()[name].ports)
    assert container_ports(service.get("ports", [])) <= set(doc_services()[name].ports)
    for entry in service.get("ports", []):
        assert str(entry).startswith("127.0.0.1:"), f"{name}: {entry} is published beyond localhost"


def assert_names_a_listener(address: Address, where: str) -> None:
    ports = listening_ports()
    assert address.host in ports, f"{where}: {address.text} names no compose service"
    assert address.port in ports[address.host], (
        f"{where}: {address.text}, but {address.host} listens on {sorted(ports[address.host])}"
    )


def test_collector_exporters_point_at_compose_services_and_their_ports() -> None:
    found = list(addresses_in(collector()["exporters"]))
    assert {a.host for a in found} == {"tempo", "prometheus", "loki"}
    for address in found:
        assert_names_a_listener(address, "collector/config.yaml exporters")


def test_collector_listens_only_on_its_documented_ports() -> None:
    for section in ("receivers", "extensions"):
        for address in addresses_in(collector()[section]):
            assert address.is_listen, f"{address.text}: a listener binds, it does not dial"
            assert address.host == "0.0.0.0", f"{address.text}: unreachable from other containers"
            assert address.port in doc_services()["otel-collector"].ports


def test_every_address_in_the_collector_config_is_accounted_for() -> None:
    for address in addresses_in(collector()):
        if address.is_listen:
            assert address.port in doc_services()["otel-collector"].ports, address.text
        else:
            assert_names_a_listener(address, "collector/config.yaml")


def test_grafana_datasources_point_at_compose_services_and_their_ports() -> None:
    files = datasource_files()
    if not files:
        pytest.skip("grafana/provisioning/datasources/ is not written yet")
    uids: set[str] = set()
    for file in files:
        for source in load_yaml(file).get("datasources", []):
            uids.add(source.get("uid", ""))
            where = f"{file.name}: {source.get('name')}"
            address = parse_address(source.get("url", ""))
            assert address is not None, f"{where}: url {source.get('url')!r}"
            assert_names_a_listener(address, where)
            for nested in addresses_in(source.get("jsonData", {})):
                assert_names_a_listener(nested, f"{where} jsonData")
    assert {"prometheus", "tempo", "loki"} <= uids


def test_tempo_remote_writes_to_prometheus() -> None:
    for target in load_yaml(TEMPO_CONFIG)["metrics_generator"]["storage"]["remote_write"]:
        address = parse_address(target["url"])
        assert address is not None
        assert_names_a_listener(address, "tempo/tempo.yaml remote_write")
        assert target["url"].endswith("/api/v1/write")
    assert "--web.enable-remote-write-receiver" in command_args(services()["prometheus"])


def test_prometheus_scrape_targets_are_compose_services_or_itself() -> None:
    for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                address = parse_address(target)
                assert address is not None, target
                if address.is_listen:
                    assert address.port in listening_ports()["prometheus"], target
                else:
                    assert_names_a_listener(address, f"prometheus.yml job {job['job_name']}")
                    # The app's /metrics duplicates what arrives over OTLP: never scraped here.
                    assert address.host not in {"api", "worker"}, target


@pytest.mark.parametrize("name", sorted(services()))
def test_addresses_in_the_environment_point_at_compose_services(name: str) -> None:
    for key, value in environment(services()[name]).items():
        address = parse_address(value)
        if address is not None:
            assert_names_a_listener(address, f"{name}: {key}")


# --- the example app ----------------------------------------------------------------------


def test_api_and_worker_run_the_example_app_against_the_stack() -> None:
    api, worker = services()["api"], services()["worker"]
    assert command_args(api) == [
        "uvicorn", "examples.app.api:app", "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    assert command_args(worker) == [
        "queue-core", "worker", "examples.app.worker:workers", "--health-port", "8081",
    ]  # fmt: skip
    assert environment(worker)["WORKER_QUEUES"] == "emails,images,reports,webhooks,reminders"
    assert worker["deploy"]["replicas"] == 2
    assert "container_name" not in worker, "a fixed name forbids more than one replica"
    assert not worker.get("ports"), "published ports would clash between replicas"
    for service in (api, worker):
        env = environment(service)
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert env["METRICS_PORT"] == "9464"
        assert env["OTEL_SERVICE_NAME"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    # The probe that fails when the event loop is stuck, on the port the command serves.
    assert ":8081/livez" in " ".join(worker["healthcheck"]["test"])
    # The worker drains running jobs on SIGTERM for WORKER_SHUTDOWN_TIMEOUT_S (30); Docker
    # must wait longer.
    shutdown_timeout = float(environment(worker)["WORKER_SHUTDOWN_TIMEOUT_S"])
    assert go_duration_seconds(worker["stop_grace_period"]) > shutdown_timeout >= 30


def test_the_worker_command_names_a_factory_of_the_app_and_known_queues() -> None:
    """What `queue-core worker` will import and read in the container, checked here."""
    worker = services()["worker"]
    script, command, target = command_args(worker)[:3]
    assert (command, target) == ("worker", app_worker.TARGET)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert script in scripts, "the console script that `pip install .` puts in the image"
    assert callable(app_worker.workers)
    process = app_worker.ProcessSettings.from_env(environment(worker))
    assert set(process.queues) == set(app_worker.QUEUE_PLANS)


def test_the_dockerfile_base_image_is_pinned_to_a_patch_release() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert bases, "no FROM line"
    for base in bases:
        _repo, tag, digest = split_image(base)
        assert digest or (tag and re.match(r"\d+\.\d+\.\d+-", tag)), base


def test_the_dockerfile_installs_extras_the_project_declares() -> None:
    # The app exports over OTLP, log lines included: extras renamed in pyproject.toml but
    # not here would build an image that fails at its first import.
    installed = re.findall(r'pip install "\.\[([^\]]+)\]"', (REPO / "Dockerfile").read_text())
    assert installed, "the Dockerfile installs the project with its extras"
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = set(declared["optional-dependencies"])
    for names in installed:
        assert set(names.split(",")) <= extras, (names, sorted(extras))


def test_the_job_browser_needs_its_token_is_traced_and_links_to_grafana() -> None:
    """`queue-core ui` on every address of its container: it refuses to start without
    authentication there, so its token is required from the environment, as Grafana's
    password is. Its trace and log links (queue_ui's defaults) open the Grafana this file
    publishes, on the datasource uids the provisioning fixes."""
    ui = services()["ui"]
    args = command_args(ui)
    assert args == [
        "opentelemetry-instrument", "queue-core", "ui", "--host", "0.0.0.0", "--port", "8080",
    ]  # fmt: skip
    assert "--token" not in args, "a token on the command line shows in `ps` and in logs"
    env = environment(ui)
    assert re.fullmatch(r"\$\{QUEUE_CORE_UI_TOKEN:\?[^}]+\}", env["QUEUE_CORE_UI_TOKEN"])
    assert env["REDIS_URL"] == environment(services()["api"])["REDIS_URL"]
    assert env["OTEL_SERVICE_NAME"] == "ui"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert ui["ports"] == ["127.0.0.1:8080:8080"]
    assert ":8080/login" in " ".join(ui["healthcheck"]["test"])
    # opentelemetry-instrument needs the distro (the SDK's configurator) and, for the
    # HTTP spans, the Starlette instrumentation; `queue-core ui` needs the ui extra.
    dockerfile = (REPO / "Dockerfile").read_text()
    (extras,) = re.findall(r'pip install "\.\[([^\]]+)\]"', dockerfile)
    assert "ui" in extras.split(",")
    assert '"opentelemetry-distro>=' in dockerfile
    assert '"opentelemetry-instrumentation-starlette>=' in dockerfile

    from queue_core.ui.links import DEFAULT_LOGS_URL, DEFAULT_TRACE_URL  # noqa: PLC0415

    grafana = next(
        str(p).split(":")[1] for p in services()["grafana"]["ports"] if str(p).endswith(":3000")
    )
    uids = {
        source["type"]: source["uid"]
        for file in datasource_files()
        for source in load_yaml(file)["datasources"]
    }
    for template, kind in ((DEFAULT_TRACE_URL, "tempo"), (DEFAULT_LOGS_URL, "loki")):
        assert template.startswith(f"http://localhost:{grafana}/explore?"), template
        panes = json.loads(parse_qs(urlsplit(template).query)["panes"][0])
        (pane,) = panes.values()
        assert pane["datasource"] == uids[kind], pane
        assert "{trace_id}" in json.dumps(pane["queries"])


def test_loadgen_is_optional() -> None:
    loadgen = services().get("loadgen")
    if loadgen is None:
        pytest.skip("no loadgen service")
    assert loadgen["profiles"], "without a profile it would run on every `up`"
    assert command_args(loadgen) == ["python", "-m", "examples.app.loadgen"]


# --- security and durability --------------------------------------------------------------


def test_grafana_has_no_anonymous_access_and_takes_its_password_from_the_environment() -> None:
    env = environment(services()["grafana"])
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "false"
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer") != "Admin"
    assert env.get("GF_AUTH_DISABLE_LOGIN_FORM", "false").lower() == "false"
    assert env.get("GF_USERS_ALLOW_SIGN_UP", "false").lower() == "false"
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    # ${VAR:?message} (or ${VAR?message}): compose refuses to start when VAR is unset, so
    # there is no default password to forget about.
    assert re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*:?\?[^}]+\}", password), password


def test_redis_never_evicts_and_keeps_an_append_only_file() -> None:
    redis = services()["redis"]
    args = command_args(redis)
    assert args[0] == "redis-server"
    assert flag_value(args, "--maxmemory-policy") == "noeviction"
    assert flag_value(args, "--appendonly") == "yes"
    assert any(m.target == "/data" for m in mounts() if m.service == "redis"), "AOF needs a volume"
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])


def test_prometheus_receives_otlp_and_stores_exemplars() -> None:
    args = command_args(services()["prometheus"])
    assert "--web.enable-otlp-receiver" in args
    assert "--enable-feature=exemplar-storage" in args
    assert "wget" in services()["prometheus"]["healthcheck"]["test"]
    assert "/-/ready" in " ".join(services()["prometheus"]["healthcheck"]["test"])
