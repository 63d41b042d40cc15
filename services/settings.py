"""The one settings module: every service reads its configuration here.

All variables share the prefix ``SIMJOBS_`` so that a deployment (or a test
session) can be configured from one environment, and so that the
docker-compose file can be checked against the names the code reads
(:data:`ENV_VARS` lists them all).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

PREFIX = "SIMJOBS_"

_Number = TypeVar("_Number", int, float)

#: Every environment variable the code reads, with its default (as text).
ENV_VARS: dict[str, str] = {}


def _env(name: str, default: str) -> str:
    ENV_VARS[PREFIX + name] = default
    return os.environ.get(PREFIX + name, default)


def _env_number(name: str, default: _Number) -> _Number:
    raw = _env(name, str(default))
    kind = type(default)
    try:
        return kind(raw)
    except ValueError as exc:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{PREFIX}{name} must be {what}, got {raw!r}") from exc


def _env_int(name: str, default: int) -> int:
    return _env_number(name, default)


def default_state_dir() -> Path:
    """Where embedded-default state lives (SQLite file, artifacts, secrets)."""
    return Path(_env("STATE_DIR", str(Path.cwd() / "var")))


#: Size limits, chosen once and applied on broker, topic, producer, consumer.
#: Events are small: inputs, results and logs travel by reference through the
#: artifact store, so a job never fails because of Kafka's message limit.
MAX_EVENT_BYTES = 256 * 1024
"""Largest encoded event the producer helper accepts (checked before sending)."""
TOPIC_MAX_MESSAGE_BYTES = 1024 * 1024
"""``max.message.bytes`` of every topic (the broker allows up to 4 MiB)."""
PRODUCER_MAX_REQUEST_BYTES = 1024 * 1024
CONSUMER_MAX_PARTITION_FETCH_BYTES = 1024 * 1024
CONSUMER_FETCH_MAX_BYTES = 16 * 1024 * 1024


def validate_on_consume() -> bool:
    """Whether consumers re-validate every event against its schema.

    Producers always validate (a malformed event never enters the log through
    our code); re-validating on consume costs more than the rest of the
    projector's per-event work, so it is for tests and for logs that foreign
    producers write to. Without it a payload the fold cannot read is still
    skipped and counted, never applied.
    """
    return _env("VALIDATE_ON_CONSUME", "0") not in ("", "0", "false", "no")


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach Kafka and how the topics are named and shaped."""

    bootstrap_servers: str
    topic_prefix: str
    jobs_partitions: int
    tasks_partitions: int
    client_id: str

    @property
    def jobs_topic(self) -> str:
        """The system of record: every job event, keyed by job id."""
        return f"{self.topic_prefix}.jobs"

    @property
    def tasks_topic(self) -> str:
        """Work items for the direct platform's runners (a consumer group)."""
        return f"{self.topic_prefix}.tasks"

    def with_prefix(self, prefix: str) -> KafkaSettings:
        """Same cluster, other topics: how tests isolate themselves."""
        return KafkaSettings(
            self.bootstrap_servers, prefix, self.jobs_partitions, self.tasks_partitions,
            self.client_id,
        )


@dataclass(frozen=True)
class DatabaseSettings:
    """The read model's database (SQLite by default, PostgreSQL by URL)."""

    url: str


@dataclass(frozen=True)
class ArtifactSettings:
    """Where content-addressed inputs, results and logs are kept."""

    root: Path


@dataclass(frozen=True)
class ProjectorSettings:
    """Batching of the projector.

    ``max_batch`` bounds the records of one transaction. It matters when there is a
    backlog (a replay, a restart): a job touched many times in one batch is written
    once, so bigger batches replay faster. At a steady rate a batch holds what arrived
    since the last one, far fewer.
    """

    max_batch: int
    group_id: str


@dataclass(frozen=True)
class Settings:
    """Everything, read once from the environment."""

    kafka: KafkaSettings
    database: DatabaseSettings
    artifacts: ArtifactSettings
    projector: ProjectorSettings
    state_dir: Path = field(default_factory=default_state_dir)


def own_broker_bootstrap() -> str:
    """Where the project's own broker (devstack) listens, so tools work after ``make up``.

    The broker picks free ports and records them in its state file; without
    one (no broker ever started here) the conventional 127.0.0.1:9092 is used.
    """
    home = Path(os.environ.get(PREFIX + "KAFKA_HOME",
                               Path.home() / ".cache" / "simjobs" / "kafka"))
    try:
        port = int(json.loads((home / "state.json").read_text())["client_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return "127.0.0.1:9092"
    return f"127.0.0.1:{port}"


def load_kafka() -> KafkaSettings:
    """Read the Kafka settings (the bootstrap default is the project's own broker)."""
    return KafkaSettings(
        bootstrap_servers=_env("KAFKA_BOOTSTRAP", own_broker_bootstrap()),
        topic_prefix=_env("TOPIC_PREFIX", "simjobs"),
        jobs_partitions=_env_int("JOBS_PARTITIONS", 6),
        tasks_partitions=_env_int("TASKS_PARTITIONS", 12),
        client_id=_env("CLIENT_ID", "simjobs"),
    )


def load_settings() -> Settings:
    """Read every setting; raises ValueError naming the variable that is wrong."""
    state = default_state_dir()
    return Settings(
        kafka=load_kafka(),
        database=DatabaseSettings(
            url=_env("DATABASE_URL", f"sqlite+aiosqlite:///{state / 'readmodel.sqlite3'}")
        ),
        artifacts=ArtifactSettings(root=Path(_env("ARTIFACT_DIR", str(state / "artifacts")))),
        projector=ProjectorSettings(
            max_batch=_env_int("PROJECTOR_MAX_BATCH", 20000),
            group_id=_env("PROJECTOR_GROUP", "projector"),
        ),
        state_dir=state,
    )


# --- REST API (services.api) -------------------------------------------------------------


@dataclass(frozen=True)
class ClusterConfig:
    """One SLURM cluster users may submit batch jobs to (from ``SIMJOBS_CLUSTERS``)."""

    name: str
    options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiSettings:
    """The YAPTIDE-compatible REST API: listening address, auth, limits."""

    host: str = "127.0.0.1"
    port: int = 5000
    cors_origins: tuple[str, ...] = ("http://localhost:3000", "http://127.0.0.1:3000")
    clusters: tuple[ClusterConfig, ...] = ()
    #: HMAC secrets; when unset they are generated once into ``state_dir/api-secrets.json``.
    access_secret: str | None = None
    refresh_secret: str | None = None
    update_secret: str | None = None
    keycloak_base_url: str | None = None
    keycloak_realm: str | None = None
    keycloak_audience: str = "yaptide"
    #: Value required in the token's ``plgridAccessServices`` claim ("" disables the check).
    keycloak_required_service: str = "PLG_YAPTIDE_ACCESS"
    open_registration: bool = True
    cookie_secure: bool = False
    max_body_bytes: int = 32 * 1024 * 1024
    #: How long a read waits for the projector to show a job this API just accepted.
    read_wait_seconds: float = 5.0
    access_ttl_seconds: int = 600
    refresh_ttl_seconds: int = 7200
    keycloak_ttl_seconds: int = 1800
    update_key_ttl_seconds: int = 30 * 24 * 3600
    login_max_failures: int = 5
    login_window_seconds: int = 300


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name, "true" if default else "false").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{PREFIX}{name} must be true or false, got {raw!r}")


def _env_optional(name: str) -> str | None:
    return _env(name, "") or None


def _parse_clusters(raw: str) -> tuple[ClusterConfig, ...]:
    import json

    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{PREFIX}CLUSTERS must be a JSON list: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{PREFIX}CLUSTERS must be a JSON list of objects with a 'name'")
    clusters = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ValueError(f"{PREFIX}CLUSTERS: every entry needs a non-empty 'name'")
        clusters.append(ClusterConfig(name=item["name"],
                                      options={k: v for k, v in item.items() if k != "name"}))
    return tuple(clusters)


def load_api_settings() -> ApiSettings:
    """Read the API's settings; raises ValueError naming the variable that is wrong."""
    origins = _env("CORS_ORIGINS", "http://localhost:3000,http://127.0.0.1:3000")
    return ApiSettings(
        host=_env("API_HOST", "127.0.0.1"),
        port=_env_int("API_PORT", 5000),
        cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
        clusters=_parse_clusters(_env("CLUSTERS", "[]")),
        access_secret=_env_optional("API_ACCESS_SECRET"),
        refresh_secret=_env_optional("API_REFRESH_SECRET"),
        update_secret=_env_optional("API_UPDATE_SECRET"),
        keycloak_base_url=_env_optional("KEYCLOAK_BASE_URL"),
        keycloak_realm=_env_optional("KEYCLOAK_REALM"),
        keycloak_audience=_env("KEYCLOAK_AUDIENCE", "yaptide"),
        keycloak_required_service=_env("KEYCLOAK_REQUIRED_SERVICE", "PLG_YAPTIDE_ACCESS"),
        open_registration=_env_bool("API_OPEN_REGISTRATION", True),
        cookie_secure=_env_bool("API_COOKIE_SECURE", False),
        max_body_bytes=_env_int("API_MAX_BODY_BYTES", 32 * 1024 * 1024),
        read_wait_seconds=float(_env_int("API_READ_WAIT_MS", 5000)) / 1000,
        access_ttl_seconds=_env_int("API_ACCESS_TTL", 600),
        refresh_ttl_seconds=_env_int("API_REFRESH_TTL", 7200),
        keycloak_ttl_seconds=_env_int("API_KEYCLOAK_TTL", 1800),
        update_key_ttl_seconds=_env_int("API_UPDATE_KEY_TTL", 30 * 24 * 3600),
        login_max_failures=_env_int("API_LOGIN_MAX_FAILURES", 5),
        login_window_seconds=_env_int("API_LOGIN_WINDOW", 300),
    )


# --- direct-platform runner (services.runner) ----------------------------------------------

#: The simulators a job may name (JobSubmitted's ``sim_type``), each configurable through
#: ``SIMJOBS_SIM_<TYPE>_EXE``; more can be added by setting such a variable.
SIM_TYPES = ("shieldhit", "fluka", "geant4", "topas", "builtin")


def sim_exe_variable(sim_type: str) -> str:
    """The environment variable that names a simulator's executable."""
    return f"{PREFIX}SIM_{sim_type.upper()}_EXE"


@dataclass(frozen=True)
class RunnerSettings:
    """How a runner executes tasks: parallelism, limits, work dirs, simulator executables."""

    concurrency: int
    #: Seconds a task may run before it is stopped and failed (0: no limit).
    wall_time_limit: float
    #: Seconds between SIGINT and SIGKILL when a task's process group is stopped.
    grace_seconds: float
    workdir_root: Path
    #: sim_type -> executable (path or name on PATH); a type absent here cannot run.
    executables: dict[str, str]
    coordinator_group: str = "runner-coordinator"
    worker_group: str = "runner-workers"
    #: How this runner names itself in TaskStarted (default ``host:pid``).
    worker_name: str = ""
    #: Keep each task's work directory after its artifacts are stored (for debugging).
    keep_workdirs: bool = False


def _env_float(name: str, default: float) -> float:
    return _env_number(name, default)


def load_runner_settings() -> RunnerSettings:
    """Read the runner's settings; raises ValueError naming the variable that is wrong."""
    executables: dict[str, str] = {}
    for sim_type in SIM_TYPES:
        value = _env(f"SIM_{sim_type.upper()}_EXE", "")
        if value:
            executables[sim_type] = value
    for name, value in os.environ.items():
        if name.startswith(PREFIX + "SIM_") and name.endswith("_EXE") and value:
            sim_type = name[len(PREFIX + "SIM_"):-len("_EXE")].lower()
            executables.setdefault(sim_type, value)
    concurrency = _env_int("RUNNER_CONCURRENCY", os.cpu_count() or 1)
    if concurrency < 1:
        raise ValueError(f"{PREFIX}RUNNER_CONCURRENCY must be at least 1, got {concurrency}")
    wall = _env_float("RUNNER_WALL_TIME_LIMIT", 24 * 3600.0)
    grace = _env_float("RUNNER_GRACE_SECONDS", 10.0)
    if wall < 0 or grace < 0:
        raise ValueError(f"{PREFIX}RUNNER_WALL_TIME_LIMIT and {PREFIX}RUNNER_GRACE_SECONDS "
                         "must not be negative")
    return RunnerSettings(
        concurrency=concurrency,
        wall_time_limit=wall,
        grace_seconds=grace,
        workdir_root=Path(_env("RUNNER_WORKDIR", str(default_state_dir() / "runner"))),
        executables=executables,
        coordinator_group=_env("RUNNER_COORDINATOR_GROUP", "runner-coordinator"),
        worker_group=_env("RUNNER_WORKER_GROUP", "runner-workers"),
        worker_name=_env("RUNNER_NAME", ""),
        keep_workdirs=_env_bool("RUNNER_KEEP_WORKDIRS", False),
    )
