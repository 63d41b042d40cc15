"""The container deployment: docker-compose.yml, the Dockerfile and the load balancer's config.

There is no Docker engine on these machines, so the compose file is checked here: its
shape (images pinned, health checks, dependencies, volumes, networks), and, above all,
that every service's environment matches the settings the code reads. For that each
service's environment (interpolated as compose does, with an operator's ``.env``) is
loaded through the same ``services.settings`` loaders the service calls, and the
resulting settings must point at the services of the compose file.

Which loaders a service calls, whether it opens the database, and which entry points
exist are read from the code, so a new service is covered once it has its block.
"""

from __future__ import annotations

import ast
import base64
import inspect
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from sqlalchemy import make_url

from devstack import kafka_broker
from services import healthcheck, settings
from services.api import openapi
from services.contract import registry
from services.settings import ApiSettings, RunnerSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
HAPROXY = ROOT / "deploy" / "haproxy.cfg"

#: What an operator's ``.env`` holds (the variables compose requires).
DOTENV = {"POSTGRES_PASSWORD": "pw-from-dotenv"}
#: Entry points that are tools run on demand (``docker compose run``) or by another
#: process (the health check; the runner's simulator launcher and the built-in engine,
#: which the runner starts as subprocesses in its own container), not services.
TOOLS = {"services.audit", "services.healthcheck", "services.runner.launcher",
         "services.engine"}
#: Compose services whose entry point is still being written on another branch. Once it
#: lands, the check below fails until the module is taken off this list, and then the
#: service's environment is checked against the settings it really reads.
PENDING: set[str] = set()
HEALTHCHECK = ["python", "-m", "services.healthcheck"]
#: Service keys of the compose specification that a block here may use (compose rejects a
#: file with any other key, so this test does too).
SERVICE_KEYS = {
    "build", "command", "container_name", "cpus", "depends_on", "deploy", "entrypoint",
    "environment", "env_file", "expose", "extra_hosts", "healthcheck", "hostname", "image",
    "init", "labels", "logging", "mem_limit", "networks", "ports", "profiles", "pull_policy",
    "read_only", "restart", "secrets", "stop_grace_period", "stop_signal", "tmpfs", "ulimits",
    "user", "volumes", "working_dir",
}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- reading the files -----------------------------------------------------------------------


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is not set: compose refuses to start."""


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ``$$``, ``$V``, ``${V}``, ``${V:-d}``, ``${V-d}``,
    ``${V:?msg}``, ``${V?msg}`` (an unset plain variable becomes "", as compose does)."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["bare"] or match["name"]
        op, arg = match["op"], match["arg"] or ""
        present, current = name in env, env.get(name, "")
        if op == ":-":
            return current or arg
        if op == "-":
            return current if present else arg
        if op in (":?", "?") and (not current if op == ":?" else not present):
            raise MissingVariable(f"{name}: {arg}")
        return current

    return _VARIABLE.sub(substitute, value)


def resolve(node: Any, env: dict[str, str]) -> Any:
    """Interpolate every string value of a parsed compose file (keys are never interpolated)."""
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    resolved: dict[str, Any] = resolve(raw, DOTENV)
    return resolved


def services_of(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services run from the project's image (the rest are Kafka, PostgreSQL, HAProxy)."""
    return {name: s for name, s in services_of(compose).items() if "build" in s}


def module_of(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[:2] == ["python", "-m"], command
    module: str = command[2]
    return module


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping"
    return {key: str(value) for key, value in env.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def named(self) -> bool:
        return not self.source.startswith((".", "/", "~"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        found.append(Mount(source, target, "ro" in mode))
    return found


def entry_points() -> set[str]:
    """Every ``python -m services.<x>`` the code has: packages with a ``__main__`` and
    modules that run as a program (``python -m services.projector.usage``)."""
    found = {f"services.{path.parent.name}"
             for path in (ROOT / "services").glob("*/__main__.py")}
    for path in (ROOT / "services").rglob("*.py"):
        if path.name != "__main__.py" and '__name__ == "__main__"' in path.read_text():
            found.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return found


def package_sources(module: str) -> Iterator[tuple[Path, str]]:
    """The sources of an entry point: its package, or its module file alone."""
    package = ROOT / Path(*module.split("."))
    paths = sorted(package.rglob("*.py")) if package.is_dir() else [package.with_suffix(".py")]
    for path in paths:
        yield path, path.read_text()


def settings_functions() -> dict[str, Callable[[], Any]]:
    """The public functions of the settings module that read the environment unaided."""
    return {name: fn for name, fn in vars(settings).items()
            if inspect.isfunction(fn) and fn.__module__ == settings.__name__
            and not name.startswith("_")
            and all(p.default is not p.empty for p in inspect.signature(fn).parameters.values())}


def loaders_of(module: str) -> set[str]:
    """The settings functions a service calls: what its package imports from the settings
    module (every service calls ``load_settings``; the contract package reads the consumer
    validation switch for all of them)."""
    names = {"load_settings"}
    sources = [*package_sources(module), *package_sources("services.contract")]
    for _, text in sources:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module == settings.__name__:
                names |= {alias.name for alias in node.names}
    return names & set(settings_functions())


def opens_database(module: str) -> bool:
    return any("make_engine(" in text for _, text in package_sources(module))


def serves_http(module: str) -> bool:
    return "load_api_settings" in loaders_of(module)


@dataclass(frozen=True)
class Seen:
    """What a service's settings are, loaded from its compose environment."""

    settings: Settings
    api: ApiSettings | None
    runner: RunnerSettings | None


def seen_by(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Seen:
    """Load a service's settings from exactly its compose environment."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith(settings.PREFIX)]:
            patch.delenv(name)
        for name, value in environment(service).items():
            patch.setenv(name, value)
        loaders = loaders_of(module_of(service))
        return Seen(settings.load_settings(),
                    settings.load_api_settings() if "load_api_settings" in loaders else None,
                    settings.load_runner_settings() if "load_runner_settings" in loaders
                    else None)


def kafka_env_name(prop: str) -> str:
    """The apache/kafka image's variable for a broker property (``a.b_c`` -> ``KAFKA_A_B__C``)."""
    return "KAFKA_" + prop.replace("_", "__").replace("-", "___").replace(".", "_").upper()


def haproxy_sections() -> dict[str, list[list[str]]]:
    """``{"frontend api": [[tokens], ...], ...}`` (comments and blank lines dropped)."""
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] = []
    for line in HAPROXY.read_text().splitlines():
        tokens = shlex.split(line.split("#", 1)[0])
        if not tokens:
            continue
        if not line[0].isspace():
            current = sections.setdefault(" ".join(tokens), [])
        else:
            current.append(tokens)
    return sections


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


# --- the file's shape --------------------------------------------------------------------------


def test_interpolation_follows_compose() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("$$SET ${SET} $SET ${UNSET}", env) == "$SET v v "
    assert interpolate("${EMPTY:-d} ${EMPTY-d} ${UNSET-d}", env) == "d  d"
    assert interpolate("${SET:?m}", env) == "v"
    with pytest.raises(MissingVariable, match="EMPTY: why"):
        interpolate("${EMPTY:?why}", env)


def test_compose_needs_the_database_password_and_nothing_else(raw: dict[str, Any]) -> None:
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        resolve(raw, {})
    assert resolve(raw, DOTENV)  # everything else has a default


def test_the_stack_has_every_part(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    assert "version" not in compose  # obsolete in the compose specification
    assert {"kafka", "postgres", "projector", "api", "api-lb", "runner",
            "slurm-bridge"} <= set(services)
    kafka = environment(services["kafka"])
    assert services["kafka"]["image"].startswith("apache/kafka:4.1.")
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert not [name for name in kafka if "ZOOKEEPER" in name]
    cluster_id = kafka["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 and len(cluster_id) == 22
    assert services["postgres"]["image"].startswith("postgres:")


def test_kafka_image_runs_the_kafka_the_tests_run(compose: dict[str, Any]) -> None:
    pom = (ROOT / "devstack" / "kafka" / "pom.xml").read_text()
    version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert version is not None
    assert services_of(compose)["kafka"]["image"] == f"apache/kafka:{version.group(1)}"


def test_every_image_is_pinned_and_ours_is_one_image(compose: dict[str, Any]) -> None:
    for name, service in services_of(compose).items():
        image = service.get("image", "")
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", (name, image)
        assert re.match(r"\d+(\.\d+)+", tag), f"{name}: {image} is not a version"
    built = ours(compose)
    assert {s["build"] for s in built.values()} == {"."}
    assert {s["image"] for s in built.values()} == {f"simjobs:{PYPROJECT['project']['version']}"}


def test_every_service_has_a_command_a_health_check_and_a_restart_policy(
        compose: dict[str, Any]) -> None:
    for name, service in services_of(compose).items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown keys {set(service) - SERVICE_KEYS}"
        assert "image" in service or "build" in service, name
        assert service.get("restart") == "unless-stopped", name
        check = service.get("healthcheck")
        assert isinstance(check, dict), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        for key in ("interval", "timeout", "retries", "start_period"):
            assert key in check, (name, key)
        if name in ours(compose):
            assert isinstance(service.get("command"), list), f"{name}: command as a list"
            assert service.get("init") is True, f"{name}: an init reaps orphaned children"


def test_dependencies_wait_for_healthy_services_in_an_order(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on with conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on undefined {target}"
            assert spec == {"condition": "service_healthy"}, (name, target)
            assert "healthcheck" in services[target]
            assert not services[target].get("profiles") or service.get("profiles"), \
                f"{name} (always started) depends on {target}, which is in a profile"
    done: set[str] = set()
    while len(done) < len(services):  # a cycle would stop this from making progress
        ready = {n for n, s in services.items() if n not in done
                 and set(s.get("depends_on", {})) <= done}
        assert ready, f"dependency cycle among {set(services) - done}"
        done |= ready
    for name in ours(compose):
        assert "kafka" in services[name].get("depends_on", {}), name
    assert "projector" in services["api"]["depends_on"]  # it creates the read model first


def test_volumes_and_networks_are_declared_and_used(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    declared_volumes = set(compose["volumes"])
    used = {m.source for s in services.values() for m in mounts(s) if m.named}
    assert used == declared_volumes
    for name, service in services.items():
        for mount in mounts(service):
            assert mount.named or mount.read_only, f"{name}: bind mount {mount} must be :ro"
            assert PurePosixPath(mount.target).is_absolute(), (name, mount)
    assert (ROOT / "deploy" / "haproxy.cfg").is_file()
    networks = compose["networks"]
    assert networks["backend"] == {"internal": True}
    for name, service in services.items():
        assert set(service["networks"]) <= set(networks), name
        assert "backend" in service["networks"], name
    for infra in ("kafka", "postgres"):
        assert services[infra]["networks"] == ["backend"]  # not reachable from outside
        assert "ports" not in services[infra]
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"api-lb"}


def test_scalable_services_can_be_scaled(compose: dict[str, Any]) -> None:
    services = services_of(compose)
    for name in ("api", "runner"):
        service = services[name]
        assert service["deploy"]["replicas"] >= 1, name
        assert "container_name" not in service and "ports" not in service, name
    assert services["api"]["deploy"]["replicas"] == 2
    partitions = int(environment(services["runner"])["SIMJOBS_TASKS_PARTITIONS"])
    assert services["runner"]["deploy"]["replicas"] <= partitions
    assert services["projector"].get("deploy", {}).get("replicas", 1) == 1  # one folder


# --- entry points, environment and settings -----------------------------------------------


def test_every_entry_point_has_a_service_and_every_service_an_entry_point(
        compose: dict[str, Any]) -> None:
    commanded = {module_of(s) for s in ours(compose).values()}
    assert entry_points() - TOOLS == commanded - PENDING
    for module in PENDING:
        assert module in commanded
        assert module not in entry_points(), (
            f"{module} has landed: take it off PENDING so its environment is checked")


def test_every_simjobs_variable_in_compose_is_one_the_code_reads(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith(settings.PREFIX)]:
        monkeypatch.delenv(name)
    for function in settings_functions().values():  # ENV_VARS fills as loaders run
        function()
    known = set(settings.ENV_VARS)
    assert {"SIMJOBS_KAFKA_BOOTSTRAP", "SIMJOBS_API_PORT", "SIMJOBS_RUNNER_NAME"} <= known
    for name, service in ours(compose).items():
        env = environment(service)
        assert all(key.startswith(settings.PREFIX) for key in env), (name, sorted(env))
        unknown = set(env) - known
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"


def test_each_service_reads_settings_that_point_at_the_stack(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = services_of(compose)
    kafka_env = environment(services["kafka"])
    advertised = {url.split("://", 1)[1] for url in
                  kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    pg = environment(services["postgres"])
    made = dockerfile_made_dirs()
    kafka_seen = {}
    for name, service in ours(compose).items():
        module = module_of(service)
        seen = seen_by(service, monkeypatch)
        kafka_seen[name] = seen.settings.kafka
        for server in seen.settings.kafka.bootstrap_servers.split(","):
            assert server in advertised, f"{name}: bootstrap {server} is not the broker's"
            assert server.split(":")[0] in services
        volumes = {m.target: m for m in mounts(service)}
        artifacts = volumes.get(str(seen.settings.artifacts.root))
        assert artifacts is not None and artifacts.source == "artifacts", \
            f"{name}: the artifact store is not the shared volume"
        state = seen.settings.state_dir
        assert str(state) in volumes or any(state.is_relative_to(d) for d in made), \
            f"{name}: state dir {state} is neither a volume nor made by the Dockerfile"
        if seen.runner is not None:
            work = seen.runner.workdir_root
            assert any(work.is_relative_to(d) for d in made), (name, work)
        if opens_database(module):
            url = make_url(seen.settings.database.url)
            assert url.drivername == "postgresql+asyncpg", (name, url)
            assert (url.host, url.port) == ("postgres", 5432), (name, url)
            assert (url.username, url.password, url.database) == (
                pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]), name
            assert pg["POSTGRES_PASSWORD"] == DOTENV["POSTGRES_PASSWORD"]
        else:
            assert "SIMJOBS_DATABASE_URL" not in environment(service), \
                f"{name} never opens the database: it needs no password"
        if seen.api is not None:
            assert seen.api.host == "0.0.0.0", f"{name} must listen beyond loopback"
            secrets = (seen.api.access_secret, seen.api.refresh_secret, seen.api.update_secret)
            shared = volumes.get(str(state))
            assert all(secrets) or (shared is not None and shared.named), \
                f"{name}: replicas must share the signing secrets (a state volume)"
    assert len(set(kafka_seen.values())) == 1, f"services disagree on Kafka: {kafka_seen}"


def test_health_checks_probe_each_service_through_its_own_settings(
        compose: dict[str, Any]) -> None:
    services = services_of(compose)
    for name, service in ours(compose).items():
        module = module_of(service)
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1:4] == HEALTHCHECK, (name, test)
        probes = healthcheck.parser().parse_args(test[4:]).probes
        assert all(p in healthcheck.PROBES for p in probes), (name, probes)
        if serves_http(module):
            assert "api" in probes, name
        else:
            assert "kafka" in probes, f"{name}: a consumer is healthy when connected"
            assert ("database" in probes) == opens_database(module), name
    kafka = " ".join(services["kafka"]["healthcheck"]["test"][1:])
    assert "--bootstrap-server kafka:9092" in kafka
    pg = environment(services["postgres"])
    assert services["postgres"]["healthcheck"]["test"][1:] == [
        "pg_isready", "-h", "127.0.0.1", "-U", pg["POSTGRES_USER"], "-d", pg["POSTGRES_DB"]]


def test_the_load_balancer_fronts_every_api_replica(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = services_of(compose)
    sections = haproxy_sections()
    frontend = sections["frontend api"]
    (bind,) = [t for t in frontend if t[0] == "bind"]
    lb_port = int(bind[1].rsplit(":", 1)[1])
    (mapping,) = services["api-lb"]["ports"]
    assert int(mapping.rsplit(":", 1)[1]) == lb_port
    assert ["monitor-uri", "/lb-health"] in frontend
    assert services["api-lb"]["healthcheck"]["test"][-1] == \
        f"http://127.0.0.1:{lb_port}/lb-health"
    backend = sections["backend api"]
    (template,) = [t for t in backend if t[0] == "server-template"]
    host, port = template[3].rsplit(":", 1)
    assert host == "api" and int(template[2]) >= services["api"]["deploy"]["replicas"]
    api = seen_by(services["api"], monkeypatch).api
    assert api is not None and int(port) == api.port
    assert ["option", "httpchk", "GET", "/"] in backend
    (defaults,) = [t for t in backend if t[0] == "default-server"]
    assert "resolvers" in defaults and "docker" in defaults
    assert ["nameserver", "dns", "127.0.0.11:53"] in sections["resolvers docker"]


def test_the_broker_is_configured_as_the_tested_one(
        compose: dict[str, Any], tmp_path: Path) -> None:
    rendered = kafka_broker._server_properties(kafka_broker._Paths(tmp_path), 9092, 9093)
    devstack = dict(line.split("=", 1) for line in rendered.splitlines()
                    if line and not line.startswith("#"))
    kafka = environment(services_of(compose)["kafka"])
    for prop in ("message.max.bytes", "auto.create.topics.enable", "default.replication.factor",
                 "min.insync.replicas", "offsets.topic.replication.factor",
                 "transaction.state.log.replication.factor", "transaction.state.log.min.isr",
                 "share.coordinator.state.topic.replication.factor",
                 "share.coordinator.state.topic.min.isr"):
        assert kafka.get(kafka_env_name(prop)) == devstack[prop], prop
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= settings.TOPIC_MAX_MESSAGE_BYTES
    assert settings.TOPIC_MAX_MESSAGE_BYTES > settings.MAX_EVENT_BYTES
    assert kafka["KAFKA_LOG_DIRS"] in {m.target for m in mounts(services_of(compose)["kafka"])}


# --- the Dockerfile ----------------------------------------------------------------------------


def dockerfile_made_dirs() -> list[PurePosixPath]:
    """Directories the Dockerfile creates and hands to its user."""
    made = []
    for word, args in dockerfile_instructions():
        if word == "RUN" and "chown" in args:
            for match in re.finditer(r"mkdir -p ((?:/\S+\s*)+)", args):
                made += [PurePosixPath(p) for p in match.group(1).split()]
    return made


def test_dockerfile_base_image_is_pinned_to_the_projects_python() -> None:
    (base,) = [args for word, args in dockerfile_instructions() if word == "FROM"]
    image, _, tag = base.split()[0].partition(":")
    assert image == "python"
    version = re.match(r"(\d+)\.(\d+)\.(\d+)-slim-\w+$", tag)
    assert version is not None, f"{base}: pin a full version"
    major_minor = f"{version.group(1)}.{version.group(2)}"
    assert PYPROJECT["tool"]["mypy"]["python_version"] == major_minor
    assert PYPROJECT["project"]["requires-python"] == f">={major_minor}"


def test_dockerfile_installs_exactly_the_pinned_dependencies() -> None:
    steps = dockerfile_instructions()
    copies = [i for i, (word, args) in enumerate(steps) if word == "COPY"
              and args.split()[0] == "pyproject.toml"]
    installs = [i for i, (word, args) in enumerate(steps) if word == "RUN"
                and "pip install" in args]
    assert copies and installs and copies[0] < installs[0]
    run = steps[installs[0]][1]
    extract = re.match(r'python -c "(.*?)"\s*>', run)
    assert extract is not None, run
    listed = subprocess.run([sys.executable, "-c", extract.group(1)], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.split()
    assert listed == PYPROJECT["project"]["dependencies"]
    assert all("==" in requirement for requirement in listed)  # pinned
    # ...and what they depend on, as on a developer's machine (devstack/bootstrap.sh).
    assert "constraints.txt" in steps[copies[0]][1].split()
    assert "-c constraints.txt" in run
    def name(requirement: str) -> str:  # PEP 503's normalised project name
        return re.sub(r"[-_.]+", "-", requirement.split("==")[0].split("[")[0]).lower()

    pinned = {name(line) for line in (ROOT / "constraints.txt").read_text().splitlines()
              if line and not line.startswith("#")}
    assert {name(r) for r in listed} <= pinned


def test_dockerfile_ships_what_the_code_reads_at_run_time() -> None:
    steps = dockerfile_instructions()
    assert ("WORKDIR", "/app") in steps
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "PYTHONPATH=/app" in env
    copied = {args.split()[0] for word, args in steps if word == "COPY"}
    for path in (registry.SCHEMA_DIR, openapi.SPEC_PATH, ROOT / "services"):
        top = path.relative_to(ROOT).parts[0]
        assert top in copied, f"{top}/ is read at run time but not copied into the image"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var", "tests"} <= set(ignored)
    assert not copied & set(ignored)


def test_dockerfile_runs_as_a_user_who_owns_the_state(compose: dict[str, Any]) -> None:
    steps = dockerfile_instructions()
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    assert all(word != "RUN" for word, _ in steps[last_user:])
    name = users[-1].split(":")[0]
    assert any(word == "RUN" and re.search(rf"useradd\b.*\b{name}\b", args)
               for word, args in steps), f"the user {name} is not created"
    made = dockerfile_made_dirs()
    for service in ours(compose).values():
        env = environment(service)
        for key in ("SIMJOBS_ARTIFACT_DIR", "SIMJOBS_STATE_DIR"):
            assert PurePosixPath(env[key]) in made, key
