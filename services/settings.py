"""The one settings module: every service reads its configuration here.

All variables share the prefix ``SIMJOBS_`` so that a deployment (or a test
session) can be configured from one environment, and so that the
docker-compose file can be checked against the names the code reads
(:data:`ENV_VARS` lists them all).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
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
    """Whether consumers re-validate every event against its schema (default: yes).

    Producers always validate, so a malformed event never enters the log through
    our code; consumers check again because the log is public and other producers
    write to it. It costs ~2 µs an event (the compiled Rust validator), so it is on
    by default; without it a payload the fold cannot read is still skipped and
    counted, never applied.
    """
    return _env("VALIDATE_ON_CONSUME", "1") not in ("", "0", "false", "no")


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
    """One SLURM cluster users may submit batch jobs to (from ``SIMJOBS_CLUSTERS``).

    The API needs only the name; the SLURM bridge needs the rest, which
    :func:`_parse_clusters` requires (the defaults exist so that a listing-only
    cluster can be built in code). The host key is always verified against
    ``known_hosts``; the bridge logs in with ``private_key`` only.
    """

    name: str
    host: str = ""
    port: int = 22
    user: str = ""
    private_key: Path | None = None
    known_hosts: Path | None = None
    #: Absolute directory on the cluster under which each job gets its own directory.
    work_root: str = ""
    #: Lines run by every job script before the simulator (``module load ...``, exports).
    setup: tuple[str, ...] = ()
    #: sim_type -> the simulator's executable on the cluster.
    executables: Mapping[str, str] = field(default_factory=dict)
    #: SLURM options (name -> value) the array and collect jobs get unless a request
    #: overrides them; trusted (they come from the operator), checked for shape only.
    array_options: Mapping[str, str] = field(default_factory=dict)
    collect_options: Mapping[str, str] = field(default_factory=dict)
    #: Seconds between two status queries of this cluster (one query for all its jobs).
    poll_interval: float = 5.0
    #: Remote operations at once on the one SSH connection (sshd's MaxSessions is 10, the
    #: SFTP session takes one, and sessions closing on the server still count).
    max_sessions: int = 6


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
    #: How long ``POST /jobs/batch`` waits for the SLURM bridge to submit the job (it
    #: answers 500 with the reason if submission failed by then; 202 otherwise); 0: no wait.
    batch_submit_wait_seconds: float = 30.0
    #: How long a write (a submit, a cancel) waits for Kafka to acknowledge its events before
    #: answering 503; what was not acknowledged by then is dropped, never written later.
    publish_timeout_seconds: float = 10.0
    access_ttl_seconds: int = 600
    refresh_ttl_seconds: int = 7200
    keycloak_ttl_seconds: int = 1800
    update_key_ttl_seconds: int = 30 * 24 * 3600
    login_max_failures: int = 5
    login_window_seconds: int = 300
    #: Seconds a session found valid is trusted without a database read (0: always read);
    #: a logout through another API process takes effect here within this time.
    session_cache_seconds: float = 5.0


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name, "true" if default else "false").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{PREFIX}{name} must be true or false, got {raw!r}")


def _env_optional(name: str) -> str | None:
    return _env(name, "") or None


_CLUSTER_TEXT = ("host", "user", "work_root")
_CLUSTER_KEYS = frozenset({
    "name", "host", "port", "user", "private_key", "known_hosts", "work_root", "setup",
    "executables", "array_options", "collect_options", "poll_interval", "max_sessions"})


def _cluster_mapping(name: str, key: str, value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int) and not isinstance(v, bool)
            for k, v in value.items()):
        raise ValueError(f"{PREFIX}CLUSTERS: cluster {name!r}: {key!r} must be an object "
                         "of strings")
    return {k: str(v) for k, v in value.items()}


def _cluster_number(name: str, key: str, value: object, default: float, low: float) -> float:
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or value < low:
        raise ValueError(f"{PREFIX}CLUSTERS: cluster {name!r}: {key!r} must be a number "
                         f">= {low:g}")
    return float(value)


def _parse_cluster(item: object) -> ClusterConfig:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise ValueError(f"{PREFIX}CLUSTERS: every entry needs a non-empty 'name'")
    name = item["name"]
    unknown = set(item) - _CLUSTER_KEYS
    if unknown:
        raise ValueError(f"{PREFIX}CLUSTERS: cluster {name!r}: unknown keys {sorted(unknown)}")
    for key in (*_CLUSTER_TEXT, "private_key", "known_hosts"):
        if key in item and (not isinstance(item[key], str) or not item[key]):
            raise ValueError(f"{PREFIX}CLUSTERS: cluster {name!r}: {key!r} must be a "
                             "non-empty string")
    if item.get("work_root") and not item["work_root"].startswith("/"):
        raise ValueError(f"{PREFIX}CLUSTERS: cluster {name!r}: 'work_root' must be an "
                         "absolute path on the cluster")
    setup = item.get("setup") or []
    if not isinstance(setup, list) or not all(isinstance(line, str) and "\n" not in line
                                              for line in setup):
        raise ValueError(f"{PREFIX}CLUSTERS: cluster {name!r}: 'setup' must be a list of "
                         "one-line strings")
    port = item.get("port", 22)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"{PREFIX}CLUSTERS: cluster {name!r}: 'port' must be a TCP port")
    key_file, known_file = item.get("private_key"), item.get("known_hosts")
    work_root = str(item.get("work_root") or "")
    return ClusterConfig(
        name=name, host=item.get("host", ""), port=port, user=item.get("user", ""),
        private_key=Path(key_file).expanduser() if key_file else None,
        known_hosts=Path(known_file).expanduser() if known_file else None,
        work_root=work_root.rstrip("/") or work_root, setup=tuple(setup),
        executables=_cluster_mapping(name, "executables", item.get("executables")),
        array_options=_cluster_mapping(name, "array_options", item.get("array_options")),
        collect_options=_cluster_mapping(name, "collect_options",
                                         item.get("collect_options")),
        poll_interval=_cluster_number(name, "poll_interval", item.get("poll_interval"),
                                      5.0, 0.05),
        max_sessions=int(_cluster_number(name, "max_sessions", item.get("max_sessions"),
                                         6, 1)),
    )


def _parse_clusters(raw: str) -> tuple[ClusterConfig, ...]:
    """``SIMJOBS_CLUSTERS``: a JSON list of clusters (keys of :class:`ClusterConfig`).

    Only ``name`` is required here (the API lists names); the SLURM bridge requires the
    connection keys (:func:`load_slurm_bridge_settings`).
    """
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{PREFIX}CLUSTERS must be a JSON list: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"{PREFIX}CLUSTERS must be a JSON list of objects with a 'name'")
    clusters = tuple(_parse_cluster(item) for item in data)
    names = [c.name for c in clusters]
    if len(set(names)) != len(names):
        raise ValueError(f"{PREFIX}CLUSTERS: cluster names must be unique, got {names}")
    return clusters


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
        batch_submit_wait_seconds=float(_env_int("API_BATCH_SUBMIT_WAIT_MS", 30000)) / 1000,
        publish_timeout_seconds=_env_number("API_PUBLISH_TIMEOUT_SECONDS", 10.0),
        access_ttl_seconds=_env_int("API_ACCESS_TTL", 600),
        refresh_ttl_seconds=_env_int("API_REFRESH_TTL", 7200),
        keycloak_ttl_seconds=_env_int("API_KEYCLOAK_TTL", 1800),
        update_key_ttl_seconds=_env_int("API_UPDATE_KEY_TTL", 30 * 24 * 3600),
        login_max_failures=_env_int("API_LOGIN_MAX_FAILURES", 5),
        login_window_seconds=_env_int("API_LOGIN_WINDOW", 300),
        session_cache_seconds=_env_number("API_SESSION_CACHE_SECONDS", 5.0),
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


# --- operations: logs, metrics, health, usage accounting (services.ops, services.projector.usage)

LOG_FORMATS = ("json", "text")


@dataclass(frozen=True)
class LogSettings:
    """How services log: JSON lines (the default, for collectors) or text (for people)."""

    format: str = "json"
    level: int = 20  # logging.INFO


def load_log_settings() -> LogSettings:
    """Read ``SIMJOBS_LOG_FORMAT`` (json|text) and ``SIMJOBS_LOG_LEVEL`` (a level name)."""
    import logging

    fmt = _env("LOG_FORMAT", "json").strip().lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"{PREFIX}LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
                         f"got {fmt!r}")
    name = _env("LOG_LEVEL", "INFO").strip().upper()
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        raise ValueError(f"{PREFIX}LOG_LEVEL must be a level name such as INFO, got {name!r}")
    return LogSettings(format=fmt, level=level)


@dataclass(frozen=True)
class OpsSettings:
    """Where a service that is not an HTTP server serves ``/metrics``, ``/healthz``, ``/readyz``.

    ``port`` < 0 turns the endpoint off; 0 (the default) picks a free port, logged at
    start-up, so that test and ad-hoc processes never collide; a deployment that is
    scraped sets fixed ports (``make up`` uses :data:`OPS_DEFAULT_PORTS`).
    """

    host: str
    port: int
    #: Seconds between two readiness checks of the dependencies (Kafka, database).
    check_interval: float
    #: Seconds one dependency check may take before it counts as failed.
    check_timeout: float
    #: Seconds between two consumer-lag samples.
    lag_interval: float


#: The ops ports ``make up`` gives the services that are not HTTP servers (the API serves
#: its own routes on its own port).
OPS_DEFAULT_PORTS = {"projector": 9101, "runner": 9102, "usage": 9103, "slurm_bridge": 9104}


def load_ops_settings(service: str | None) -> OpsSettings:
    """Read the ops endpoint of one service (``SIMJOBS_<SERVICE>_METRICS_PORT``).

    ``None``: a service that serves the ops routes on its own HTTP port (the API); only
    the check and lag intervals apply.
    """
    interval = _env_float("HEALTH_INTERVAL", 2.0)
    timeout = _env_float("HEALTH_TIMEOUT", 2.0)
    lag = _env_float("LAG_INTERVAL", 5.0)
    if interval <= 0 or timeout <= 0 or lag <= 0:
        raise ValueError(f"{PREFIX}HEALTH_INTERVAL, {PREFIX}HEALTH_TIMEOUT and "
                         f"{PREFIX}LAG_INTERVAL must be positive")
    return OpsSettings(
        host=_env("METRICS_HOST", "127.0.0.1"),
        port=-1 if service is None else _env_int(f"{service.upper()}_METRICS_PORT", 0),
        check_interval=interval, check_timeout=timeout, lag_interval=lag,
    )


@dataclass(frozen=True)
class UsageSettings:
    """The usage-accounting worker (faust): its consumer group and faust's own state dir."""

    group_id: str
    data_dir: Path
    #: Events per database transaction (the unit that is counted once).
    batch: int = 500


def load_usage_settings() -> UsageSettings:
    """Read ``SIMJOBS_USAGE_GROUP``, ``SIMJOBS_USAGE_DATA_DIR`` and ``SIMJOBS_USAGE_BATCH``."""
    batch = _env_int("USAGE_BATCH", 500)
    if batch < 1:
        raise ValueError(f"{PREFIX}USAGE_BATCH must be at least 1, got {batch}")
    return UsageSettings(
        group_id=_env("USAGE_GROUP", "usage"),
        data_dir=Path(_env("USAGE_DATA_DIR", str(default_state_dir() / "usage"))),
        batch=batch,
    )


# --- live streams (services.api.stream) ----------------------------------------------------


@dataclass(frozen=True)
class StreamSettings:
    """Server-Sent Events of job progress: limits, keep-alives and the in-memory history."""

    #: Open streams one API process serves at most (more get 503).
    max_streams: int = 2000
    #: Open streams one user may hold at most (more get 429).
    max_streams_per_user: int = 100
    #: Seconds between keep-alive comments on an idle stream.
    keepalive_seconds: float = 15.0
    #: Seconds after which the server ends a connection (the browser resumes it at once with
    #: Last-Event-ID); bounds how long a revoked session keeps streaming. 0: no limit.
    max_connection_seconds: float = 600.0
    #: The reconnection delay the browser is told (SSE ``retry:``), in milliseconds.
    retry_ms: int = 2000
    #: Messages waiting for one slow client; past it the stream is ended (the browser resumes).
    queue_size: int = 2000
    #: Messages kept per followed job for resuming from memory (older ones: read from the log).
    history_per_job: int = 10_000
    #: Recent (offset, job) records kept per partition for resuming user streams from memory.
    recent_records: int = 20_000
    #: Seconds a job nobody follows any more stays in memory (cheap resumes after a blip).
    linger_seconds: float = 120.0
    #: Reads of the log (job histories) running at once.
    log_reads: int = 4


def load_stream_settings() -> StreamSettings:
    """Read the stream settings; raises ValueError naming the variable that is wrong."""
    settings = StreamSettings(
        max_streams=_env_int("STREAM_MAX", 2000),
        max_streams_per_user=_env_int("STREAM_MAX_PER_USER", 100),
        keepalive_seconds=_env_float("STREAM_KEEPALIVE_SECONDS", 15.0),
        max_connection_seconds=_env_float("STREAM_MAX_CONNECTION_SECONDS", 600.0),
        retry_ms=_env_int("STREAM_RETRY_MS", 2000),
        queue_size=_env_int("STREAM_QUEUE_SIZE", 2000),
        history_per_job=_env_int("STREAM_HISTORY_PER_JOB", 10_000),
        recent_records=_env_int("STREAM_RECENT_RECORDS", 20_000),
        linger_seconds=_env_float("STREAM_LINGER_SECONDS", 120.0),
        log_reads=_env_int("STREAM_LOG_READS", 4),
    )
    for name, value in (("STREAM_MAX", settings.max_streams),
                        ("STREAM_MAX_PER_USER", settings.max_streams_per_user),
                        ("STREAM_QUEUE_SIZE", settings.queue_size),
                        ("STREAM_HISTORY_PER_JOB", settings.history_per_job),
                        ("STREAM_RECENT_RECORDS", settings.recent_records),
                        ("STREAM_LOG_READS", settings.log_reads),
                        ("STREAM_KEEPALIVE_SECONDS", settings.keepalive_seconds)):
        if value <= 0:
            raise ValueError(f"{PREFIX}{name} must be positive, got {value}")
    if settings.max_connection_seconds < 0 or settings.linger_seconds < 0:
        raise ValueError(f"{PREFIX}STREAM_MAX_CONNECTION_SECONDS and "
                         f"{PREFIX}STREAM_LINGER_SECONDS must not be negative")
    return settings


# --- batch platform (services.slurm_bridge) -----------------------------------------------


@dataclass(frozen=True)
class SlurmBridgeSettings:
    """How the SLURM bridge submits and tracks batch jobs (clusters: ``SIMJOBS_CLUSTERS``)."""

    clusters: tuple[ClusterConfig, ...]
    #: Where task outputs are downloaded before they are collected and stored.
    workdir_root: Path
    group_id: str = "slurm-bridge"
    #: Seconds within which a submission retries SSH connection failures before it is
    #: given up (BatchSubmitFailed); keep it below the API's batch submit wait.
    submit_deadline: float = 20.0
    #: Seconds one remote command may take before it is abandoned (and retried).
    command_timeout: float = 60.0
    #: Seconds to open an SSH connection (TCP, key exchange, login).
    connect_timeout: float = 15.0
    #: Backoff between reconnection attempts: from ``reconnect_min`` doubling to the max.
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0


def load_slurm_bridge_settings() -> SlurmBridgeSettings:
    """Read the SLURM bridge's settings; raises ValueError naming the variable that is wrong."""
    clusters = _parse_clusters(_env("CLUSTERS", "[]"))
    for cluster in clusters:
        missing = [key for key in ("host", "user", "private_key", "known_hosts", "work_root")
                   if not getattr(cluster, key)]
        if missing:
            raise ValueError(f"{PREFIX}CLUSTERS: cluster {cluster.name!r} needs "
                             f"{', '.join(repr(k) for k in missing)} for the SLURM bridge")
    settings = SlurmBridgeSettings(
        clusters=clusters,
        workdir_root=Path(_env("SLURM_WORKDIR", str(default_state_dir() / "slurm-bridge"))),
        group_id=_env("SLURM_BRIDGE_GROUP", "slurm-bridge"),
        submit_deadline=_env_float("SLURM_SUBMIT_DEADLINE", 20.0),
        command_timeout=_env_float("SLURM_COMMAND_TIMEOUT", 60.0),
        connect_timeout=_env_float("SLURM_CONNECT_TIMEOUT", 15.0),
        reconnect_min=_env_float("SLURM_RECONNECT_MIN", 0.5),
        reconnect_max=_env_float("SLURM_RECONNECT_MAX", 30.0),
    )
    if min(settings.submit_deadline, settings.command_timeout, settings.connect_timeout,
           settings.reconnect_min) <= 0 or settings.reconnect_max < settings.reconnect_min:
        raise ValueError(f"{PREFIX}SLURM_* times must be positive (and RECONNECT_MAX >= MIN)")
    return settings
