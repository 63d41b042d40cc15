"""``python -m services.audit COMMAND``: audit the read model and the log.

Commands: ``timeline``, ``as-of``, ``rebuild``, ``verify``, ``replay``, ``export``, ``import``.
Every one runs production code: timeline, as-of and replay fold with ``state.apply``
(through the contract's decoder and the projector's de-duplication rule); rebuild and
verify feed raw records to ``Projector.apply_records``. None of them writes to the
deployment's own topics: replay only reads, and import writes to the inspection log
``<prefix>.imported.jobs`` (see :mod:`services.audit.bundle`). Kafka settings come from
the ``SIMJOBS_*`` environment. Exit status: 0 success, 1 a difference or failure was
found (verify, replay, import's replay) or a refusal (rebuild into a non-empty
database), 2 usage or infrastructure error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from services.artifacts.store import ArtifactStore
from services.audit.asof import state_as_of
from services.audit.bundle import BundleError, export_bundle, import_bundle
from services.audit.jsonview import view_to_json
from services.audit.rebuild import NotEmpty, RebuildResult, rebuild
from services.audit.replay import (
    JobReplayResult,
    ReplayResults,
    load_fixture,
    replay_fixture,
    replay_read_model,
)
from services.audit.timeline import job_events, render, steps_of
from services.audit.verify import LiveModelMoving, verify
from services.contract.envelope import format_time, parse_time
from services.contract.errors import PublishFailed
from services.contract.kafka_io import EventDecoder
from services.ops.logs import setup_logging
from services.projector.readmodel import make_engine
from services.settings import KafkaSettings, LogSettings, Settings, load_settings

MAX_DIFFS_SHOWN = 200


def parser() -> argparse.ArgumentParser:
    """The command line."""
    settings_db = "SIMJOBS_DATABASE_URL"
    p = argparse.ArgumentParser(prog="python -m services.audit", description=__doc__)
    p.add_argument("--batch", type=int, default=None,
                   help="records per transaction (default: SIMJOBS_PROJECTOR_MAX_BATCH)")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("timeline", help="a job's events from Kafka and its state after each")
    t.add_argument("job_id")
    r = sub.add_parser("rebuild", help="fold the whole jobs topic into a fresh database")
    r.add_argument("--database", required=True, help="SQLAlchemy async URL of the target")
    r.add_argument("--force", action="store_true", help="wipe the target's read model first")
    v = sub.add_parser("verify", help="compare the live read model with a rebuild")
    v.add_argument("--database", default=None, help=f"live model URL (default: {settings_db})")
    v.add_argument("--job", action="append", default=None, help="only these jobs (repeatable)")
    v.add_argument("--fail-fast", action="store_true", help="stop at the first difference")
    a = sub.add_parser("as-of", help="a job's state as the log stood at a past moment")
    a.add_argument("job_id")
    a.add_argument("time", nargs="?", default=None,
                   help="ISO-8601 with a zone, e.g. 2026-12-01T10:00:00Z (default: now)")
    a.add_argument("--events", type=int, default=None,
                   help="instead (or as well): the state after the job's first N records")
    p_ = sub.add_parser("replay", help="check today's code against every stored history")
    p_.add_argument("--database", default=None,
                    help=f"read model holding the stored states (default: {settings_db})")
    p_.add_argument("--fixture", action="append", default=None, type=Path,
                    help="replay these fixture files instead of the log (repeatable)")
    p_.add_argument("--job", action="append", default=None, help="only these jobs (repeatable)")
    p_.add_argument("--fail-fast", action="store_true", help="stop at the first failure")
    e = sub.add_parser("export", help="write a job's events and artifacts to one bundle file")
    e.add_argument("job_id")
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--database", default=None,
                   help=f"read model whose state the bundle carries (default: {settings_db})")
    i = sub.add_parser("import", help="import a bundle into this deployment's inspection log")
    i.add_argument("bundle", type=Path)
    return p


def _print_rebuild(result: RebuildResult, out: TextIO) -> None:
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(result.skipped.items())) or "none"
    print(f"rebuilt {result.jobs} jobs, {result.tasks} tasks from {result.records} records "
          f"({result.applied} events applied; skipped: {skipped}) in {result.seconds:.2f} s, "
          f"{result.records_per_second:,.0f} events/s", file=out)


async def _timeline(kafka: KafkaSettings, job_id: str, out: TextIO) -> int:
    decoder = EventDecoder()
    events = await job_events(kafka, job_id, decoder)
    if not events:
        print(f"no events for job {job_id} in {kafka.jobs_topic}", file=out)
        return 1
    for line in render(list(steps_of(iter(events)))):
        print(line, file=out)
    if decoder.skipped:
        print(f"(records of the topic that could not be read, any job: "
              f"{dict(decoder.skipped)})", file=out)
    return 0


async def _rebuild(kafka: KafkaSettings, url: str, force: bool, batch: int, out: TextIO) -> int:
    engine = make_engine(url)
    try:
        result = await rebuild(kafka, engine, batch=batch, force=force)
    except NotEmpty as exc:
        print(f"refused: {exc}", file=out)
        return 1
    finally:
        await engine.dispose()
    _print_rebuild(result, out)
    return 0


async def _verify(kafka: KafkaSettings, url: str, jobs: Sequence[str] | None,
                  fail_fast: bool, batch: int, out: TextIO) -> int:
    engine = make_engine(url)
    try:
        result = await verify(kafka, engine, job_ids=jobs, fail_fast=fail_fast, batch=batch)
    finally:
        await engine.dispose()
    _print_rebuild(result.rebuild, out)
    print(f"compared up to the live offsets {dict(sorted(result.live_offsets.items()))}",
          file=out)
    c = result.comparison
    if c.equal:
        print(f"read model equals rebuild ({c.jobs} jobs, {c.tasks} tasks)", file=out)
        return 0
    diffs = c.diffs()
    for diff in diffs[:MAX_DIFFS_SHOWN]:
        print(diff.describe(), file=out)
    if len(diffs) > MAX_DIFFS_SHOWN:
        print(f"... and {len(diffs) - MAX_DIFFS_SHOWN} more", file=out)
    print(f"read model DIFFERS from rebuild: {len(diffs)} differences in "
          f"{len(c.failures)} jobs: {', '.join(sorted(c.failures))[:500]}", file=out)
    return 1


async def _as_of(kafka: KafkaSettings, job_id: str, when: str | None, events: int | None,
                 out: TextIO) -> int:
    at = parse_time(when) if when is not None else None
    result = await state_as_of(kafka, job_id, at=at, events=events)
    if result.records == 0 and result.state is None:
        print(f"no records of job {job_id} in {kafka.jobs_topic} at that point", file=out)
        return 1
    last = result.last
    print(json.dumps({
        "job_id": job_id,
        "as_of": format_time(at) if at is not None else None,
        "records": result.records,
        "last_record": None if last is None else {
            "partition": last.partition, "offset": last.offset,
            "logged_at": format_time(last.logged_at)},
        "state": view_to_json(result.state) if result.state is not None else None,
    }, indent=2), file=out)
    return 0


def _print_replay(results: ReplayResults, out: TextIO) -> int:
    def line(r: JobReplayResult) -> str:
        state = r.state.state.value if r.state is not None else "-"
        verdict = "ok" if r.failure is None else f"FAILED {type(r.failure).__name__}"
        return f"{r.job_id}: {verdict} ({r.records} records, {r.applied} applied, {state})"

    for result in results.results.values():
        print(line(result), file=out)
    failures = results.failures
    for failure in failures.values():
        print(f"  {failure}", file=out)
    print(f"replayed {len(results.results)} jobs: {len(failures)} failed", file=out)
    return 1 if failures else 0


async def _replay(kafka: KafkaSettings, settings: Settings, args: argparse.Namespace,
                  out: TextIO) -> int:
    if args.fixture:
        results = ReplayResults()
        for path in args.fixture:
            result = replay_fixture(await asyncio.to_thread(load_fixture, path))
            results.results[result.job_id] = result
            if args.fail_fast and result.failure is not None:
                break
        return _print_replay(results, out)
    engine = make_engine(args.database or settings.database.url)
    try:
        results = await replay_read_model(kafka, engine, job_ids=args.job,
                                          fail_fast=args.fail_fast)
    finally:
        await engine.dispose()
    return _print_replay(results, out)


async def _export(kafka: KafkaSettings, settings: Settings, args: argparse.Namespace,
                  out: TextIO) -> int:
    engine = make_engine(args.database or settings.database.url)
    try:
        result = await export_bundle(kafka, ArtifactStore(settings.artifacts.root),
                                     args.job_id, args.out, engine=engine)
    finally:
        await engine.dispose()
    print(f"exported job {args.job_id}: {result.events} records, {result.artifacts} "
          f"artifacts, {result.bytes} bytes to {result.path} (bundle {result.bundle_id}; "
          f"state from {result.expected_source})", file=out)
    return 0


async def _import(kafka: KafkaSettings, settings: Settings, path: Path, out: TextIO) -> int:
    result = await import_bundle(path, kafka, ArtifactStore(settings.artifacts.root))
    what = ("already imported, nothing written" if result.already_imported
            else f"{result.events_written} records and {result.artifacts_written} new "
                 "artifacts written")
    print(f"job {result.job_id} into {result.topic}: {what}", file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    prefix = result.topic.removesuffix(".jobs")
    print(f"inspect with SIMJOBS_TOPIC_PREFIX={prefix} python -m services.audit "
          f"timeline {result.job_id}", file=out)
    replay = result.replay
    if replay.failure is not None:
        print(f"replay FAILED: {replay.failure}", file=out)
        return 1
    compared = "equals the exported state" if not result.notes else "folds"
    state = replay.state.state.value if replay.state is not None else "-"
    print(f"replay ok: the imported history {compared} ({state})", file=out)
    return 0


async def run(argv: Sequence[str], kafka: KafkaSettings | None = None,
              out: TextIO | None = None, settings: Settings | None = None) -> int:
    """Run one subcommand; ``kafka`` and ``settings`` override the environment's (tests)."""
    args = parser().parse_args(list(argv))
    out = out or sys.stdout
    settings = settings or load_settings()
    kafka = kafka or settings.kafka
    batch = args.batch or settings.projector.max_batch
    try:
        if args.command == "timeline":
            return await _timeline(kafka, args.job_id, out)
        if args.command == "as-of":
            return await _as_of(kafka, args.job_id, args.time, args.events, out)
        if args.command == "rebuild":
            return await _rebuild(kafka, args.database, args.force, batch, out)
        if args.command == "replay":
            return await _replay(kafka, settings, args, out)
        if args.command == "export":
            return await _export(kafka, settings, args, out)
        if args.command == "import":
            return await _import(kafka, settings, args.bundle, out)
        return await _verify(kafka, args.database or settings.database.url, args.job,
                             args.fail_fast, batch, out)
    except (KafkaError, SQLAlchemyError, LiveModelMoving, PublishFailed, BundleError,
            OSError, RuntimeError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m services.audit``."""
    setup_logging("audit", LogSettings(format="text", level=logging.WARNING))  # a tool
    try:
        return asyncio.run(run(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:  # a SIMJOBS_* variable is malformed
        print(f"error: {exc}", file=sys.stderr)
        return 2
