"""The "builtin" simulator plug-in: registry default, task files, the command, progress."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from services.simulators.base import write_task_files
from services.simulators.builtin import Builtin
from services.simulators.errors import BadInput, SimulatorUnavailable
from services.simulators.registry import SimulatorRegistry
from services.simulators.shieldhit import ShieldHit
from tests.engine.helpers import beam, depth_dose_detect, files

INPUT = files(beam(100.0, 999, "! comment\n"), depth_dose_detect(10.0, 50))


def test_registry_runs_builtin_without_configuration() -> None:
    registry = SimulatorRegistry({})
    plugin = registry.get("builtin")
    assert isinstance(plugin, Builtin) and plugin.executable == sys.executable
    with pytest.raises(SimulatorUnavailable, match="SIMJOBS_SIM_SHIELDHIT_EXE"):
        registry.get("shieldhit")  # the other simulators still need their executable
    configured = SimulatorRegistry({"builtin": "/no/such/python"})
    with pytest.raises(SimulatorUnavailable, match="SIMJOBS_SIM_BUILTIN_EXE"):
        configured.get("builtin")
    assert isinstance(SimulatorRegistry({"shieldhit": sys.executable}).get("shieldhit"),
                      ShieldHit)


def test_task_files_set_nstat_and_refuse_bad_input() -> None:
    plugin = Builtin(sys.executable)
    task = plugin.task_files(INPUT, 250, 3)
    assert "NSTAT 250 0" in task["beam.dat"] and "NSTAT 999" not in task["beam.dat"]
    assert task["geo.dat"] == INPUT["geo.dat"]
    bad = {**INPUT, "beam.dat": INPUT["beam.dat"] + "USEBMOD 1 mod.dat\n"}
    with pytest.raises(BadInput, match=r"beam\.dat:\d+: USEBMOD"):
        plugin.task_files(bad, 250, 3)


def bare_python(where: Path) -> str:
    """A Python with NumPy but without this project installed (as on another machine)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    purelib = sysconfig.get_paths()["purelib"]  # NumPy's site-packages (not processed)
    site = next((where / "lib").glob("python3*")) / "site-packages"
    (site / "numpy-only.pth").write_text(purelib + "\n")
    return str(where / "bin" / "python")


def test_command_runs_from_the_work_directory_with_another_python(tmp_path: Path) -> None:
    python = bare_python(tmp_path / "venv")
    probe = subprocess.run([python, "-c", "import services"], cwd=tmp_path,
                           capture_output=True, check=False)
    assert probe.returncode != 0  # the project is not importable for that interpreter
    plugin = Builtin(python)
    workdir = tmp_path / "task"
    write_task_files(workdir, plugin.task_files(INPUT, 400, 17))
    done = subprocess.run(plugin.command(workdir, 17), cwd=workdir, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    progress = [p for p in map(plugin.parse_progress, done.stdout.splitlines()) if p]
    assert progress[0].requested == 400 and progress[-1].simulated == 400
    assert progress[-1].eta_seconds == 0
    document = plugin.collect(workdir)
    assert [e["name"] for e in document["estimators"]] == ["dd"]
    assert document["estimators"][0]["metadata"]["number_of_primaries"] == "400"
