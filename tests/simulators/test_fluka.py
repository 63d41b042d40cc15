"""FLUKA adapter: START and RANDOMIZ cards, rfluka's command line, .out progress, fort files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.simulators.errors import BadInput, CollectError
from services.simulators.fluka import TASK_INPUT, Fluka, fluka_seed
from tests.support.fake_rfluka import Usrbin, usrbin_bytes
from tests.support.standins import fluka_card, fluka_input, run_task, stand_in

#: Progress rows as FLUKA prints them (from YAPTIDE's FLUKA monitor).
ROW = ("     980000                 20000                 20000             1.8515483E-04   "
       "      1.0000000E+30             44182       ")
ROW_1E12 = ("              1          999999999999          999999999999         2.8598309E-04"
            "         1.0000000E+30                 0       ")


def test_input_primaries_reads_start_what1() -> None:
    assert Fluka.input_primaries(fluka_input(25000)) == 25000
    assert Fluka.input_primaries({"x.inp": fluka_card("START", "1.0E+06") + "\n"}) == 1_000_000


@pytest.mark.parametrize(("files", "message"), [
    ({"a.txt": ""}, r"no \*\.inp file"),
    ({"a.inp": fluka_card("STOP")}, "no START card"),
    ({"a.inp": fluka_card("START", "many")}, "'many' is not a number"),
    ({"a.inp": fluka_card("START", "2.5")}, "not a whole number"),
    ({"a.inp": "FREE\nSTART 100\n"}, "free-format"),
    ({"a.inp": "", "b.inp": ""}, "several"),
])
def test_input_primaries_refuses_what_fluka_would_misread(files: dict[str, str],
                                                         message: str) -> None:
    with pytest.raises(BadInput, match=message):
        Fluka.input_primaries(files)


def test_task_files_rewrite_start_and_randomiz_only() -> None:
    source = fluka_input(1000)
    files = Fluka("rfluka").task_files({**source, "table.dat": "1 2\n"}, 500, 2**31 - 5)
    assert sorted(files) == ["table.dat", TASK_INPUT]
    before, after = source["fl_sim.inp"].splitlines(), files[TASK_INPUT].splitlines()
    changed = {i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
    assert {before[i][:10].strip() for i in changed} == {"START", "RANDOMIZ"}
    assert fluka_card("START", "500.") in after
    assert fluka_card("RANDOMIZ", "1.", f"{fluka_seed(2**31 - 5)}.") in after


def test_randomiz_is_added_before_start_and_seeds_fit_fluka() -> None:
    inp = "\n".join([fluka_card("BEAM", "-0.15"), fluka_card("START", "10."),
                     fluka_card("STOP")])
    lines = Fluka("rfluka").task_files({"x.inp": inp}, 10, 0)[TASK_INPUT].splitlines()
    assert [line[:10].strip() for line in lines] == ["BEAM", "RANDOMIZ", "START", "STOP"]
    assert [fluka_seed(s) for s in (0, 899_999_998, 899_999_999, 2**31 - 1)] == \
        [1, 899_999_999, 1, 1 + (2**31 - 1) % 899_999_999]


def test_task_files_refuse_what_a_fixed_field_cannot_hold() -> None:
    with pytest.raises(BadInput, match="does not fit"):
        Fluka("rfluka").task_files(fluka_input(10**10), 10**10, 1)
    with pytest.raises(BadInput, match="reserved"):
        Fluka("rfluka").task_files({**fluka_input(10), "task.inp": ""}, 10, 1)


def test_command_is_one_rfluka_cycle_on_the_task_input() -> None:
    assert Fluka("/opt/fluka/bin/rfluka").command(Path("/w/t"), 5) == \
        ["/opt/fluka/bin/rfluka", "-M", "1", "/w/t/task.inp"]


def test_progress_rows_give_done_and_requested() -> None:
    sim = Fluka("rfluka")
    assert sim.parse_progress(ROW) == (980000, 1_000_000, None)
    assert sim.parse_progress(ROW_1E12) == (1, 10**12, None)
    for other in (" NEXT SEEDS:    1F2E3D       0       0       0       0       0",
                  "          1          2          3          4          5          6",
                  " * ======                    End of FLUKA 4-4.0 run    ====== *"):
        assert sim.parse_progress(other) is None


def test_progress_file_is_followed_where_rfluka_keeps_it(tmp_path: Path) -> None:
    sim = Fluka("rfluka")
    assert sim.progress_file(tmp_path) is None
    (tmp_path / "fluka_4242").mkdir()
    (tmp_path / "fluka_4242" / "task001.out").write_text("")
    assert sim.progress_file(tmp_path) == tmp_path / "fluka_4242" / "task001.out"
    shutil.move(tmp_path / "fluka_4242" / "task001.out", tmp_path / "task001.out")
    shutil.rmtree(tmp_path / "fluka_4242")
    assert sim.progress_file(tmp_path) == tmp_path / "task001.out"


def test_collect_reads_usrbin_files(tmp_path: Path) -> None:
    z = Usrbin("zdose", 10, 228, -21, (-5.0, -5.0, 0.0), (5.0, 5.0, 20.0), (1, 1, 4))
    rz = Usrbin("rz", 1, 228, -22, (0.0, 0.0, 0.0), (4.0, 0.0, 20.0), (2, 1, 2))
    (tmp_path / "task001_fort.21").write_bytes(usrbin_bytes("t", 700, [(z, [1., 2., 3., 4.])]))
    (tmp_path / "task001_fort.22").write_bytes(usrbin_bytes("t", 700, [(rz, [1., 2., 3., 4.])]))
    document = Fluka("rfluka").collect(tmp_path)
    assert [e["name"] for e in document["estimators"]] == ["21", "22"]
    depth, cylinder = document["estimators"]
    assert depth["metadata"]["number_of_primaries"] == "700"
    assert depth["metadata"]["title"] == "t"
    (page,) = depth["pages"]
    assert page["data"] == {"name": "DOSE", "unit": "MeV/g",  # FLUKA's GeV/g, times 1000
                            "values": [1000.0, 2000.0, 3000.0, 4000.0]}
    assert page["axis_dim1"] == {"name": "Position (Z)", "unit": "cm",
                                 "values": [2.5, 7.5, 12.5, 17.5]}
    (page,) = cylinder["pages"]
    assert page["dimensions"] == 2
    assert (page["axis_dim1"]["name"], page["axis_dim1"]["values"]) == ("Radius (R)", [1.0, 3.0])
    assert page["axis_dim2"]["name"] == "Position (Z)"
    assert page["data"]["values"] == [1000.0, 2000.0, 3000.0, 4000.0]


def test_collect_refuses_detectors_of_different_meshes_in_one_file(tmp_path: Path) -> None:
    z = Usrbin("z", 10, 228, -21, (0.0, 0.0, 0.0), (1.0, 1.0, 20.0), (1, 1, 4))
    x = Usrbin("x", 10, 228, -21, (0.0, 0.0, 0.0), (1.0, 1.0, 20.0), (1, 1, 2))
    (tmp_path / "task001_fort.21").write_bytes(
        usrbin_bytes("t", 10, [(z, [1.0] * 4), (x, [1.0] * 2)]))
    with pytest.raises(CollectError, match="does not fit the estimator's mesh"):
        Fluka("rfluka").collect(tmp_path)


def test_collect_without_outputs_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="negative, binary, unit"):
        Fluka("rfluka").collect(tmp_path)


def test_stand_in_runs_like_rfluka(tmp_path: Path) -> None:
    sim = Fluka(stand_in("fluka"))
    done = run_task(sim, fluka_input(1000), tmp_path, 600, 77)
    assert done.returncode == 0, done.stderr
    assert "Running fluka in" in done.stdout
    assert all(sim.parse_progress(line) is None for line in done.stdout.splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "task.inp", "task001.err", "task001.log", "task001.out", "task001_fort.21",
        "task001_fort.22"]
    rows = [sim.parse_progress(line)
            for line in (tmp_path / "task001.out").read_text().splitlines()]
    progress = [p for p in rows if p is not None]
    assert progress[0] == (1, 600, None) and progress[-1] == (600, 600, None)
    document = sim.collect(tmp_path)
    assert [e["metadata"]["number_of_primaries"] for e in document["estimators"]] == \
        ["600", "600"]
