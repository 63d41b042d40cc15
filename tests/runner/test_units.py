"""Runner parts without a broker: plug-in, registry, settings, work items, offsets, throttle."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from services.runner.work import BadWorkItem, WorkItem, task_partition
from services.runner.worker import OffsetTracker, ProgressThrottle
from services.settings import load_runner_settings
from services.simulators.base import Progress, write_task_files
from services.simulators.errors import BadInput, CollectError, SimulatorUnavailable
from services.simulators.registry import SimulatorRegistry
from services.simulators.shieldhit import ShieldHit, set_nstat
from tests.runner.conftest import FAKE_SIMULATOR, beam


def test_progress_lines_of_shieldhit() -> None:
    sim = ShieldHit("shieldhit")
    line = "Primary particle no.        300 ETR:  0 hour(s)  2 minute(s)  5 second(s)"
    assert sim.parse_progress(line) == Progress(300, None, 125)
    assert sim.parse_progress(" Requested number of primaries NSTAT      :  1000") \
        == Progress(0, 1000, None)
    assert sim.parse_progress("Primary particle no. x ETR: 0 hour(s) 0 minute(s) 1 second(s)") \
        is None
    assert sim.parse_progress("Run time: 0 hour(s) 0 minute(s) 1 second(s)") is None


def test_nstat_is_rewritten_and_other_cards_kept() -> None:
    assert set_nstat("TMAX0 150\nNSTAT   1000  -1 ! n\n", 250) == "TMAX0 150\nNSTAT   250  -1 ! n\n"
    assert set_nstat("TMAX0 150", 7) == "TMAX0 150\nNSTAT 7 0\n"


def test_task_files_and_command(tmp_path: Path) -> None:
    sim = ShieldHit("/opt/sh12a")
    files = sim.task_files(beam(1000), 333, 98765)
    assert "NSTAT 333 0" in files["beam.dat"]
    assert "RNDSEED 98765" in files["beam.dat"]  # the whole seed; -N takes it folded to 4 digits
    assert files["geo.dat"] == beam(1000)["geo.dat"]
    assert sim.command(tmp_path / "w", 98765) == ["/opt/sh12a", "-N", str(1 + 98765 % 9999),
                                                  str(tmp_path / "w")]
    with pytest.raises(BadInput, match="bad input file name"):
        sim.task_files({"beam.dat": "NSTAT 1", "../evil": ""}, 1, 1)
    with pytest.raises(BadInput, match=r"no beam\.dat"):
        sim.task_files({"geo.dat": ""}, 1, 1)
    write_task_files(tmp_path / "w", files)
    assert (tmp_path / "w" / "beam.dat").read_text() == files["beam.dat"]
    with pytest.raises(BadInput, match="bad input file name"):
        write_task_files(tmp_path / "x", {"..": ""})


def test_collect_refuses_missing_output(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="no estimator output"):
        ShieldHit("x").collect(tmp_path)
    (tmp_path / "dose_0001.bdo").write_bytes(b"xx")
    with pytest.raises(CollectError, match=r"dose_0001\.bdo cannot be read"):
        ShieldHit("x").collect(tmp_path)


def test_registry_names_the_variable_to_set() -> None:
    with pytest.raises(SimulatorUnavailable, match="set SIMJOBS_SIM_SHIELDHIT_EXE"):
        SimulatorRegistry({}).get("shieldhit")
    with pytest.raises(SimulatorUnavailable, match="no plug-in"):
        SimulatorRegistry({"mcnp": "/bin/true"}).get("mcnp")
    with pytest.raises(SimulatorUnavailable, match="not an executable"):
        SimulatorRegistry({"shieldhit": "/nonexistent/sh12a"}).get("shieldhit")
    assert isinstance(SimulatorRegistry({"shieldhit": sys.executable}).get("shieldhit"),
                      ShieldHit)


def test_runner_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMJOBS_SIM_SHIELDHIT_EXE", "/opt/sh12a")
    monkeypatch.setenv("SIMJOBS_SIM_MYSIM_EXE", "/opt/mysim")
    monkeypatch.setenv("SIMJOBS_RUNNER_CONCURRENCY", "3")
    monkeypatch.setenv("SIMJOBS_RUNNER_GRACE_SECONDS", "1.5")
    settings = load_runner_settings()
    assert settings.executables == {"shieldhit": "/opt/sh12a", "mysim": "/opt/mysim"}
    assert settings.concurrency == 3 and settings.grace_seconds == 1.5
    monkeypatch.setenv("SIMJOBS_RUNNER_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="SIMJOBS_RUNNER_CONCURRENCY"):
        load_runner_settings()


def test_work_items_round_trip_and_spread() -> None:
    item = WorkItem("j", 3, 100, 5, "shieldhit", "a" * 64, "cid")
    assert WorkItem.decode(item.encode()) == item
    with pytest.raises(BadWorkItem):
        WorkItem.decode(b'{"v": 1, "job_id": "j"}')
    with pytest.raises(BadWorkItem):
        WorkItem.decode(b"nope")
    assert len({task_partition("job", i, 4) for i in range(4)}) == 4


def test_offsets_commit_only_below_the_oldest_open_task() -> None:
    tp = TopicPartition("t", 0)
    tracker = OffsetTracker()
    for offset in (5, 6, 7):
        tracker.taken(tp, offset)
    tracker.finished(tp, 6)
    assert tracker.committable() == {tp: 5}
    tracker.finished(tp, 5)
    assert tracker.committable() == {tp: 7}
    tracker.committed[tp] = 7
    tracker.finished(tp, 7)
    assert tracker.committable() == {tp: 8}


async def test_progress_throttle_sends_growth_at_most_once_per_interval() -> None:
    sent: list[int] = []

    async def emit(simulated: int, eta: int | None) -> None:
        sent.append(simulated)

    throttle = ProgressThrottle(emit, requested=100, interval=0.2)
    await throttle.update(10, None)
    await throttle.update(20, None)   # held back
    await throttle.update(15, None)   # never backwards
    assert sent == [10]
    await asyncio.sleep(0.3)          # the held value goes out when the interval ends
    assert sent == [10, 20]
    await throttle.update(100, 0)     # the final value goes out at once
    assert sent == [10, 20, 100]
    await throttle.close()


def run_fake(workdir: Path, seed: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(FAKE_SIMULATOR), "-N", str(seed), str(workdir)],
                          capture_output=True, text=True, timeout=30,
                          env={"FAKE_SIM_STEP_SECONDS": "0", "PATH": "/usr/bin:/bin"})


def test_fake_simulator_is_deterministic_by_seed(tmp_path: Path) -> None:
    outputs = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        write_task_files(tmp_path / name, ShieldHit("x").task_files(beam(500), 500, seed))
        done = run_fake(tmp_path / name, seed)
        assert done.returncode == 0, done.stderr
        assert "Primary particle no.        500 ETR:" in done.stdout
        outputs.append(ShieldHit("x").collect(tmp_path / name))
    assert outputs[0] == outputs[1] != outputs[2]
    assert json.dumps(outputs[0]).count('"page_number"') == 1


def test_fake_simulator_fails_on_fail_card(tmp_path: Path) -> None:
    write_task_files(tmp_path / "w", ShieldHit("x").task_files(beam(100, "FAIL 5 6\n"), 100, 6))
    done = run_fake(tmp_path / "w", 6)
    assert done.returncode == 2 and "FAIL card" in done.stderr
    assert run_fake(tmp_path / "w", 7).returncode == 0
