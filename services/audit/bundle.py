"""A job's whole history as one file: its records and every artifact they name.

Format (``simjobs-bundle`` version 1): UTF-8 JSON Lines, one object per line, in order:

1. ``{"kind": "header", "format": "simjobs-bundle", "version": 1, "bundle_id", "job_id",
   "exported_at", "source_topic", "events": N, "artifacts": M, "expected", "expected_source"}``:
   ``expected`` is the job's state in the exporting read model (a view as
   :mod:`services.audit.jsonview` writes it) when that model had applied every exported
   record, else null.
2. N lines ``{"kind": "event", "partition", "offset", "timestamp_ms", "value", "sha256"}``:
   one per record of the job in log order; ``value`` is the record's exact bytes as text
   (``value_b64`` instead if they are not UTF-8, null for a tombstone) and ``sha256`` their
   digest.
3. M lines ``{"kind": "artifact", "ref", "size", "data"}``: every artifact an event names
   (any payload key ending in ``_ref`` holding a sha256: inputs, results, logs), ``data``
   in base64.
4. ``{"kind": "end", "lines": N + M + 1, "sha256"}``: the digest of all the bytes before
   this line, so a truncated or edited file is refused.

Hashes are checked on export (the artifact store checks every read) and again on import
(each record's digest, each artifact's address, the whole file's digest).

Import writes into an *inspection* log, never into the deployment's own: the records go
to the jobs topic of the prefix ``<prefix>.imported`` (``<prefix>.imported.jobs``), which
no runner, coordinator, SLURM bridge or projector of the deployment consumes (they read
``<prefix>.jobs`` and ``<prefix>.tasks`` only), so an imported job is never scheduled, run,
canceled or shown to the deployment's users. Every audit tool reads it with
``SIMJOBS_TOPIC_PREFIX=<prefix>.imported``. Imported records keep their exact bytes and
carry headers naming their source topic, partition, offset and log time and the bundle
id. Importing the same bundle again writes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.artifacts.store import ArtifactError, ArtifactStore, digest
from services.audit import history as h
from services.audit.history import JobRecord, job_records
from services.audit.jsonview import view_from_json, view_to_json
from services.audit.replay import JobReplayResult, replay_history
from services.contract.envelope import decode, format_time, utc_now
from services.contract.errors import MalformedEvent
from services.contract.kafka_io import EventProducer
from services.contract.topics import ensure_topics
from services.projector import readmodel as rm
from services.projector.projector import PROJECTION
from services.projector.state import JobView
from services.settings import KafkaSettings

FORMAT = "simjobs-bundle"
VERSION = 1
INSPECTION_SUFFIX = ".imported"
_HASH = re.compile(r"^[0-9a-f]{64}$")


class BundleError(Exception):
    """A bundle cannot be made or read."""


class MissingArtifact(BundleError):
    """An event names an artifact the store does not have, or has corrupted."""


class BundleCorrupted(BundleError):
    """A bundle file that is not what its own digests say (truncated, edited, not a bundle)."""


def inspection_settings(kafka: KafkaSettings) -> KafkaSettings:
    """The inspection log of a deployment: where its imports go (see the module docstring)."""
    return kafka.with_prefix(kafka.topic_prefix + INSPECTION_SUFFIX)


def artifact_refs(payload: Any) -> Iterator[str]:
    """Every content address a payload names (keys ending in ``_ref``, at any depth)."""
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            if isinstance(key, str) and key.endswith("_ref") and isinstance(value, str) \
                    and _HASH.match(value):
                yield value
            else:
                yield from artifact_refs(value)
    elif isinstance(payload, list):
        for item in payload:
            yield from artifact_refs(item)


def _refs_of(value: bytes | None) -> list[str]:
    if value is None:
        return []
    try:
        return list(artifact_refs(dict(decode(value).payload)))
    except MalformedEvent:
        return []  # an unreadable record names nothing we could follow


@dataclass
class Bundle:
    """A bundle's contents, read and verified."""

    bundle_id: str
    job_id: str
    source_topic: str
    exported_at: str
    records: list[JobRecord]
    artifacts: dict[str, bytes]
    expected: JobView | None
    expected_source: str


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    bundle_id: str
    events: int
    artifacts: int
    bytes: int
    expected_source: str


async def _expected_state(engine: AsyncEngine | None, topic: str, job_id: str,
                          records: list[JobRecord]) -> tuple[JobView | None, str]:
    """The read model's view of the job, if the model has applied every exported record."""
    if engine is None:
        return None, "none (no read model given)"
    async with engine.connect() as conn:
        offsets = await rm.load_offsets(conn, PROJECTION, topic)
        view = (await rm.load_views(conn, [job_id])).get(job_id)
    if records and offsets.get(records[-1].partition, -1) < records[-1].offset:
        return None, "none (the read model had not applied every record yet)"
    if view is None:
        return None, "none (the read model has no such job)"
    return view, f"read model {engine.url.render_as_string(hide_password=True)}"


def _write_line(out: IO[bytes], hasher: Any, obj: Mapping[str, Any]) -> int:
    line = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    hasher.update(line)
    out.write(line)
    return len(line)


def _event_line(record: JobRecord) -> dict[str, Any]:
    line: dict[str, Any] = {"kind": "event", "partition": record.partition,
                            "offset": record.offset, "timestamp_ms": record.timestamp_ms}
    if record.value is None:
        line.update(value=None, sha256=None)
        return line
    try:
        line["value"] = record.value.decode()
    except UnicodeDecodeError:
        line["value_b64"] = base64.b64encode(record.value).decode()
    line["sha256"] = digest(record.value)
    return line


async def export_bundle(kafka: KafkaSettings, store: ArtifactStore, job_id: str, out: Path,
                        *, engine: AsyncEngine | None = None,
                        topic: str | None = None) -> ExportResult:
    """Write ``job_id``'s history and artifacts to ``out`` (see the module docstring).

    Raises:
        BundleError: the job has no records in the log.
        MissingArtifact: an artifact an event names is missing or corrupted.
        aiokafka.errors.KafkaError: the cluster is unreachable.
    """
    source = topic or kafka.jobs_topic
    records = await job_records(kafka, job_id, topic=source)
    if not records:
        raise BundleError(f"no records of job {job_id} in {source}")
    refs = list(dict.fromkeys(r for record in records for r in _refs_of(record.value)))
    artifacts: dict[str, bytes] = {}
    for ref in refs:
        try:
            artifacts[ref] = await store.aget_bytes(ref)  # the store checks the hash
        except ArtifactError as exc:
            raise MissingArtifact(f"job {job_id}: {exc}") from exc
    expected, expected_source = await _expected_state(engine, source, job_id, records)
    bundle_id = str(uuid.uuid4())
    header = {"kind": "header", "format": FORMAT, "version": VERSION, "bundle_id": bundle_id,
              "job_id": job_id, "exported_at": format_time(utc_now()), "source_topic": source,
              "events": len(records), "artifacts": len(artifacts),
              "expected": view_to_json(expected) if expected is not None else None,
              "expected_source": expected_source}

    def write() -> int:
        hasher = hashlib.sha256()
        tmp = out.with_name(out.name + ".partial")
        size = 0
        with tmp.open("wb") as handle:
            size += _write_line(handle, hasher, header)
            for record in records:
                size += _write_line(handle, hasher, _event_line(record))
            for ref, data in artifacts.items():
                size += _write_line(handle, hasher, {
                    "kind": "artifact", "ref": ref, "size": len(data),
                    "data": base64.b64encode(data).decode()})
            end = {"kind": "end", "lines": 1 + len(records) + len(artifacts),
                   "sha256": hasher.hexdigest()}
            size += _write_line(handle, hashlib.sha256(), end)
        tmp.replace(out)
        return size

    size = await asyncio.to_thread(write)
    return ExportResult(out, bundle_id, len(records), len(artifacts), size, expected_source)


def _record_of(line: Mapping[str, Any], n: int) -> JobRecord:
    if "value_b64" in line:
        value: bytes | None = base64.b64decode(line["value_b64"], validate=True)
    elif line["value"] is None:
        value = None
    else:
        value = str(line["value"]).encode()
    if value is not None and digest(value) != line["sha256"]:
        raise BundleCorrupted(f"line {n}: the record's bytes do not match its sha256")
    return JobRecord(int(line["partition"]), int(line["offset"]), int(line["timestamp_ms"]),
                     value)


def read_bundle(path: Path) -> Bundle:
    """Read a bundle file and check every digest in it.

    Raises:
        BundleCorrupted: not a bundle, or a digest, a count or an address does not match.
        OSError: the file cannot be read.
    """
    hasher = hashlib.sha256()
    header: dict[str, Any] | None = None
    records: list[JobRecord] = []
    artifacts: dict[str, bytes] = {}
    end: dict[str, Any] | None = None
    lines = 0
    with path.open("rb") as handle:
        for n, raw in enumerate(handle, start=1):
            if end is not None:
                raise BundleCorrupted(f"line {n}: data after the end line")
            try:
                line = json.loads(raw)
                kind = line["kind"]
                if kind == "end":
                    end = line
                    continue
                hasher.update(raw)
                lines += 1
                if n == 1:
                    if kind != "header" or line.get("format") != FORMAT:
                        raise BundleCorrupted(f"{path} is not a {FORMAT} file")
                    if line.get("version") != VERSION:
                        raise BundleCorrupted(f"{FORMAT} version {line.get('version')} is "
                                              f"not readable by this code (knows {VERSION})")
                    header = line
                elif kind == "event":
                    records.append(_record_of(line, n))
                elif kind == "artifact":
                    data = base64.b64decode(line["data"], validate=True)
                    if digest(data) != line["ref"] or len(data) != line["size"]:
                        raise BundleCorrupted(f"line {n}: artifact {line['ref']} does not "
                                              "match its address")
                    artifacts[line["ref"]] = data
                else:
                    raise BundleCorrupted(f"line {n}: unknown kind {kind!r}")
            except (ValueError, KeyError, TypeError) as exc:
                raise BundleCorrupted(f"line {n} of {path} is not a bundle line: {exc}") \
                    from exc
    if header is None or end is None:
        raise BundleCorrupted(f"{path} is truncated (no {'header' if header is None else 'end'})")
    if end.get("sha256") != hasher.hexdigest() or end.get("lines") != lines:
        raise BundleCorrupted(f"{path}: the contents do not match the end line's digest")
    if len(records) != header["events"] or len(artifacts) != header["artifacts"]:
        raise BundleCorrupted(f"{path}: the header's counts do not match the contents")
    expected = view_from_json(header["expected"]) if header["expected"] is not None else None
    return Bundle(header["bundle_id"], header["job_id"], header["source_topic"],
                  header["exported_at"], records, artifacts, expected,
                  header["expected_source"])


@dataclass
class ImportResult:
    """What an import wrote, and how the imported history replays."""

    topic: str
    job_id: str
    events_written: int
    artifacts_written: int
    already_imported: bool
    replay: JobReplayResult
    notes: list[str] = field(default_factory=list)


def _headers(bundle: Bundle, record: JobRecord) -> list[tuple[str, bytes]]:
    return [(h.SOURCE_TOPIC, bundle.source_topic.encode()),
            (h.SOURCE_PARTITION, str(record.partition).encode()),
            (h.SOURCE_OFFSET, str(record.offset).encode()),
            (h.SOURCE_TIMESTAMP, str(record.timestamp_ms).encode()),
            (h.BUNDLE_ID, bundle.bundle_id.encode())]


async def import_bundle(path: Path, kafka: KafkaSettings, store: ArtifactStore) -> ImportResult:
    """Import a bundle into the inspection log of the deployment ``kafka`` names, then replay.

    The artifacts go into ``store`` (content-addressed, so nothing is overwritten), the
    records into ``<prefix>.imported.jobs``; the records read back from there are replayed
    with today's code against the state the bundle carries.

    Raises:
        BundleCorrupted: the file fails its checks (nothing is written then).
        aiokafka.errors.KafkaError, PublishFailed: the cluster is unreachable.
    """
    bundle = await asyncio.to_thread(read_bundle, path)
    inspection = inspection_settings(kafka)
    written = 0
    for ref, data in bundle.artifacts.items():
        existed = await asyncio.to_thread(store.exists, ref)
        if await store.aput_bytes(data) != ref:
            raise BundleCorrupted(f"artifact {ref} stored under another address")
        written += 0 if existed else 1
    await ensure_topics(inspection)  # the jobs topic's shape: kept forever, append time
    present = await job_records(inspection, bundle.job_id, topic=inspection.jobs_topic)
    already = any((key, value) == (h.BUNDLE_ID, bundle.bundle_id.encode())
                  for record in present for key, value in record.headers)
    events = 0
    if not already:
        rows = [(r.value, _headers(bundle, r)) for r in bundle.records if r.value is not None]
        async with EventProducer(inspection) as producer:
            await producer.publish_raw(rows, inspection.jobs_topic)
        events = len(rows)
        present = await job_records(inspection, bundle.job_id, topic=inspection.jobs_topic)
    replayed = replay_history(bundle.job_id, [r.value for r in present], bundle.expected)
    notes = [] if bundle.expected is not None else [
        f"the bundle carries no stored state ({bundle.expected_source}): replay only folded"]
    return ImportResult(inspection.jobs_topic, bundle.job_id, events, written, already,
                        replayed, notes)
