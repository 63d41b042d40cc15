"""Topic declarations, and their creation at service start-up.

The jobs topic is the system of record: it keeps every event forever
(``retention.ms=-1``, ``retention.bytes=-1``, ``cleanup.policy=delete``,
never ``compact``: compaction would keep only the last event of a job).
The tasks topic is a work queue for runners; it may expire old items.

The jobs topic stamps each record with the broker's append time
(``message.timestamp.type=LogAppendTime``), so "when did this fact enter the system
of record" is answered by one clock, not by each producer's: the audit's state-as-of
cuts the log by it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError, for_code

from services.settings import TOPIC_MAX_MESSAGE_BYTES, KafkaSettings

log = logging.getLogger(__name__)

SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """What one topic must look like."""

    name: str
    partitions: int
    configs: dict[str, str]


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """The topics of one deployment (one prefix)."""
    common = {"max.message.bytes": str(TOPIC_MAX_MESSAGE_BYTES), "cleanup.policy": "delete"}
    return [
        TopicSpec(
            settings.jobs_topic,
            settings.jobs_partitions,
            {**common, "retention.ms": "-1", "retention.bytes": "-1",
             "message.timestamp.type": "LogAppendTime"},
        ),
        TopicSpec(
            settings.tasks_topic,
            settings.tasks_partitions,
            {**common, "retention.ms": str(SEVEN_DAYS_MS)},
        ),
    ]


async def ensure_topics(settings: KafkaSettings) -> list[str]:
    """Create the missing topics; return the names created. Existing ones are left as they are.

    Raises:
        aiokafka.errors.KafkaError: the broker refused or could not be reached.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, client_id=f"{settings.client_id}-admin"
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [s for s in topic_specs(settings) if s.name not in existing]
        created: list[str] = []
        for spec in wanted:
            response = await admin.create_topics(
                [NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.configs)])
            # The broker answers per topic rather than raising: "already exists" means a
            # topic made a moment ago (by another service, or not yet in the listing).
            for _name, code, message in response.topic_errors:
                if code == TopicAlreadyExistsError.errno:
                    continue
                if code:
                    error: type[KafkaError] = for_code(code)
                    raise error(f"cannot create topic {spec.name}: {message}")
                created.append(spec.name)
        if created:
            await _visible(admin, {s.name: s.partitions for s in wanted if s.name in created})
            log.info("created topics %s", created)
        return created
    finally:
        await admin.close()


async def _visible(admin: AIOKafkaAdminClient, partitions: dict[str, int],
                   patience: float = 30.0) -> None:
    """Wait until the broker's metadata shows every new topic with all its partitions.

    The controller acknowledges a creation before the metadata reaches the broker that
    answers clients; a service (or test) that uses a topic at once would otherwise see
    it with no partitions.

    Raises:
        aiokafka.errors.KafkaTimeoutError: not visible within ``patience`` seconds.
    """
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        described = await admin.describe_topics(list(partitions))
        seen = {d["topic"]: len(d["partitions"]) for d in described if not d["error_code"]}
        if all(seen.get(name) == count for name, count in partitions.items()):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise KafkaTimeoutError(f"topics {sorted(partitions)} not visible after "
                                    f"{patience:g} s: {seen}")
        await asyncio.sleep(0.05)


async def delete_prefixed_topics(bootstrap: str, prefixes: frozenset[str]) -> int:
    """Delete the topics under ``prefixes`` and nothing else; returns how many.

    For the throw-away prefixes of tests and benchmarks: the broker they share keeps
    every topic otherwise, and each one costs the broker and its clients (metadata,
    files) from then on.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60_000)
    await admin.start()
    try:
        ours = sorted(topic for topic in await admin.list_topics()
                      if topic.split(".", 1)[0] in prefixes)
        for start in range(0, len(ours), 500):
            await admin.delete_topics(ours[start:start + 500], timeout_ms=60_000)
        return len(ours)
    finally:
        await admin.close()
