"""Editor input through the real API: converted at submit, stored with the project, results in
project-output order; bad projects are 400s naming the JSON path, never a half-made job."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.api.results import in_output_order
from services.converter import convert
from tests.api.conftest import Stack, call
from tests.api.test_jobs import complete, submit, until
from tests.converter.fixtures import project, put
from tests.converter.mutations import json_values, mutated

pytestmark = pytest.mark.kafka


def body(doc: dict[str, Any], sim_type: str = "shieldhit", ntasks: int = 2,
         field: str = "input_json") -> dict[str, Any]:
    return {"sim_type": sim_type, "ntasks": ntasks, "input_type": "editor", "title": "editor",
            field: doc}


async def count_jobs(session: aiohttp.ClientSession) -> int:
    status, reply = await call(session, "GET", "/user/simulations")
    assert status == 200
    return int(reply["simulations_count"])


@pytest.mark.parametrize("sim_type", ["shieldhit", "builtin"])
async def test_editor_input_is_converted_and_stored(stack: Stack, sim_type: str) -> None:
    session = await stack.user()
    doc = project("water_phantom")
    job_id = await submit(session, body(doc, sim_type))
    status, reply = await call(session, "GET", f"/inputs?job_id={job_id}")
    assert status == 200
    stored = reply["input"]
    assert set(stored) == {"input_type", "input_json", "input_files", "number_of_all_primaries"}
    assert stored["input_type"] == "EDITOR"
    assert stored["input_json"] == doc
    assert stored["input_files"] == convert(doc, sim_type).files
    assert stored["number_of_all_primaries"] == doc["beam"]["numberOfParticles"] == 1000
    tasks = (await call(session, "GET", f"/jobs?job_id={job_id}"))[1]["job_tasks_status"]
    assert [t["requested_primaries"] for t in tasks] == [500, 500]


async def test_sim_data_is_read_like_input_json(stack: Stack) -> None:
    session = await stack.user()
    doc = project("quantities_builtin")
    job_id = await submit(session, body(doc, "builtin", field="sim_data"))
    stored = (await call(session, "GET", f"/inputs?job_id={job_id}"))[1]["input"]
    assert stored["input_json"] == doc
    assert stored["input_files"]["detect.dat"] == convert(doc, "builtin").files["detect.dat"]
    bad = put(doc, "input_json.beam.energy", "fast")
    status, reply = await call(session, "POST", "/jobs/direct", json=body(bad, "builtin",
                                                                         field="sim_data"))
    assert status == 400 and reply["path"] == "sim_data.beam.energy", reply


@pytest.mark.parametrize(("sim_type", "where", "value", "path", "fragment"), [
    ("shieldhit", "input_json.zoneManager.zones[0].materialUuid", "nope",
     "input_json.zoneManager.zones[0].materialUuid", "names no material"),
    ("builtin", "input_json.scoringManager.outputs[0].quantities[0].keyword", "AvgEnergy",
     "input_json.scoringManager.outputs[0].quantities[0].keyword", "not supported by the"),
    ("builtin", "input_json.beam.particle.id", 1, "input_json.beam.particle.id", "neutron"),
    ("shieldhit", "input_json.beam.numberOfParticles", 0, "input_json.beam.numberOfParticles",
     "number of primaries"),
    ("shieldhit", "input_json.zoneManager", [], "input_json.zoneManager", "must be an object"),
])
async def test_a_project_that_does_not_convert_is_a_400_with_its_path(
        stack: Stack, sim_type: str, where: str, value: Any, path: str, fragment: str) -> None:
    session = await stack.user()
    status, reply = await call(session, "POST", "/jobs/direct",
                               json=body(put(project("water_phantom"), where, value), sim_type))
    assert status == 400, reply
    assert reply["path"] == path and path in reply["message"]
    assert fragment in reply["message"]
    assert await count_jobs(session) == 0  # nothing was submitted


@pytest.mark.parametrize("sim_type", ["fluka", "topas", "geant4"])
async def test_editor_input_for_a_simulator_without_converter(stack: Stack,
                                                              sim_type: str) -> None:
    session = await stack.user()
    for platform in ("direct", "batch"):
        status, reply = await call(session, "POST", f"/jobs/{platform}",
                                   json=body(project("water_phantom"), sim_type))
        if platform == "batch":  # password users may not use batch at all
            assert status == 403
            continue
        assert status == 400
        assert f"sim_type &#x27;{sim_type}&#x27; cannot run editor input" in reply["message"]
        assert "shieldhit, builtin" in reply["message"]


async def test_batch_submission_converts_too(stack: Stack, realm: Any) -> None:
    session = await stack.keycloak_user(realm)
    doc = project("water_phantom")
    job_id = await submit(session, body(doc, "builtin"), platform="batch")
    stored = (await call(session, "GET", f"/inputs?job_id={job_id}"))[1]["input"]
    assert stored["input_files"] == convert(doc, "builtin").files
    bad = put(doc, "input_json.scoringManager.outputs[1].name", "z_profile")
    status, reply = await call(session, "POST", "/jobs/batch", json=body(bad, "builtin"))
    assert status == 400
    assert reply["path"] == "input_json.scoringManager.outputs[1].name"


def page(number: int, name: str, values: list[float]) -> dict[str, Any]:
    return {"metadata": {"page_number": number, "page_name": name, "page_dimension": 1},
            "dimensions": 1, "data": {"name": name, "unit": "", "values": values}}


async def test_results_come_in_project_output_order(stack: Stack) -> None:
    session = await stack.user()
    job_id = await submit(session, body(project("water_phantom"), "builtin"))
    await until(session, job_id, lambda b: True)
    # Stored as a merge leaves them: sorted by file name, plus one no output names.
    result = {"estimators": [
        {"name": "entrance", "metadata": {}, "pages": [page(0, "DoseGy", [1.0])]},
        {"name": "stray", "metadata": {}, "pages": [page(0, "Dose", [9.0])]},
        {"name": "z_profile", "metadata": {}, "pages": [page(1, "Fluence", [3.0]),
                                                        page(0, "Dose", [2.0])]}]}
    await complete(stack, session, job_id, result, per_task=500)
    status, reply = await call(session, "GET", f"/results?job_id={job_id}")
    assert status == 200
    assert [e["name"] for e in reply["estimators"]] == ["z_profile", "entrance", "stray"]
    assert [p["data"]["values"] for p in reply["estimators"][0]["pages"]] == [[2.0], [3.0]]
    status, reply = await call(session, "GET", f"/estimators?job_id={job_id}")
    assert [e["name"] for e in reply["estimators_metadata"]] == ["z_profile", "entrance",
                                                                 "stray"]
    status, reply = await call(session, "GET",
                               f"/results?job_id={job_id}&estimator_name=entrance")
    assert status == 200 and reply["pages"][0]["data"]["values"] == [1.0]


def test_in_output_order_keeps_everything() -> None:
    a, b, c, d = ({"name": n} for n in "abcd")
    assert in_output_order([a, b, c, d], ["c", "a", "x"]) == [c, a, b, d]
    assert in_output_order([a, b], []) == [a, b]
    assert in_output_order([], ["a"]) == []
    twice = [{"name": "a", "v": 1}, {"name": "a", "v": 2}]
    assert in_output_order(twice, ["a"]) == twice


# --- fuzzed editor submissions ------------------------------------------------------------

JSON_VALUES = json_values(finite=True)
_fuzz_sessions: dict[int, aiohttp.ClientSession] = {}


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_fuzzed_editor_submissions_never_5xx(stack: Stack, data: st.DataObject) -> None:
    session = _fuzz_sessions.get(id(stack))
    if session is None or session.closed:
        session = _fuzz_sessions[id(stack)] = await stack.user()
    sim_type = data.draw(st.sampled_from(["shieldhit", "builtin"]), label="sim_type")
    doc = mutated(data, ["water_phantom", "zones", "quantities_builtin", "cylinders"],
                  JSON_VALUES, most=3)
    payload = json.dumps(body(doc, sim_type))
    async with session.post("/jobs/direct", data=payload) as resp:
        reply = await resp.json(content_type=None)
        assert resp.status == 202 or 400 <= resp.status < 500, (resp.status, reply)
        event(f"HTTP {resp.status}")
        if resp.status != 202:
            assert "input_json" in reply["message"], reply
