"""A runner stack for the tests: real Kafka, real projector (SQLite), real simulator processes.

The simulator is ``tests/support/fake_simulator.py``, configured exactly as an
operator configures the real SHIELD-HIT12A binary (``SIMJOBS_SIM_SHIELDHIT_EXE``,
here through :class:`RunnerSettings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.artifacts.store import ArtifactStore
from services.contract.envelope import Event
from services.contract.jobs import JobState
from services.contract.kafka_io import EventDecoder, EventProducer
from services.contract.log_reader import LogReader
from services.projector import readmodel as rm
from services.projector.projector import Projector
from services.projector.state import JobView
from services.runner.service import Runner
from services.settings import KafkaSettings, RunnerSettings

ROOT = Path(__file__).resolve().parents[2]
FAKE_SIMULATOR = ROOT / "tests" / "support" / "fake_simulator.py"


DETECT = """Geometry Cyl
    Name CylZ
    R 0 5 1
    Z 0 20 40
Output
    Filename z_profile.bdo
    Geo CylZ
    Quantity Dose
"""


def beam(nstat: int, extra: str = "", detect: str = DETECT) -> dict[str, str]:
    """A SHIELD-HIT12A input (the fake reads beam.dat and the Geometry/Output of detect.dat)."""
    text = f"RNDSEED 89736501\nJPART0 2\nTMAX0 150.0 0.0\nNSTAT {nstat} 0 ! primaries\n{extra}"
    return {"beam.dat": text, "geo.dat": "geometry\n", "mat.dat": "materials\n",
            "detect.dat": detect}


def fake_simulator_exe(directory: Path) -> str:
    """The stand-in, as an executable in ``directory`` that starts this interpreter directly.

    Its own ``#!/usr/bin/env python3`` may go through a version manager's shim (pyenv's
    costs ~0.5 s per start), which would make every task of every test that much slower.
    The launcher keeps ``fake_simulator`` in the command line, which the tests look for.
    """
    mode = FAKE_SIMULATOR.stat().st_mode
    if not mode & stat.S_IXUSR:
        FAKE_SIMULATOR.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    launcher = directory / "bin" / "fake_simulator"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(f"#!{sys.executable}\nimport runpy\n"
                        f"runpy.run_path({str(FAKE_SIMULATOR)!r}, run_name='__main__')\n")
    launcher.chmod(0o755)
    return str(launcher)


@pytest.fixture
def fake_exe(tmp_path: Path) -> str:
    return fake_simulator_exe(tmp_path)


@pytest.fixture
def runner_settings(tmp_path: Path, kafka_settings: KafkaSettings, fake_exe: str,
                    monkeypatch: pytest.MonkeyPatch) -> RunnerSettings:
    monkeypatch.setenv("FAKE_SIM_STEP_SECONDS", "0.05")
    prefix = kafka_settings.topic_prefix
    return RunnerSettings(
        concurrency=4, wall_time_limit=60, grace_seconds=2.0, workdir_root=tmp_path / "work",
        executables={"shieldhit": fake_exe}, coordinator_group=f"{prefix}-coordinator",
        worker_group=f"{prefix}-workers", worker_name="test-runner")


@dataclass
class Stack:
    kafka: KafkaSettings
    artifacts: ArtifactStore
    engine: AsyncEngine
    producer: EventProducer
    runner: Runner | None
    submitted: dict[str, Event] = field(default_factory=dict)

    async def submit(self, files: dict[str, str], *, ntasks: int, primaries: int,
                     sim_type: str = "shieldhit", base_seed: int = 4242) -> str:
        """Store the input and publish JobSubmitted as the API does."""
        input_ref = self.artifacts.put_json({"input_type": "FILES", "input_files": files,
                                             "number_of_all_primaries": primaries})
        job_id = f"20261128-000000-{uuid.uuid4()}DIRECT"
        event = Event(type="JobSubmitted", job_id=job_id, producer="test", payload={
            "owner": "u:test", "title": "runner test", "sim_type": sim_type,
            "platform": "direct", "input_type": "files", "ntasks": ntasks,
            "number_of_all_primaries": primaries, "base_seed": base_seed,
            "input_ref": input_ref})
        await self.producer.publish(event)
        self.submitted[job_id] = event
        return job_id

    async def cancel(self, job_id: str) -> None:
        await self.producer.publish(Event(type="CancelRequested", job_id=job_id,
                                          producer="test", payload={"requested_by": "u:test"}))

    async def view(self, job_id: str) -> JobView | None:
        try:
            async with self.engine.connect() as conn:
                return (await rm.load_views(conn, [job_id])).get(job_id)
        except SQLAlchemyError:  # the projector has not created its tables yet
            return None

    async def wait_state(self, job_id: str, *states: JobState,
                         within: float = 60.0) -> JobView:
        """The job as the read model shows it once it is in one of ``states``."""
        deadline = asyncio.get_running_loop().time() + within
        view = None
        while asyncio.get_running_loop().time() < deadline:
            view = await self.view(job_id)
            if view is not None and view.state in states:
                return view
            await asyncio.sleep(0.1)
        raise AssertionError(f"job {job_id} not in {states} after {within}s: "
                             f"{view.state if view else None}")

    async def events(self, job_id: str) -> list[Event]:
        """Every event of a job in log order (each checked against its schema)."""
        decoder = EventDecoder(validate=True)
        found = []
        async for records in LogReader(self.kafka, self.kafka.jobs_topic).batches():
            for record in records:
                event = decoder.decode(record.value)
                if event is not None and event.job_id == job_id:
                    found.append(event)
        assert not decoder.skipped, decoder.skipped
        return found

    async def wait_events(self, job_id: str, predicate: Callable[[list[Event]], bool],
                          within: float = 30.0) -> list[Event]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            events = await self.events(job_id)
            if predicate(events):
                return events
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"events of {job_id} never matched: "
                                     f"{[e.type for e in events]}")
            await asyncio.sleep(0.2)


def of_type(events: list[Event], type: str) -> list[Event]:
    """Events of one type, each id once (a retried step may write an event twice)."""
    seen: dict[str, Event] = {}
    for e in events:
        if e.type == type:
            seen.setdefault(e.event_id, e)
    return list(seen.values())


@contextlib.asynccontextmanager
async def stack(kafka: KafkaSettings, settings: RunnerSettings | None, tmp_path: Path,
                artifacts_dir: Path | None = None) -> AsyncIterator[Stack]:
    """Projector on SQLite, plus (unless ``settings`` is None) an in-process runner."""
    artifacts = ArtifactStore(artifacts_dir or tmp_path / "artifacts")
    engine = rm.make_engine(f"sqlite+aiosqlite:///{tmp_path / f'rm-{uuid.uuid4().hex[:6]}.db'}")
    projector = Projector(kafka, engine, group_id=f"{kafka.topic_prefix}-projector")
    runner = Runner(kafka, settings, artifacts) if settings is not None else None
    tasks = [asyncio.create_task(projector.run())]
    if runner is not None:
        tasks.append(asyncio.create_task(runner.run()))
    try:
        async with EventProducer(kafka) as producer:
            yield Stack(kafka, artifacts, engine, producer, runner)
    finally:
        await projector.shutdown()
        if runner is not None:
            await runner.shutdown()
        await asyncio.gather(*tasks)
        await engine.dispose()


def with_(settings: RunnerSettings, **changes: Any) -> RunnerSettings:
    return replace(settings, **changes)


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _commands_under(root: Path) -> dict[int, list[bytes]]:
    found = {}
    marker = str(root).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline and b"fake_simulator" in cmdline and alive(int(entry.name)):
            found[int(entry.name)] = cmdline.split(b"\0")
    return found


def processes_under(root: Path) -> list[int]:
    """Live processes whose command line names a path under ``root`` (fake simulators,
    their helpers, and launchers such as a pyenv shim on the way to exec them)."""
    return sorted(_commands_under(root))


def simulators(root: Path) -> list[int]:
    """The fake simulators themselves (not their launchers, not their helpers)."""
    return sorted(pid for pid, argv in _commands_under(root).items()
                  if b"--helper" not in argv and not any(a.endswith(b"launcher.py")
                                                          for a in argv))


def helpers(root: Path) -> list[int]:
    """The fake simulators' helper children (started once a simulator is set up)."""
    return sorted(pid for pid, argv in _commands_under(root).items() if b"--helper" in argv)
