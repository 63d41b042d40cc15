"""The one settings module: every service reads its configuration here.

All variables share the prefix ``SIMJOBS_`` so that a deployment (or a test
session) can be configured from one environment, and so that the
docker-compose file can be checked against the names the code reads
(:data:`ENV_VARS` lists them all).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "SIMJOBS_"

#: Every environment variable the code reads, with its default (as text).
ENV_VARS: dict[str, str] = {}


def _env(name: str, default: str) -> str:
    ENV_VARS[PREFIX + name] = default
    return os.environ.get(PREFIX + name, default)


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{PREFIX}{name} must be an integer, got {raw!r}") from exc


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
    """Batching of the projector: bigger batches replay faster, smaller ones lag less."""

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


def load_kafka() -> KafkaSettings:
    """Read the Kafka settings (the bootstrap default is the project's own broker)."""
    return KafkaSettings(
        bootstrap_servers=_env("KAFKA_BOOTSTRAP", "127.0.0.1:19092"),
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
            max_batch=_env_int("PROJECTOR_MAX_BATCH", 2000),
            group_id=_env("PROJECTOR_GROUP", "projector"),
        ),
        state_dir=state,
    )
