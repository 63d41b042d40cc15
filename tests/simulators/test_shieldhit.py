"""SHIELD-HIT12A adapter: task files, seeds, command line, and .bdo outputs read back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from services.simulators.errors import BadInput, CollectError
from services.simulators.shieldhit import ShieldHit, bdo_core_name, seed_offset, set_rndseed
from tests.support.fake_simulator import Geometry, bdo_bytes
from tests.support.standins import run_task, shieldhit_input, stand_in


def test_seed_offsets_stay_in_the_four_digit_range() -> None:
    assert [seed_offset(s) for s in (0, 1, 9998, 9999, 2**31 - 1)] == \
        [1, 2, 9999, 1, 1 + (2**31 - 1) % 9999]
    assert all(1 <= seed_offset(s) <= 9999 for s in range(0, 2**31, 7_919_993))


def test_task_files_set_nstat_and_rndseed_and_keep_the_rest() -> None:
    sim = ShieldHit("/opt/sh12a")
    files = sim.task_files(shieldhit_input(1000), 334, 2_000_000_001)
    beam = files["beam.dat"].splitlines()
    assert "NSTAT      334  -1  ! primaries, save at the end" in beam
    assert "RNDSEED    2000000001" in beam and len([b for b in beam if "RNDSEED" in b]) == 1
    assert {k: v for k, v in files.items() if k != "beam.dat"} == \
        {k: v for k, v in shieldhit_input(1000).items() if k != "beam.dat"}
    assert set_rndseed("NSTAT 5\n", 7) == "NSTAT 5\nRNDSEED 7\n"
    assert sim.command(Path("/w"), 2_000_000_001) == \
        ["/opt/sh12a", "-N", str(seed_offset(2_000_000_001)), "/w"]


@pytest.mark.parametrize(("files", "message"), [
    ({"geo.dat": ""}, r"no beam\.dat"),
    ({"beam.dat": "TMAX0 150\n"}, "no NSTAT card"),
    ({"beam.dat": "NSTAT\n"}, "has no value"),
    ({"beam.dat": "NSTAT lots 0\n"}, "'lots' is not a number"),
    ({"beam.dat": "NSTAT 2.5 0\n"}, "not a whole number"),
    ({"beam.dat": "NSTAT 1e400\n"}, "not a whole number"),
])
def test_input_primaries_refuses_what_shieldhit_would_misread(files: dict[str, str],
                                                             message: str) -> None:
    with pytest.raises(BadInput, match=message):
        ShieldHit.input_primaries(files)


def test_input_primaries_reads_nstat() -> None:
    assert ShieldHit.input_primaries(shieldhit_input(12345)) == 12345
    assert ShieldHit.input_primaries({"beam.dat": "! NSTAT 5\nnstat 1.0e3 0 ! n\n"}) == 1000


def test_collect_reads_bdo_pages_per_primary_with_axes(tmp_path: Path) -> None:
    cyl = Geometry("CYL", "CylZ", [0.0, 0.0, 0.0], [5.0, 2 * math.pi, 20.0], [1, 1, 4])
    sums = [1000.0 * v for v in (1.0, 2.0, 3.0, 4.0)]
    let = [5.0, 6.0, 7.0, 8.0]  # stored per primary (page_normalized 3)
    (tmp_path / "z_profile_0042.bdo").write_bytes(
        bdo_bytes(cyl, ["dose", "fluence", "dlet"], [sums, sums, let], nstat=1000))
    mesh = Geometry("MSH", "YZ", [-1.0, -2.0, 0.0], [1.0, 2.0, 20.0], [1, 2, 3])
    yz = [float(i) * 500 for i in range(6)]  # Fortran order: y fastest, then z
    (tmp_path / "yz_0042.bdo").write_bytes(bdo_bytes(mesh, ["dose"], [yz], nstat=500))

    document = ShieldHit("x").collect(tmp_path)
    by_name = {e["name"]: e for e in document["estimators"]}
    assert sorted(by_name) == ["yz", "z_profile"]
    z_profile = by_name["z_profile"]
    assert z_profile["metadata"]["number_of_primaries"] == "1000"
    assert z_profile["metadata"]["geotyp"] == "CYL"
    dose, fluence, dlet = z_profile["pages"]
    assert dose["dimensions"] == 1
    assert dose["data"] == {"name": "DOSE", "unit": "MeV/g/prim", "values": [1.0, 2.0, 3.0, 4.0]}
    assert fluence["data"]["unit"] == "/cm^2/prim"
    assert dlet["data"]["values"] == let and dlet["metadata"]["page_normalized"] == "3"
    assert [p["metadata"]["page_number"] for p in z_profile["pages"]] == ["0", "1", "2"]
    assert dose["axis_dim1"] == {"name": "Position (Z)", "unit": "cm",
                                 "values": [2.5, 7.5, 12.5, 17.5]}
    (page,) = by_name["yz"]["pages"]
    assert page["dimensions"] == 2
    assert page["axis_dim1"]["name"] == "Position (Y)" and page["axis_dim1"]["values"] == \
        [-1.0, 1.0]
    assert page["axis_dim2"]["name"] == "Position (Z)"
    assert page["data"]["values"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    json.dumps(document, allow_nan=False)  # valid JSON for the API's clients


def test_collect_keeps_json_estimators_and_refuses_nothing_or_junk(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="no estimator output"):
        ShieldHit("x").collect(tmp_path)
    estimator = {"name": "tool", "pages": [{"data": {"values": [1.0]}}]}
    (tmp_path / "tool_0042.json").write_text(json.dumps(estimator))
    (tmp_path / "info.json").write_text("{'version': 'a Python repr, as the converter writes'}")
    assert ShieldHit("x").collect(tmp_path) == {"estimators": [estimator]}
    (tmp_path / "broken_0001.bdo").write_bytes(b"xSH12A" + b"\0" * 30)
    with pytest.raises(CollectError, match=r"broken_0001\.bdo"):
        ShieldHit("x").collect(tmp_path)


def test_core_names_strip_the_seed_suffix() -> None:
    assert [bdo_core_name(Path(n)) for n in ("z_profile_0042.bdo", "peak0001.bdo", "dose.bdo",
                                             "a_123.bdo")] == ["z_profile", "peak", "dose",
                                                               "a_123"]


def test_stand_in_writes_bdo_files_pymchelper_reads(tmp_path: Path) -> None:
    sim = ShieldHit(stand_in("shieldhit"))
    seed = 1_234_567_891
    done = run_task(sim, shieldhit_input(800), tmp_path, 800, seed)
    assert done.returncode == 0, done.stderr
    offset = seed_offset(seed)
    assert sorted(p.name for p in tmp_path.glob("*.bdo")) == \
        [f"yz_profile_{offset:04d}.bdo", f"z_profile_{offset:04d}.bdo"]
    assert (tmp_path / f"shieldhit_{offset:04d}.log").read_text() == done.stdout
    progress = [sim.parse_progress(line) for line in done.stdout.splitlines()]
    assert [p.simulated for p in progress if p is not None] == \
        [0, *range(80, 801, 80)]
    document = sim.collect(tmp_path)
    z_profile = next(e for e in document["estimators"] if e["name"] == "z_profile")
    assert [p["data"]["name"] for p in z_profile["pages"]] == ["DOSE", "FLUENCE", "DLET"]
    dose = z_profile["pages"][0]["data"]["values"]
    assert len(dose) == 40 and max(dose) > 3.0  # the Bragg peak of the stand-in's profile
