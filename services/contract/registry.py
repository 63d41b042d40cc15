"""Event types, their JSON Schemas, and the upcasters that bring old payloads forward.

One schema file per ``(type, version)`` lives in ``schemas/events`` as
``<Type>.v<N>.json``. A payload is validated against the schema of its *own*
version, then upcast step by step (``v1 -> v2 -> ...``) to the newest version
this code knows, so that the log written by older releases stays readable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from services.contract.envelope import Event
from services.contract.errors import SchemaViolation, UnknownEventType

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "events"
_FILE_NAME = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)\.v(?P<version>[1-9][0-9]*)\.json$")

Upcaster = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass
class EventRegistry:
    """Schemas by ``(type, version)`` plus upcasters by ``(type, from_version)``.

    Each schema is compiled twice: by ``jsonschema_rs`` (Rust, ~2 µs a payload), which
    decides whether a payload is valid on the hot path of every producer and consumer,
    and by ``jsonschema``, which checks the schema itself and words the error message
    naming the field when a payload is not valid (~100 µs, paid only then). Both
    implement draft 2020-12; a test checks that they agree on the shipped examples and
    on broken payloads.
    """

    validators: dict[tuple[str, int], Draft202012Validator] = field(default_factory=dict)
    fast: dict[tuple[str, int], Any] = field(default_factory=dict)
    upcasters: dict[tuple[str, int], Upcaster] = field(default_factory=dict)
    #: Newest version per type, kept in step with ``validators`` by :meth:`add_schema`
    #: (consumers ask for every record; a scan of the schemas each time cost more
    #: than parsing the record's JSON).
    _newest: dict[str, int] = field(default_factory=dict, init=False, repr=False,
                                    compare=False)

    @classmethod
    def from_directory(cls, directory: Path = SCHEMA_DIR) -> EventRegistry:
        """Load every ``<Type>.v<N>.json`` of a directory; the schemas must themselves be valid."""
        registry = cls()
        for path in sorted(directory.glob("*.json")):
            match = _FILE_NAME.match(path.name)
            if match is None:
                raise ValueError(f"schema file name {path.name!r} is not <Type>.v<N>.json")
            schema = json.loads(path.read_text())
            registry.add_schema(match["type"], int(match["version"]), schema)
        return registry

    def add_schema(self, type_: str, version: int, schema: Mapping[str, Any]) -> None:
        """Register one schema (checked against the JSON Schema meta-schema)."""
        Draft202012Validator.check_schema(schema)
        self.validators[(type_, version)] = Draft202012Validator(schema)
        self.fast[(type_, version)] = jsonschema_rs.Draft202012Validator(dict(schema))
        self._newest[type_] = max(version, self._newest.get(type_, version))

    def add_upcaster(self, type_: str, from_version: int, upcaster: Upcaster) -> None:
        """Register the step that turns a ``from_version`` payload into ``from_version + 1``."""
        self.upcasters[(type_, from_version)] = upcaster

    @property
    def types(self) -> frozenset[str]:
        """Every event type that has at least one schema."""
        return frozenset(self._newest)

    def knows_type(self, type_: str) -> bool:
        """Whether any version of ``type_`` has a schema (cheaper than ``in types``)."""
        return type_ in self._newest

    def current_version(self, type_: str) -> int:
        """The newest version of a type (the one this code produces and folds)."""
        version = self._newest.get(type_)
        if version is None:
            raise UnknownEventType(f"unknown event type {type_!r}")
        return version

    def is_known(self, event: Event) -> bool:
        """Whether this code can read the event (its type and version have a schema)."""
        return (event.type, event.version) in self.validators

    def validate(self, event: Event) -> None:
        """Check the payload against the schema of the event's own version.

        Raises:
            UnknownEventType: no schema for this type and version.
            SchemaViolation: the payload does not match; the message names the field.
        """
        key = (event.type, event.version)
        fast = self.fast.get(key)
        if fast is None:
            raise UnknownEventType(f"no schema for {event.type} v{event.version}")
        payload = dict(event.payload)
        if fast.is_valid(payload):
            return
        error = best_match(self.validators[key].iter_errors(payload))
        if error is None:  # the two implementations disagree: trust the stricter one
            messages = [e.message for e in fast.iter_errors(payload)]
            raise SchemaViolation(f"{event.type} v{event.version}: {'; '.join(messages)}")
        where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
        raise SchemaViolation(f"{event.type} v{event.version} at {where}: {error.message}")

    def upcast(self, event: Event) -> Event:
        """Bring an event to the newest version of its type, one step at a time.

        Raises:
            UnknownEventType: a step between its version and the newest is missing.
        """
        target = self.current_version(event.type)
        if event.version == target:
            return event
        while event.version < target:
            step = self.upcasters.get((event.type, event.version))
            if step is None:
                raise UnknownEventType(
                    f"no upcaster for {event.type} v{event.version} -> v{event.version + 1}"
                )
            event = event.with_payload(step(event.payload), event.version + 1)
        return event

    def examples(self) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """Every example payload that the schemas carry (for tests and docs)."""
        for (type_, version), validator in sorted(self.validators.items()):
            schema = validator.schema
            examples = schema.get("examples", []) if isinstance(schema, dict) else []
            for example in examples:
                yield type_, version, example


@cache
def default_registry() -> EventRegistry:
    """The registry of the schemas shipped in ``schemas/events`` (loaded once)."""
    return EventRegistry.from_directory()
