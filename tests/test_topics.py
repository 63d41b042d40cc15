"""Topics are created at start-up with the configured shape, idempotently."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.contract.topics import ensure_topics
from services.settings import TOPIC_MAX_MESSAGE_BYTES, KafkaSettings

pytestmark = pytest.mark.kafka


async def _describe(settings: KafkaSettings, topic: str) -> tuple[int, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        [meta] = await admin.describe_topics([topic])
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        configs: dict[str, str] = {}
        for response in responses:
            for resource in response.resources:
                for entry in resource[4]:
                    configs[entry[0]] = entry[1]
        return len(meta["partitions"]), configs
    finally:
        await admin.close()


async def test_topics_have_configured_partitions_and_retention(
        kafka_settings: KafkaSettings) -> None:
    partitions, jobs = await _describe(kafka_settings, kafka_settings.jobs_topic)
    assert partitions == kafka_settings.jobs_partitions
    assert jobs["retention.ms"] == "-1"
    assert jobs["retention.bytes"] == "-1"
    assert jobs["cleanup.policy"] == "delete"
    assert jobs["max.message.bytes"] == str(TOPIC_MAX_MESSAGE_BYTES)
    assert jobs["message.timestamp.type"] == "LogAppendTime"  # the audit's as-of clock
    partitions, tasks = await _describe(kafka_settings, kafka_settings.tasks_topic)
    assert partitions == kafka_settings.tasks_partitions
    assert tasks["retention.ms"] != "-1"


async def test_ensure_topics_is_idempotent(kafka_settings: KafkaSettings) -> None:
    assert await ensure_topics(kafka_settings) == []
    other = kafka_settings.with_prefix(kafka_settings.topic_prefix + "b")
    assert sorted(await ensure_topics(other)) == sorted([other.jobs_topic, other.tasks_topic])

