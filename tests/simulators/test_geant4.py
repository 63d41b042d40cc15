"""Geant4 adapter: the macro's beamOn, seeds and progress; command-based scoring CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.simulators.errors import BadInput, CollectError
from services.simulators.geant4 import MAIN_MACRO, Geant4, geant4_seeds
from tests.support.standins import geant4_input, run_task, stand_in

MESH = """/score/create/boxMesh m
/score/mesh/boxSize 10. 5. 30. mm
/score/mesh/nBin 2 1 3
/score/mesh/translate/xyz 0 0 3 cm
/score/quantity/doseDeposit dose
/score/quantity/energyDeposit eDep MeV
/score/close
/run/beamOn 10
"""


def test_input_primaries_reads_beam_on() -> None:
    assert Geant4.input_primaries(geant4_input(777)) == 777
    assert Geant4.input_primaries({"only.mac": "/run/beamOn 5 # five\n"}) == 5


@pytest.mark.parametrize(("files", "message"), [
    ({"run.txt": ""}, r"no \*\.mac file"),
    ({MAIN_MACRO: "/run/initialize\n"}, "no /run/beamOn"),
    ({MAIN_MACRO: "/run/beamOn 5\n/run/beamOn 5\n"}, "2 /run/beamOn commands"),
    ({MAIN_MACRO: "/run/beamOn lots\n"}, "needs a number of events"),
    ({MAIN_MACRO: "# /run/beamOn 5\n"}, "no /run/beamOn"),
])
def test_input_primaries_refuses_what_cannot_be_split(files: dict[str, str],
                                                     message: str) -> None:
    with pytest.raises(BadInput, match=message):
        Geant4.input_primaries(files)


def test_task_files_seed_and_count_the_run() -> None:
    macro = ("/random/setSeeds 1 2\n/run/initialize\n/run/printProgress 7\n"
             "/run/beamOn 1000 x.mac\n/score/dumpQuantityToFile m dose d.csv\n")
    files = Geant4("app").task_files({"mine.mac": macro, "geometry.gdml": "<g/>"}, 300, 41)
    assert sorted(files) == ["geometry.gdml", MAIN_MACRO]
    first, second = geant4_seeds(41)
    assert files[MAIN_MACRO].splitlines() == [
        "/run/initialize", f"/random/setSeeds {first} {second}", "/run/printProgress 3",
        "/run/beamOn 300 x.mac", "/score/dumpQuantityToFile m dose d.csv"]
    assert all(0 < s < 2**31 for seed in (0, 1, 2**31 - 1) for s in geant4_seeds(seed))
    assert Geant4("/opt/app").command(Path("/w"), 41) == ["/opt/app", MAIN_MACRO]


def test_meshes_that_cannot_be_collected_are_refused_before_running() -> None:
    macro = "/score/create/cylinderMesh c\n/run/beamOn 5\n"
    with pytest.raises(BadInput, match="only box meshes"):
        Geant4("app").task_files({MAIN_MACRO: macro}, 5, 1)


def test_progress_lines_of_sequential_and_worker_run_managers() -> None:
    sim = Geant4("app")
    assert sim.parse_progress("--> Event 300 starts.") == (300, None, None)
    assert sim.parse_progress("G4WT3 > --> Event 20 starts with initial seeds (1,2).") == \
        (20, None, None)
    assert sim.parse_progress("G4WT3 > Event 20 was processed") is None
    assert sim.parse_progress("--> Event 20 starts with initial seeds (12,34).") == \
        (20, None, None)
    assert sim.parse_progress("### Run 0 starts.") is None


def test_collect_gives_values_per_primary_on_the_mesh(tmp_path: Path) -> None:
    dumps = "/score/dumpQuantityToFile m dose dose.csv\n/score/dumpAllQuantitiesToFile m all.csv\n"
    (tmp_path / MAIN_MACRO).write_text(MESH + dumps)
    rows = [f"{ix},0,{iz},{10.0 * (10 * ix + iz)},0,1" for ix in range(2) for iz in range(3)]
    block = "# primitive scorer name: {q}\n# iX, iY, iZ, total(value) [{u}], total(val^2), entry\n"
    (tmp_path / "dose.csv").write_text("# mesh name: m\n" + block.format(q="dose", u="Gy")
                                       + "\n".join(rows) + "\n")
    (tmp_path / "all.csv").write_text(
        "# mesh name: m\n" + block.format(q="dose", u="Gy") + "\n".join(rows) + "\n"
        + block.format(q="eDep", u="MeV") + "0,0,2,5.0,0,1\n")
    (estimator,) = Geant4("app").collect(tmp_path)["estimators"]
    assert estimator["name"] == "m" and estimator["metadata"]["number_of_primaries"] == "10"
    dose, dose_again, edep = estimator["pages"]
    assert dose["data"]["unit"] == "Gy/prim" and dose["dimensions"] == 2
    assert dose["data"]["values"] == [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]  # sums / 10, x fastest
    assert dose["axis_dim1"] == {"name": "Position (X)", "unit": "cm", "values": [-0.5, 0.5]}
    assert dose["axis_dim2"] == {"name": "Position (Z)", "unit": "cm", "values": [1.0, 3.0, 5.0]}
    assert dose_again["data"] == dose["data"]
    assert edep["data"]["unit"] == "MeV/prim"
    assert edep["data"]["values"] == [0.0, 0.0, 0.0, 0.0, 0.5, 0.0]
    assert [p["metadata"]["page_number"] for p in estimator["pages"]] == ["0", "1", "2"]


@pytest.mark.parametrize(("macro", "files", "message"), [
    (MESH, {}, "dumps no scoring mesh"),
    (MESH + "/score/dumpQuantityToFile n dose d.csv\n", {}, "does not create"),
    (MESH + "/score/dumpQuantityToFile m dose d.csv\n", {}, r"d\.csv cannot be read"),
    (MESH + "/score/dumpQuantityToFile m dose d.csv\n", {"d.csv": "0,0,0,1,1,1\n"},
     "data before"),
    (MESH + "/score/dumpQuantityToFile m dose d.csv\n",
     {"d.csv": "# primitive scorer name: dose\n5,0,0,1,1,1\n"}, "not a scoring row"),
    (MESH + "/score/dumpQuantityToFile m dose d.csv\n",
     {"d.csv": "# primitive scorer name: eDep\n0,0,0,1,1,1\n"}, "no block for quantity 'dose'"),
])
def test_collect_refuses_outputs_it_cannot_place(tmp_path: Path, macro: str,
                                                 files: dict[str, str], message: str) -> None:
    (tmp_path / MAIN_MACRO).write_text(macro)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(CollectError, match=message):
        Geant4("app").collect(tmp_path)


def test_stand_in_runs_like_a_geant4_application(tmp_path: Path) -> None:
    sim = Geant4(stand_in("geant4"))
    done = run_task(sim, geant4_input(1000), tmp_path, 200, 3)
    assert done.returncode == 0, done.stderr
    progress = [p for p in map(sim.parse_progress, done.stdout.splitlines()) if p is not None]
    assert [p.simulated for p in progress] == list(range(0, 200, 2))
    (estimator,) = sim.collect(tmp_path)["estimators"]
    assert [p["data"]["name"] for p in estimator["pages"]] == ["dose", "eDep"]
    assert estimator["pages"][0]["axis_dim1"]["values"][:2] == [0.25, 0.75]
