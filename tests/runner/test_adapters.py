"""Each simulator adapter through the real runner: real broker, projector, stand-in processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contract.jobs import JobState, split_primaries
from services.settings import KafkaSettings, RunnerSettings
from services.simulators.merge import merge_results
from services.simulators.registry import input_primaries
from tests.runner.conftest import of_type, stack, with_
from tests.runner.test_runner import task_results
from tests.support.standins import INPUTS, STEP_VARIABLES, stand_in

pytestmark = pytest.mark.kafka

S = JobState
TERMINAL = (S.COMPLETED, S.FAILED, S.CANCELED)
ESTIMATORS = {"shieldhit": ["yz_profile", "z_profile"], "fluka": ["21", "22"],
              "topas": ["dose", "edep"], "geant4": ["water"]}


@pytest.fixture
def adapter_settings(runner_settings: RunnerSettings,
                     monkeypatch: pytest.MonkeyPatch) -> RunnerSettings:
    for variable in STEP_VARIABLES.values():  # 10 steps: 1.5 s, progress is sent once a second
        monkeypatch.setenv(variable, "0.15")
    return with_(runner_settings, executables={t: stand_in(t) for t in INPUTS})


@pytest.mark.parametrize("sim_type", sorted(INPUTS))
async def test_two_task_job_completes_with_merged_result(
        kafka_settings: KafkaSettings, adapter_settings: RunnerSettings, tmp_path: Path,
        sim_type: str) -> None:
    files = INPUTS[sim_type](2001)
    total = input_primaries(sim_type, files)  # as the API reads it
    async with stack(kafka_settings, adapter_settings, tmp_path) as st:
        job_id = await st.submit(files, ntasks=2, primaries=total, sim_type=sim_type)
        view = await st.wait_state(job_id, *TERMINAL)
        assert view.state is S.COMPLETED, view.failure_reason
        events = await st.wait_events(job_id, lambda es: bool(of_type(es, "JobCompleted")))

    shares = split_primaries(total, 2)
    completed = of_type(events, "TaskCompleted")
    assert sorted(e.payload["simulated_primaries"] for e in completed) == sorted(shares)
    for index, share in enumerate(shares):
        progress = [e.payload["simulated_primaries"] for e in of_type(events, "TaskProgress")
                    if e.payload["task_index"] == index]
        assert len(progress) >= 2, f"task {index}: progress {progress}"
        assert progress == sorted(progress) and progress[-1] <= share
        if sim_type in ("shieldhit", "fluka"):  # their last progress line says all are done:
            assert progress[-1] == share        # FLUKA's only in the .out file it follows
    results = task_results(st.artifacts, completed)
    for result in results:
        assert [e["name"] for e in result.document["estimators"]] == ESTIMATORS[sim_type]
    first, second = (r.document["estimators"][0]["pages"][0]["data"]["values"] for r in results)
    assert first != second  # each task has its own seed
    (done,) = of_type(events, "JobCompleted")
    merged = st.artifacts.get_json(done.payload["result_ref"])
    assert merged == merge_results(results)
    assert merged["simulated_primaries"] == total
    page = merged["estimators"][0]["pages"][0]
    assert page["data"]["error"] is not None and len(page["data"]["values"]) > 1


@pytest.mark.parametrize("sim_type", ["fluka", "topas", "geant4"])
async def test_unconfigured_simulator_fails_at_once_naming_its_variable(
        kafka_settings: KafkaSettings, adapter_settings: RunnerSettings, tmp_path: Path,
        sim_type: str) -> None:
    others = {t: exe for t, exe in adapter_settings.executables.items() if t != sim_type}
    async with stack(kafka_settings, with_(adapter_settings, executables=others),
                     tmp_path) as st:
        job_id = await st.submit(INPUTS[sim_type](100), ntasks=2, primaries=100,
                                 sim_type=sim_type)
        view = await st.wait_state(job_id, *TERMINAL, within=20)
        events = await st.events(job_id)
    assert view.state is S.FAILED
    assert not of_type(events, "TaskStarted")
    variable = f"SIMJOBS_SIM_{sim_type.upper()}_EXE"
    assert {e.payload["reason"] for e in of_type(events, "TaskFailed")} == {
        f"simulator {sim_type!r} is not configured on this runner: set {variable} to the "
        "path of its executable"}
    assert variable in (view.failure_reason or "")


async def test_wall_time_limit_stops_a_simulator_whose_log_file_is_followed(
        kafka_settings: KafkaSettings, adapter_settings: RunnerSettings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_FLUKA_STEP_SECONDS", "1.0")
    settings = with_(adapter_settings, wall_time_limit=2.5, grace_seconds=0.5)
    async with stack(kafka_settings, settings, tmp_path) as st:
        job_id = await st.submit(INPUTS["fluka"](100), ntasks=1, primaries=100,
                                 sim_type="fluka")
        view = await st.wait_state(job_id, *TERMINAL, within=20)
        events = await st.events(job_id)
    assert view.state is S.FAILED
    (failed,) = of_type(events, "TaskFailed")
    assert failed.payload["reason"] == "wall-time limit of 2.5 s reached"
    assert failed.payload["platform_state"]["state"] == "TIMEOUT"
    progress = [e.payload["simulated_primaries"] for e in of_type(events, "TaskProgress")]
    assert progress and progress[-1] < 100  # read from the .out file until it was stopped
