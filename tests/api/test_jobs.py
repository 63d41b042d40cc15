"""Submit, status, cancel, worker updates, listing, deletion, results: on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack import postgres
from services.api.auth import SECRETS, mint_update_key
from services.api.common import ARTIFACTS, PRODUCER
from services.api.jobs import batch_options
from services.contract.envelope import Event
from services.settings import ApiSettings
from tests.api.conftest import Realm, Stack, call
from tests.converter.fixtures import project
from tests.support.standins import INPUTS

pytestmark = pytest.mark.kafka

JOB_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"
                    r"(DIRECT|BATCH)$")
MISSING = "20000101-000000-00000000-0000-4000-8000-000000000000DIRECT"
BEAM = "RNDSEED 89736\nJPART0 2\nTMAX0 150.0 1.5\nNSTAT   1000 -1 ! primaries\n"
FILES = {"beam.dat": BEAM, "geo.dat": "x", "mat.dat": "x", "detect.dat": "x"}
TASK_KEYS = {"task_id", "task_state", "requested_primaries", "simulated_primaries",
             "last_update_time"}


@pytest.fixture(scope="module", params=["sqlite",
                                        pytest.param("postgres", marks=pytest.mark.postgres)])
def module_db_url(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'readmodel.sqlite3'}"
    server: postgres.PostgresHandle = request.getfixturevalue("postgres_server")
    return postgres.create_database(server, f"t_{uuid.uuid4().hex[:16]}")


def editor(n: int = 100, ntasks: object = 2, **extra: Any) -> dict[str, Any]:
    doc = project("water_phantom")
    doc["beam"]["numberOfParticles"] = n
    return {"sim_type": "shieldhit", "ntasks": ntasks, "input_type": "editor", "title": "t",
            "input_json": doc, **extra}


async def submit(session: aiohttp.ClientSession, body: dict[str, Any],
                 platform: str = "direct") -> str:
    status, reply = await call(session, "POST", f"/jobs/{platform}", json=body)
    assert status == 202, reply
    assert JOB_ID.match(reply["job_id"]) and reply["job_id"].endswith(platform.upper())
    return str(reply["job_id"])


async def until(session: aiohttp.ClientSession, job_id: str, predicate: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            status, body = await call(session, "GET", f"/jobs?job_id={job_id}")
            assert status == 200
            if predicate(body):
                return dict(body)
            await asyncio.sleep(0.05)


async def test_submit_then_status_never_404(stack: Stack) -> None:
    session = await stack.user()
    job_ids = await asyncio.gather(*(submit(session, editor(n=10 + i, ntasks=3))
                                     for i in range(5)))
    for job_id in job_ids:
        status, body = await call(session, "GET", f"/jobs/direct?job_id={job_id}")
        assert status == 200
        assert set(body) == {"message", "job_state", "job_tasks_status"}
        assert body["job_state"] == "PENDING"
        tasks = body["job_tasks_status"]
        assert [t["task_id"] for t in tasks] == [1, 2, 3]
        assert all(set(t) == TASK_KEYS for t in tasks)
    status, body = await call(session, "GET", f"/inputs?job_id={job_ids[0]}")
    assert status == 200 and body["input"]["input_type"] == "EDITOR"
    assert set(body["input"]) == {"input_type", "input_json", "input_files",
                                  "number_of_all_primaries"}


async def test_files_input_and_clamping(stack: Stack) -> None:
    session = await stack.user()
    body = {"sim_type": "shieldhit", "ntasks": 0, "input_type": "files", "input_files": FILES}
    job_id = await submit(session, body)
    _, reply = await call(session, "GET", f"/inputs?job_id={job_id}")
    assert reply["input"]["number_of_all_primaries"] == 1000
    assert set(reply["input"]) == {"input_type", "input_files", "number_of_all_primaries"}
    assert len((await call(session, "GET", f"/jobs?job_id={job_id}"))[1]["job_tasks_status"]) == 1
    job_id = await submit(session, editor(n=3, ntasks=50))
    tasks = (await call(session, "GET", f"/jobs?job_id={job_id}"))[1]["job_tasks_status"]
    assert len(tasks) == 3 and sum(t["requested_primaries"] for t in tasks) == 3


@pytest.mark.parametrize(("body", "fragment"), [
    ({}, "No JSON in body"),
    ({"sim_type": "shieldhit"}, "Missing keys in JSON payload"),
    (editor(ntasks="4"), "ntasks must be an integer"),
    (editor(ntasks=2.0), "ntasks must be an integer"),
    (editor(sim_type="mcnp"), "unknown sim_type"),
    ({**editor(), "input_type": "files"}, "needs input_files"),
    ({**editor(), "input_json": None}, "needs an input_json"),
    (editor(n=0), "number of primaries"),
    ({"sim_type": "fluka", "ntasks": 1, "input_type": "files", "input_files": {"a.txt": ""}},
     "cannot find the number of primaries"),
    ({"sim_type": "shieldhit", "ntasks": 1, "input_type": "files",
      "input_files": {"beam.dat": "NSTAT lots"}}, "NSTAT value"),
    (editor(title=5), "title"),
])
async def test_submit_validation(stack: Stack, body: dict[str, Any], fragment: str) -> None:
    session = await stack.user()
    status, reply = await call(session, "POST", "/jobs/direct", json=body)
    assert status == 400 and fragment in reply["message"], reply


async def test_submit_http_errors(stack: Stack) -> None:
    session = await stack.user()
    status, reply = await call(session, "POST", "/jobs/direct", data=b"{not json")
    assert status == 400 and "could not understand" in reply["message"]
    big = editor(title="")
    big["input_json"]["pad"] = "x" * (stack.api.max_body_bytes + 10)
    assert (await call(session, "POST", "/jobs/direct", json=big))[0] == 413
    assert (await call(stack.client(), "POST", "/jobs/direct", json=editor()))[0] == 401
    assert await call(session, "POST", "/jobs/batch", json=editor()) == (
        403, {"message": "User is not allowed to use this endpoint"})


async def test_status_errors_and_privacy(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    job_id = await submit(alice, editor())
    await until(alice, job_id, lambda b: True)
    missing = await call(bob, "GET", f"/jobs/direct?job_id={MISSING}")
    assert missing == (404, {"message": "Job with provided ID does not exist"})
    for route in ("/jobs/direct", "/jobs", "/inputs", "/results", "/logfiles", "/estimators"):
        assert await call(bob, "GET", f"{route}?job_id={job_id}") == missing
    assert await call(bob, "DELETE", f"/jobs/direct?job_id={job_id}") == missing
    status, body = await call(alice, "GET", f"/jobs/direct?job_id={job_id}&foo=1")
    assert (status, body["message"]) == (400, "Wrong parameters") and body["foo"]
    assert (await call(alice, "GET", "/jobs/direct"))[0] == 400


async def test_cancel(stack: Stack, realm: Realm) -> None:
    session = await stack.user()
    job_id = await submit(session, editor())
    assert await call(session, "DELETE", f"/jobs/direct?job_id={job_id}") == (
        200, {"message": "Cancelled sucessfully"})
    status, body = await call(session, "GET", f"/jobs/direct?job_id={job_id}")
    assert body["job_state"] == "CANCELED"
    assert all(t["task_state"] == "CANCELED" and "end_time" in t
               for t in body["job_tasks_status"])
    assert await call(session, "DELETE", f"/jobs/direct?job_id={job_id}") == (
        200, {"message": "Cannot cancel job which is in CANCELED state", "job_state": "CANCELED"})
    plg = await stack.keycloak_user(realm)
    batch = await submit(plg, {**editor(), "batch_options": {
        "cluster_name": "athena", "array_options": {"time": "00:10:00"},
        "array_header": "#SBATCH --mem=2G"}}, "batch")
    status, body = await call(plg, "GET", f"/jobs/batch?job_id={batch}")
    assert status == 200 and body["job_state"] == "PENDING"
    assert (await call(plg, "GET", f"/jobs/direct?job_id={batch}"))[0] == 404
    status, body = await call(plg, "GET", "/user/simulations")
    assert body["simulations"][0]["metadata"] == {
        "platform": "BATCH", "server": "athena", "input_type": "EDITOR", "sim_type": "shieldhit"}
    assert await call(plg, "DELETE", f"/jobs/batch?job_id={batch}") == (
        200, {"message": "Job canceled"})
    status, body = await call(plg, "POST", "/jobs/batch", json={**editor(), "batch_options": {
        "cluster_name": "nowhere"}})
    assert status == 400
    status, body = await call(plg, "POST", "/jobs/batch", json={**editor(), "batch_options": {
        "array_options": {"time": "1 --wrap=rm"}}})
    assert status == 400


def test_no_clusters() -> None:
    from services.api.errors import BadRequest

    with pytest.raises(BadRequest, match="No clusters are available"):
        batch_options({}, ApiSettings(clusters=()))


async def test_worker_updates(stack: Stack) -> None:
    session = await stack.user()
    job_id = await submit(session, editor(n=100, ntasks=2))
    other = await submit(session, editor())
    key = mint_update_key(job_id, secrets=stack.app[SECRETS], ttl_seconds=600)
    worker = stack.client()

    def task(task_id: int, **update: Any) -> dict[str, Any]:
        return {"simulation_id": job_id, "task_id": task_id, "update_key": key,
                "update_dict": update}

    ok = (202, {"message": "Task updated"})
    assert await call(worker, "POST", "/tasks", json=task(
        1, task_state="RUNNING", start_time="2020-01-01 10:00:00.000000")) == ok
    assert await call(worker, "POST", "/tasks", json=task(
        1, simulated_primaries=20, estimated_time=3725)) == ok
    body = await until(session, job_id, lambda b: b["job_tasks_status"][0].get("estimated_time"))
    first = body["job_tasks_status"][0]
    assert body["job_state"] == "RUNNING" and first["simulated_primaries"] == 20
    assert first["estimated_time"] == {"hours": 1, "minutes": 2, "seconds": 5}
    assert first["start_time"] == "Wed, 01 Jan 2020 10:00:00 GMT"
    bad_key = mint_update_key(other, secrets=stack.app[SECRETS], ttl_seconds=600)
    for body_ in ({**task(1), "update_key": bad_key}, {**task(1), "update_key": "x.y.z"},
                  {**task(1), "update_key": key + "x"}):
        assert await call(worker, "POST", "/tasks", json=body_) == (
            400, {"message": "Invalid update key"})
    assert (await call(worker, "POST", "/tasks", json=task(3)))[0] == 400
    assert (await call(worker, "POST", "/tasks", json={**task(1), "extra": 1}))[0] == 400
    assert (await call(worker, "POST", "/tasks", json=task(1, task_state="DONE")))[0] == 400
    assert (await call(worker, "POST", "/tasks", json=task(1, start_time="yesterday")))[0] == 400
    job_update = {"sim_id": job_id, "update_key": key, "job_state": "MERGING_RUNNING"}
    assert await call(worker, "POST", "/jobs", json={**job_update, "job_state": "BOGUS"}) == (
        400, {"message": "Wrong data provided: unknown job_state &#x27;BOGUS&#x27;"})
    assert await call(worker, "POST", "/jobs", json={**job_update, "update_key": bad_key}) == (
        400, {"message": "Invalid update key"})
    assert await call(worker, "POST", "/jobs", json=job_update) == ok
    await until(session, job_id, lambda b: b["job_state"] == "MERGING_RUNNING")
    assert await call(worker, "POST", "/jobs", json={
        **job_update, "job_state": "FAILED", "end_time": "2030-01-01T00:00:00Z"}) == (
        400, {"message": "Wrong data provided: end_time is in the future"})
    assert await call(worker, "POST", "/jobs", json={
        **job_update, "job_state": "FAILED", "log": {"error": "boom", "stderr.txt": "trace"}}) == ok
    await until(session, job_id, lambda b: b["job_state"] == "FAILED")
    status, body = await call(session, "GET", f"/logfiles?job_id={job_id}")
    assert status == 200 and body["logfiles"]["stderr.txt"] == "trace"
    assert (await call(session, "GET", f"/logfiles?job_id={other}"))[0] == 404
    status, body = await call(worker, "POST", "/jobs", json=job_update)
    assert status == 400 and "already FAILED" in body["message"]


RESULT = {"estimators": [
    {"name": "z_profile", "metadata": {"file_corename": "z_profile"}, "pages": [
        {"metadata": {"page_number": "1", "name": "FLUENCE"}, "dimensions": 1,
         "data": {"name": "F", "unit": "", "values": [3, 4]},
         "axis_dim1": {"name": "Z", "unit": "cm", "values": [0.5, 1.5]}},
        {"metadata": {"page_number": "0", "name": "DOSE"}, "dimensions": 1,
         "data": {"name": "DOSE", "unit": "MeV/g", "values": [1, 2]},
         "axis_dim1": {"name": "Z", "unit": "cm", "values": [0.5, 1.5]}},
    ]},
    {"name": "entrance", "metadata": {}, "pages": [
        {"metadata": {"page_number": 0, "page_name": "dose"}, "dimensions": 0,
         "data": {"name": "D", "unit": "Gy", "values": [7]}}]},
]}


async def complete(stack: Stack, session: aiohttp.ClientSession, job_id: str,
                   result: dict[str, Any], per_task: int, ntasks: int = 2) -> None:
    """Complete a job as a platform does (each task's result, then the merge), and wait."""
    ref = stack.app[ARTIFACTS].put_json(result)
    events = [Event(type="TaskCompleted", job_id=job_id, producer="test",
                    payload={"task_index": i, "simulated_primaries": per_task,
                             "requested_primaries": per_task, "result_ref": ref})
              for i in range(ntasks)]
    events.append(Event(type="JobCompleted", job_id=job_id, producer="test",
                        payload={"result_ref": ref, "simulated_primaries": per_task * ntasks,
                                 "tasks_merged": ntasks}))
    await stack.app[PRODUCER].publish_many(events)
    await until(session, job_id, lambda b: b["job_state"] == "COMPLETED")


async def test_results_listing_delete(stack: Stack) -> None:
    session = await stack.user()
    job_id = await submit(session, editor(n=10, ntasks=2))
    running = await submit(session, editor())
    await until(session, job_id, lambda b: True)
    assert await call(session, "GET", f"/results?job_id={job_id}") == (
        404, {"message": "Results are unavailable"})
    await complete(stack, session, job_id, RESULT, per_task=5)
    status, body = await call(session, "GET", f"/results?job_id={job_id}")
    assert status == 200 and [e["name"] for e in body["estimators"]] == ["z_profile", "entrance"]
    assert [p["metadata"]["page_number"] for p in body["estimators"][0]["pages"]] == ["0", "1"]
    status, body = await call(session, "GET", f"/results?job_id={job_id}&estimator_name=z_profile")
    assert body["message"] == f"Estimator &#x27;z_profile&#x27; for simulation: {job_id}"
    status, body = await call(
        session, "GET", f"/results?job_id={job_id}&estimator_name=z_profile&page_numbers=0-1")
    assert body["message"] == "Pages retrieved successfully" and len(body["pages"]) == 2
    status, body = await call(
        session, "GET", f"/results?job_id={job_id}&estimator_name=z_profile&page_number=1")
    assert body["page"]["data"]["values"] == [3, 4]
    assert (await call(session, "GET", f"/results?job_id={job_id}&estimator_name=nope"))[0] == 404
    assert (await call(session, "GET", f"/results?job_id={job_id}&estimator_name=z_profile"
                                       "&page_numbers=1-x"))[0] == 400
    assert (await call(session, "GET", f"/results?job_id={job_id}&estimator_name=z_profile"
                                       "&page_number=x"))[0] == 400
    status, body = await call(session, "GET", f"/estimators?job_id={job_id}")
    assert body["estimators_metadata"] == [
        {"name": "z_profile", "pages_metadata": [
            {"page_number": 0, "page_name": "DOSE", "page_dimension": 1},
            {"page_number": 1, "page_name": "FLUENCE", "page_dimension": 1}]},
        {"name": "entrance", "pages_metadata": [
            {"page_number": 0, "page_name": "dose", "page_dimension": 0}]}]
    status, body = await call(session, "GET", "/user/simulations?job_state=COMPLETED")
    assert [s["job_id"] for s in body["simulations"]] == [job_id]
    assert body["simulations"][0]["end_time"] is not None
    # Deletion: only finished jobs, only one's own.
    assert (await call(session, "DELETE", f"/user/simulations?job_id={running}"))[0] == 403
    stranger = await stack.user()
    assert (await call(stranger, "DELETE", f"/user/simulations?job_id={job_id}"))[0] == 404
    assert (await call(session, "DELETE", "/user/simulations"))[0] == 400
    assert (await call(session, "DELETE", f"/user/simulations?job_id={job_id}"))[0] == 200
    assert (await call(session, "GET", f"/jobs?job_id={job_id}"))[0] == 404
    assert (await call(session, "GET", "/user/simulations"))[1]["simulations_count"] == 1


async def test_pagination(stack: Stack) -> None:
    session = await stack.user()
    ids = [await submit(session, editor(title=f"job {i}")) for i in range(7)]
    for job_id in ids:
        await until(session, job_id, lambda b: True)
    _, body = await call(session, "GET", "/user/simulations")
    assert (body["simulations_count"], body["page_count"], len(body["simulations"])) == (7, 2, 6)
    assert [s["job_id"] for s in body["simulations"]] == ids[::-1][:6]
    _, body = await call(session, "GET",
                              "/user/simulations?page_size=3&page_idx=1&order_type=descend")
    assert body["page_count"] == 3 and [s["job_id"] for s in body["simulations"]] == ids[::-1][:3]
    _status, body = await call(session, "GET",
                              "/user/simulations?page_size=3&page_idx=3&order_type=ascend")
    assert [s["job_id"] for s in body["simulations"]] == [ids[-1]]
    _, body = await call(session, "GET", "/user/simulations?page_idx=9")
    assert body["simulations"] == []
    for bad in ("page_size=x", "order_by=title", "job_state=DONE", "job_state=", "foo=1"):
        assert (await call(session, "GET", f"/user/simulations?{bad}"))[0] == 400


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({}, optional={
        "sim_type": st.sampled_from(["shieldhit", "fluka", "topas", "x"]) | json_values,
        "ntasks": st.integers(-5, 20_000) | json_values,
        "input_type": st.sampled_from(["editor", "files"]) | json_values,
        "input_json": st.fixed_dictionaries({"beam": st.fixed_dictionaries(
            {}, optional={"numberOfParticles": json_values | st.integers(-3, 10**6)})})
        | json_values,
        "input_files": st.dictionaries(st.sampled_from(["beam.dat", "a.inp", "/x", ""]),
                                       st.sampled_from(["NSTAT 10", "START 5.", "NSTAT",
                                                        "NSTAT 1e400", "START nan"])
                                       | json_values, max_size=3) | json_values,
        "title": json_values,
        "batch_options": json_values,
    }))


_fuzz_sessions: dict[int, aiohttp.ClientSession] = {}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies)
async def test_random_bodies_never_500(stack: Stack, body: Any) -> None:
    session = _fuzz_sessions.get(id(stack))
    if session is None or session.closed:
        session = _fuzz_sessions[id(stack)] = await stack.user()
    async with session.post("/jobs/direct", data=json.dumps(body)) as resp:
        assert resp.status < 500, await resp.text()


@pytest.mark.parametrize("sim_type", sorted(INPUTS))
async def test_files_are_counted_as_their_simulator_reads_them(stack: Stack,
                                                              sim_type: str) -> None:
    session = await stack.user()
    body = {"sim_type": sim_type, "ntasks": 3, "input_type": "files",
            "input_files": INPUTS[sim_type](4242)}
    job_id = await submit(session, body)
    _, reply = await call(session, "GET", f"/inputs?job_id={job_id}")
    assert reply["input"]["number_of_all_primaries"] == 4242
    other = next(t for t in sorted(INPUTS) if t != sim_type)
    status, reply = await call(session, "POST", "/jobs/direct",
                               json={**body, "input_files": INPUTS[other](10)})
    assert status == 400
    assert reply["message"].startswith("Wrong data provided: cannot find the number of "
                                       "primaries: "), reply
