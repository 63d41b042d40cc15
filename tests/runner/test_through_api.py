"""The direct platform driven through the REST API: submit, follow, read the merged result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from services.api.common import ENGINE
from services.artifacts.store import ArtifactStore
from services.contract.jobs import split_primaries
from services.projector.readmodel import load_views
from services.runner.service import Runner
from services.settings import ApiSettings, KafkaSettings, RunnerSettings
from services.simulators.merge import TaskResult, merge_results
from tests.api.conftest import Stack, call, make_settings, running_stack
from tests.runner.conftest import beam

pytestmark = pytest.mark.kafka


@pytest.fixture
async def api_stack(kafka_settings: KafkaSettings, runner_settings: RunnerSettings,
                    tmp_path: Path) -> AsyncIterator[Stack]:
    settings = make_settings(kafka_settings, f"sqlite+aiosqlite:///{tmp_path / 'rm.db'}",
                             tmp_path / "state")
    runner = Runner(kafka_settings, runner_settings, ArtifactStore(settings.artifacts.root))
    async with running_stack(settings, ApiSettings(read_wait_seconds=5.0)) as stack:
        task = asyncio.create_task(runner.run())
        try:
            yield stack
        finally:
            await runner.shutdown()
            await task


async def follow(session: aiohttp.ClientSession, job_id: str, within: float = 90.0
                 ) -> list[dict[str, object]]:
    """Every status the job showed until it ended (polled through GET /jobs/direct)."""
    seen: list[dict[str, object]] = []
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        status, body = await call(session, "GET", f"/jobs/direct?job_id={job_id}")
        assert status == 200, body
        seen.append(body)
        if body["job_state"] in ("COMPLETED", "FAILED", "CANCELED"):
            return seen
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {seen[-1] if seen else None}")


@pytest.mark.parametrize("ntasks", [1, 8, 32])
async def test_submitted_job_runs_and_results_are_served_merged(
        api_stack: Stack, ntasks: int) -> None:
    total = 6401
    session = await api_stack.user()
    status, body = await call(session, "POST", "/jobs/direct", json={
        "sim_type": "shieldhit", "ntasks": ntasks, "input_type": "files",
        "input_files": beam(total), "title": f"{ntasks} tasks"})
    assert status == 202, body
    job_id = body["job_id"]

    statuses = await follow(session, job_id)
    final = statuses[-1]
    assert final["job_state"] == "COMPLETED", final
    tasks = final["job_tasks_status"]
    assert isinstance(tasks, list) and len(tasks) == ntasks
    shares = split_primaries(total, ntasks)
    assert [t["requested_primaries"] for t in tasks] == shares
    assert [t["simulated_primaries"] for t in tasks] == shares
    assert all(t["task_state"] == "COMPLETED" for t in tasks)
    for index in range(ntasks):  # what users saw of each task never went backwards
        seen = [s["job_tasks_status"][index]["simulated_primaries"]  # type: ignore[index]
                for s in statuses]
        assert seen == sorted(seen)

    status, results = await call(session, "GET", f"/results?job_id={job_id}")
    assert status == 200, results
    artifacts = ArtifactStore(api_stack.settings.artifacts.root)
    async with api_stack.app[ENGINE].connect() as conn:  # it names the merged artifact
        view = (await load_views(conn, [job_id]))[job_id]
    assert view.result_ref is not None and not view.result_partial
    merged = artifacts.get_json(view.result_ref)
    task_results = [TaskResult(t.simulated_primaries, artifacts.get_json(t.result_ref))
                    for t in view.tasks if t.result_ref is not None]
    assert len(task_results) == ntasks
    assert merged == merge_results(task_results)
    served = results["estimators"]
    assert [e["name"] for e in served] == [e["name"] for e in merged["estimators"]]
    for got, want in zip(served, merged["estimators"], strict=True):
        assert got["pages"] == want["pages"]
    if ntasks > 1:  # a merged result of several tasks carries its standard error
        assert all(v is not None for v in served[0]["pages"][0]["data"]["error"])

    status, meta = await call(session, "GET", f"/estimators?job_id={job_id}")
    assert status == 200
    assert [e["name"] for e in meta["estimators_metadata"]] == [e["name"] for e in served]
    status, logs = await call(session, "GET", f"/logfiles?job_id={job_id}")
    assert status == 200 and len(logs["logfiles"]) == ntasks
    assert all("Primary particle no." in text for text in logs["logfiles"].values())
