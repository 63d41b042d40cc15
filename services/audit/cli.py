"""``python -m services.audit {timeline,rebuild,verify}``: audit the read model against the log.

Every subcommand runs production code: the timeline folds with ``state.apply``; rebuild
and verify feed raw records to ``Projector.apply_records``. Kafka settings come from the
``SIMJOBS_*`` environment. Exit status: 0 success, 1 a difference was found (verify) or
a refusal (rebuild into a non-empty database), 2 usage or infrastructure error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from services.audit.rebuild import NotEmpty, RebuildResult, rebuild
from services.audit.timeline import job_events, render, steps_of
from services.audit.verify import LiveModelMoving, verify
from services.contract.kafka_io import EventDecoder
from services.projector.readmodel import make_engine
from services.settings import KafkaSettings, load_settings

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


async def run(argv: Sequence[str], kafka: KafkaSettings | None = None,
              out: TextIO | None = None) -> int:
    """Run one subcommand; ``kafka`` overrides the environment's settings (tests)."""
    args = parser().parse_args(list(argv))
    out = out or sys.stdout
    settings = load_settings()
    kafka = kafka or settings.kafka
    batch = args.batch or settings.projector.max_batch
    try:
        if args.command == "timeline":
            return await _timeline(kafka, args.job_id, out)
        if args.command == "rebuild":
            return await _rebuild(kafka, args.database, args.force, batch, out)
        return await _verify(kafka, args.database or settings.database.url, args.job,
                             args.fail_fast, batch, out)
    except (KafkaError, SQLAlchemyError, LiveModelMoving) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m services.audit``."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(run(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:  # a SIMJOBS_* variable is malformed
        print(f"error: {exc}", file=sys.stderr)
        return 2
