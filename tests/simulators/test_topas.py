"""TOPAS adapter: histories, seed and history count in the parameter files; CSV scorers."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.simulators.errors import BadInput, CollectError
from services.simulators.topas import MAIN_FILE, Topas
from tests.support.standins import run_task, stand_in, topas_input

#: A TOPAS CSV header as TOPAS writes it for a binned scorer (TsVBinnedScorer).
HEADER = "\n".join([
    "# TOPAS Version: 3.9",
    "# Parameter File: topas_config.txt",
    "# Results for scorer: Dose",
    "# Scored in component: Phantom",
    "# X in 2 bins of 5 cm",
    "# Y in 1 bin  of 10 cm",
    "# Z in 3 bins of 2 cm",
    "# DoseToMedium ( Gy ) : Sum   Mean   Standard_Deviation   ",
]) + "\n"


def test_input_primaries_reads_the_one_source() -> None:
    assert Topas.input_primaries(topas_input(4321)) == 4321
    assert Topas.input_primaries({"run.txt": "i:so/beam/numberofhistoriesinrun = 7\n"}) == 7


@pytest.mark.parametrize(("files", "message"), [
    ({"a.inp": ""}, r"no \*\.txt file"),
    ({"a.txt": "", "b.txt": ""}, "several"),
    ({MAIN_FILE: "i:Ts/Seed = 1\n"}, "no i:So/<source>/NumberOfHistoriesInRun"),
    ({MAIN_FILE: "i:So/A/NumberOfHistoriesInRun = 5\ni:So/B/NumberOfHistoriesInRun = 5\n"},
     "several sources"),
    ({MAIN_FILE: "i:So/A/NumberOfHistoriesInRun = Tf/N/Value\n"}, "is not an integer"),
    ({MAIN_FILE: "i:So/A/NumberOfHistoriesInRun = 5\ni:Tf/NumberOfSequentialTimes = 10\n"},
     "several runs"),
])
def test_input_primaries_refuses_what_cannot_be_split(files: dict[str, str],
                                                     message: str) -> None:
    with pytest.raises(BadInput, match=message):
        Topas.input_primaries(files)


def test_task_files_set_histories_seed_and_history_count() -> None:
    files = Topas("topas").task_files(topas_input(1000), 400, 2_000_000_001)
    config = files[MAIN_FILE].splitlines()
    assert "i:So/Beam/NumberOfHistoriesInRun = 400" in config
    assert "i:Ts/Seed = 2000000001" in config and "i:Ts/Seed = 1" not in config
    assert "i:Ts/ShowHistoryCountAtInterval = 4" in config
    assert files["phantom.txt"] == topas_input(1000)["phantom.txt"]
    unchanged = [line for line in topas_input(1000)[MAIN_FILE].splitlines()
                 if "Histories" not in line and "Ts/" not in line]
    assert all(line in config for line in unchanged)


def test_task_files_add_what_is_missing_and_rename_the_main_file() -> None:
    source = {"mine.txt": 'includeFile = beam.in\nb:Ts/ShowHistoryCountOnSingleLine = "True"\n',
              "beam.in": "i:So/Beam/NumberOfHistoriesInRun = 50\n"}
    assert Topas.input_primaries(source) == 50
    files = Topas("topas").task_files(source, 20, 9)
    assert sorted(files) == ["beam.in", MAIN_FILE]
    assert files["beam.in"] == "i:So/Beam/NumberOfHistoriesInRun = 20\n"
    assert files[MAIN_FILE].splitlines() == [
        "includeFile = beam.in", 'b:Ts/ShowHistoryCountOnSingleLine = "False"',
        "i:Ts/Seed = 9", "i:Ts/ShowHistoryCountAtInterval = 1"]
    assert Topas("/opt/topas/bin/topas").command(Path("/w"), 9) == \
        ["/opt/topas/bin/topas", MAIN_FILE]


def test_progress_is_the_history_count() -> None:
    sim = Topas("topas")
    assert sim.parse_progress("Begin processing for Run: 0, History: 2500") == (2500, None, None)
    assert sim.parse_progress("2026-01-01.12:00:00  Begin processing for Run: 0, History: 7") \
        == (7, None, None)
    assert sim.parse_progress("TOPAS is exiting normally.") is None


def test_collect_reads_the_mean_column_with_x_fastest(tmp_path: Path) -> None:
    (tmp_path / MAIN_FILE).write_text("i:So/Beam/NumberOfHistoriesInRun = 100\n")
    rows = [f"{ix}, 0, {iz}, {100 * (10 * ix + iz)}, {10 * ix + iz}, 0.5"
            for ix in range(2) for iz in range(3)]  # z fastest in the file
    (tmp_path / "dose.csv").write_text(HEADER + "\n".join(rows) + "\n")
    (tmp_path / "spectrum.csv").write_text("energy,weight\n150,1\n")  # an input, not output
    (estimator,) = Topas("topas").collect(tmp_path)["estimators"]
    assert estimator["name"] == "dose"
    assert estimator["metadata"]["number_of_primaries"] == "100"
    (page,) = estimator["pages"]
    assert page["data"]["unit"] == "Gy" and page["dimensions"] == 2
    assert (page["axis_dim1"]["name"], page["axis_dim1"]["values"]) == ("X", [2.5, 7.5])
    assert (page["axis_dim2"]["name"], page["axis_dim2"]["values"]) == ("Z", [1.0, 3.0, 5.0])
    assert page["data"]["values"] == [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]


def test_collect_refuses_scorers_without_a_mean(tmp_path: Path) -> None:
    with pytest.raises(CollectError, match="no scorer output"):
        Topas("topas").collect(tmp_path)
    (tmp_path / "dose.csv").write_text(
        HEADER.replace("Sum   Mean   Standard_Deviation", "Sum") + "0, 0, 0, 1.0\n")
    with pytest.raises(CollectError, match=r"dose\.csv cannot be read"):
        Topas("topas").collect(tmp_path)


def test_stand_in_runs_like_topas(tmp_path: Path) -> None:
    sim = Topas(stand_in("topas"))
    done = run_task(sim, topas_input(1000), tmp_path, 300, 5)
    assert done.returncode == 0, done.stderr
    progress = [p for p in map(sim.parse_progress, done.stdout.splitlines()) if p is not None]
    assert [p.simulated for p in progress] == list(range(0, 300, 3))
    document = sim.collect(tmp_path)
    assert [(e["name"], e["metadata"]["number_of_primaries"]) for e in document["estimators"]] \
        == [("dose", "300"), ("edep", "300")]
    assert len(document["estimators"][0]["pages"][0]["data"]["values"]) == 40
