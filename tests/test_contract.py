"""The event contract: envelope, schemas, validation on produce, skipping, upcasting."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example as hypothesis_example
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from services.contract.envelope import Event, decode, derived_event_id, encode, parse_time
from services.contract.errors import (
    EventTooLarge,
    MalformedEvent,
    SchemaViolation,
    UnknownEventType,
)
from services.contract.kafka_io import EventDecoder, EventProducer
from services.contract.registry import SCHEMA_DIR, EventRegistry, default_registry
from services.settings import KafkaSettings
from tests.support.histories import synthetic_log
from tests.support.json_values import same_value

LIFE_CYCLE = {
    "JobSubmitted", "CancelRequested", "TaskScheduled", "TaskStarted", "TaskProgress",
    "TaskCompleted", "TaskFailed", "TaskCanceled", "MergeStarted", "JobCompleted", "JobFailed",
    "JobCanceled", "BatchSubmitted", "BatchSubmitFailed", "JobStateReported", "JobDeleted",
}


def test_every_life_cycle_event_has_a_version_1_schema() -> None:
    registry = default_registry()
    assert registry.types == LIFE_CYCLE
    assert {registry.current_version(t) for t in LIFE_CYCLE} == {1}


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.json")), ids=lambda p: p.name)
def test_schema_is_valid_and_its_examples_validate(path: Any) -> None:
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["examples"], "each schema carries at least one example"
    for example in schema["examples"]:
        errors = list(Draft202012Validator(schema).iter_errors(example))
        assert errors == []


def test_envelope_round_trips_bit_for_bit() -> None:
    event = Event(type="CancelRequested", job_id="j1", payload={"requested_by": "u:a"},
                  producer="api", correlation_id="c", causation_id=None)
    raw = encode(event)
    assert decode(raw) == event
    assert encode(decode(raw)) == raw
    assert set(json.loads(raw)) == {"event_id", "type", "version", "job_id", "occurred_at",
                                    "producer", "correlation_id", "causation_id", "payload"}


def test_decoded_events_are_the_events_that_were_encoded() -> None:
    """Decoding builds events without their __init__: they must be the very same values."""
    for event in synthetic_log(seed=3, jobs=20):
        decoded = decode(encode(event))
        assert decoded == event
        assert vars(decoded) == vars(event)
        assert decoded.occurred_at.tzinfo is UTC
        assert replace(decoded, producer="x") == replace(event, producer="x")
        with pytest.raises(FrozenInstanceError):
            decoded.producer = "x"  # type: ignore[misc]


_payload_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-2**100, 2**100) | st.floats()
    | st.text(st.characters(codec=None, categories=None)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3), max_leaves=12)


@given(st.dictionaries(st.text(max_size=8), _payload_values, max_size=6))
@hypothesis_example({"n": 2**70, "x": float("nan"), "y": float("-inf"), "t": "\ud800 é"})
def test_any_payload_is_written_as_the_value_it_is(payload: dict[str, Any]) -> None:
    """The fast encoder writes every payload so that it reads back as itself, keys sorted,
    as the standard library's encoder does (whose output it was before)."""
    event = Event(type="JobCanceled", job_id="j1", payload=payload, producer="api")
    raw = encode(event)
    standard = json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"))
    assert same_value(json.loads(raw), json.loads(standard))
    assert list(json.loads(raw)) == sorted(json.loads(raw))
    assert same_value(decode(raw).payload, payload)


def test_json_the_fast_parser_reads_otherwise_still_decodes_as_before() -> None:
    """Integers beyond 64 bits (orjson reads them as floats) and NaN (orjson refuses it),
    each alone in an event, read as the standard library's parser reads them."""
    for payload in ({"n": 2**70}, {"n": -2**63 - 1}, {"x": float("nan")}):
        event = Event(type="JobCanceled", job_id="j1", payload=payload, producer="api")
        assert same_value(decode(encode(event)).payload, payload)
    with pytest.raises(MalformedEvent, match="not JSON"):
        decode(b"\xff\xfe not utf-8")


def test_times_with_any_offset_come_back_in_utc() -> None:
    moment = datetime(2026, 11, 1, 12, 0, 0, 5, tzinfo=UTC)
    assert parse_time("2026-11-01T12:00:00.000005Z") == moment
    assert parse_time("2026-11-01T13:00:00.000005+01:00") == moment
    assert parse_time("2026-11-01T13:00:00.000005+01:00").tzinfo is UTC
    with pytest.raises(ValueError, match="no timezone"):
        parse_time("2026-11-01T12:00:00")


@pytest.mark.parametrize("raw, message", [
    (b"not json", "not JSON"),
    (b"[1]", "JSON object"),
    (b'{"type": "X"}', "envelope keys wrong"),
])
def test_malformed_bytes_are_rejected_with_a_reason(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedEvent, match=message):
        decode(raw)


def test_schema_violation_names_the_field() -> None:
    event = Event(type="TaskProgress", job_id="j", producer="t",
                  payload={"task_index": -1, "simulated_primaries": 1, "requested_primaries": 2})
    with pytest.raises(SchemaViolation, match="task_index"):
        default_registry().validate(event)


def test_derived_ids_are_stable() -> None:
    assert derived_event_id("j", "TaskStarted", 3) == derived_event_id("j", "TaskStarted", 3)
    assert derived_event_id("j", "TaskStarted", 3) != derived_event_id("j", "TaskStarted", 4)


def test_decoder_skips_and_counts_unknown_and_malformed() -> None:
    decoder = EventDecoder()
    unknown = Event(type="JobTeleported", job_id="j", payload={}, producer="future")
    assert decoder.decode(encode(unknown)) is None
    assert decoder.decode(b"{broken") is None
    good = Event(type="CancelRequested", job_id="j", payload={"requested_by": "u"}, producer="a")
    assert decoder.decode(encode(good)) == good
    assert decoder.skipped == {"unknown:JobTeleported": 1, "malformed": 1}


def _registry_with_v2() -> EventRegistry:
    """A registry where CancelRequested gained a v2 that renamed requested_by -> actor."""
    registry = EventRegistry.from_directory()
    registry.add_schema("CancelRequested", 2, {
        "type": "object", "required": ["actor"], "additionalProperties": False,
        "properties": {"actor": {"type": "string"}, "reason": {"type": "string"}}})
    registry.add_upcaster("CancelRequested", 1,
                          lambda p: {"actor": p["requested_by"],
                                     **({"reason": p["reason"]} if "reason" in p else {})})
    return registry


def test_consumer_upcasts_a_stored_v1_event() -> None:
    stored_v1 = encode(Event(type="CancelRequested", job_id="j", producer="old",
                             payload={"requested_by": "u:alice"}))
    event = EventDecoder(registry=_registry_with_v2()).decode(stored_v1)
    assert event is not None
    assert (event.version, dict(event.payload)) == (2, {"actor": "u:alice"})


def test_missing_upcaster_is_an_error() -> None:
    registry = EventRegistry.from_directory()
    registry.add_schema("CancelRequested", 2, {"type": "object"})
    with pytest.raises(UnknownEventType, match="no upcaster"):
        registry.upcast(Event(type="CancelRequested", job_id="j", producer="old",
                              payload={"requested_by": "u"}))


@pytest.mark.kafka
async def test_producer_rejects_malformed_and_oversized_events(
        kafka_settings: KafkaSettings) -> None:
    async with EventProducer(kafka_settings) as producer:
        with pytest.raises(SchemaViolation):
            await producer.publish(Event(type="TaskStarted", job_id="j", producer="t",
                                         payload={"task_index": 0}))
        with pytest.raises(UnknownEventType):
            await producer.publish(Event(type="Nope", job_id="j", producer="t", payload={}))
        with pytest.raises(EventTooLarge):
            await producer.publish(Event(type="CancelRequested", job_id="j", producer="t",
                                         payload={"requested_by": "u", "reason": "x" * 300_000}))
        assert sum(producer.sent.values()) == 0
        published = await producer.publish(Event(type="CancelRequested", job_id="j",
                                                  producer="t", payload={"requested_by": "u"}))
        assert published.topic == kafka_settings.jobs_topic
        assert producer.sent["CancelRequested"] == 1


def _broken_variants(example: dict[str, Any]) -> list[dict[str, Any]]:
    """Payloads that break an example: each key removed, each value given a wrong type."""
    variants: list[dict[str, Any]] = []
    for key in example:
        variants.append({k: v for k, v in example.items() if k != key})
        wrongs: list[Any] = ["x" * 70, -1, 1.5, None, [], {"nested": True}]
        for wrong in wrongs:
            if type(wrong) is not type(example[key]):
                variants.append({**example, key: wrong})
    variants.append({**example, "unexpected_key": 1})
    return variants


@pytest.mark.parametrize("type_, version", sorted(default_registry().validators))
def test_fast_and_reference_validators_agree(type_: str, version: int) -> None:
    """The Rust validator decides; jsonschema words the message: they must never disagree."""
    registry = default_registry()
    fast = registry.fast[(type_, version)]
    reference = registry.validators[(type_, version)]
    examples = [e for t, v, e in registry.examples() if (t, v) == (type_, version)]
    for example in examples:
        assert fast.is_valid(example) and reference.is_valid(example)
        for payload in _broken_variants(example):
            assert fast.is_valid(payload) == reference.is_valid(payload), payload
            if not reference.is_valid(payload):
                event = Event(type=type_, job_id="j", payload=payload, producer="test",
                              version=version)
                with pytest.raises(SchemaViolation, match=f"{type_} v{version} at "):
                    registry.validate(event)
