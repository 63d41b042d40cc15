"""Capture a real job history as a replay fixture (``tests/fixtures/replay/*.json``).

``python -m tests.support.capture_history OUT.json [--fail-task N] [--ntasks N]`` runs one
SHIELD-HIT12A job through the real runner (the stand-in simulator, the test broker, a real
projector on SQLite), then writes the job's records as they are in the log and the state
the projector stored for it. The fixture records which commit produced it, so a stream
written by an older release stays in the repository as that release wrote it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
from pathlib import Path

from devstack import kafka_broker
from services.audit.jsonview import view_to_json
from services.contract.envelope import format_time, utc_now
from services.contract.jobs import JobState, task_seed
from services.contract.log_reader import LogReader
from services.settings import RunnerSettings
from tests.conftest import TEST_KAFKA_HOME, fresh_topics
from tests.runner.conftest import FAKE_SIMULATOR, beam, stack

ROOT = Path(__file__).resolve().parents[2]
BASE_SEED = 4242


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


async def capture(out: Path, bootstrap: str, ntasks: int, fail_task: int | None) -> None:
    kafka = await fresh_topics(bootstrap)
    os.environ.setdefault("FAKE_SIM_STEP_SECONDS", "0.02")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = RunnerSettings(
            concurrency=2, wall_time_limit=60, grace_seconds=2.0, workdir_root=work / "w",
            executables={"shieldhit": str(FAKE_SIMULATOR)},
            coordinator_group=f"{kafka.topic_prefix}-coordinator",
            worker_group=f"{kafka.topic_prefix}-workers", worker_name="capture")
        extra = "" if fail_task is None else f"FAIL {task_seed(BASE_SEED, fail_task)}\n"
        async with stack(kafka, settings, work) as st:
            job_id = await st.submit(beam(3000, extra), ntasks=ntasks, primaries=3000,
                                     base_seed=BASE_SEED)
            view = await st.wait_state(job_id, JobState.COMPLETED, JobState.FAILED,
                                       JobState.CANCELED)
        records: list[dict[str, object]] = []
        async for batch in LogReader(kafka, kafka.jobs_topic).batches():
            records.extend(json.loads(r.value) for r in batch if r.key == job_id.encode())
    failing = "" if fail_task is None else f", task {fail_task} failing"
    fixture = {
        "description": f"{ntasks}-task SHIELD-HIT12A job run by the real runner "
                       f"(stand-in simulator){failing}",
        "generated_by": f"python -m tests.support.capture_history at commit {_commit()} "
                        f"on {format_time(utc_now())[:10]}",
        "job_id": job_id,
        "events": records,
        "expected": view_to_json(view),
    }
    await asyncio.to_thread(out.write_text, json.dumps(fixture, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}: {len(records)} events, final state {view.state.value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--ntasks", type=int, default=3)
    parser.add_argument("--fail-task", type=int, default=None)
    args = parser.parse_args()
    broker = kafka_broker.start(TEST_KAFKA_HOME, jars_home=kafka_broker.default_home())
    asyncio.run(capture(args.out, broker.bootstrap, args.ntasks, args.fail_task))


if __name__ == "__main__":
    main()
