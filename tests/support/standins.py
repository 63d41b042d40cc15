"""The simulator stand-ins and a small, real input for each simulator they stand in for.

The inputs are what a user (or YAPTIDE's converter) submits: SHIELD-HIT12A's
four files, a fixed-format FLUKA ``fl_sim.inp``, a TOPAS ``topas_config.txt``
and a Geant4 ``run.mac`` (with its GDML file). Each scores a depth profile
that its stand-in writes as the real program's output files.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from services.simulators.base import Simulator, write_task_files

SUPPORT = Path(__file__).resolve().parent

#: sim_type -> stand-in executable (standard-library Python scripts).
STAND_INS = {
    "shieldhit": SUPPORT / "fake_simulator.py",
    "fluka": SUPPORT / "fake_rfluka.py",
    "topas": SUPPORT / "fake_topas.py",
    "geant4": SUPPORT / "fake_geant4.py",
}

#: sim_type -> the environment variable setting its stand-in's sleep per step.
STEP_VARIABLES = {"shieldhit": "FAKE_SIM_STEP_SECONDS", "fluka": "FAKE_FLUKA_STEP_SECONDS",
                  "topas": "FAKE_TOPAS_STEP_SECONDS", "geant4": "FAKE_G4_STEP_SECONDS"}


def stand_in(sim_type: str) -> str:
    """The path of a simulator's stand-in, made executable (a checkout may lose the bit)."""
    path = STAND_INS[sim_type]
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def fluka_card(keyword: str, *whats: str, sdum: str = "") -> str:
    """A fixed-format FLUKA card: keyword in columns 1-10, WHATs ten columns each, SDUM."""
    return (keyword.ljust(10) + "".join(w.rjust(10) for w in whats).ljust(60) + sdum).rstrip()


SHIELDHIT_DETECT = """Geometry Cyl
    Name CylZ
    R 0 5 1
    Z 0 20 40
Geometry Mesh
    Name YZ
    X -1 1 1
    Y -2 2 4
    Z 0 20 10
Output
    Filename z_profile.bdo
    Geo CylZ
    Quantity Dose
    Quantity Fluence
    Quantity dLET
Output
    Filename yz_profile.bdo
    Geo YZ
    Quantity Dose
"""


def shieldhit_input(primaries: int) -> dict[str, str]:
    beam = (f"RNDSEED    89736501\nJPART0     2          ! proton\nTMAX0      150.0  1.5\n"
            f"NSTAT      {primaries}  -1  ! primaries, save at the end\nBEAMPOS    0 0 0\n")
    return {"beam.dat": beam, "geo.dat": "    0    0          water\n", "mat.dat":
            "MEDIUM 1\nICRU 276\nEND\n", "detect.dat": SHIELDHIT_DETECT,
            # the converter's info.json is a Python repr, not JSON
            "info.json": "{'version': 'unknown', 'label': 'development', 'simulator': 'shieldhit'}"}


def fluka_input(primaries: int) -> dict[str, str]:
    cards = [
        fluka_card("TITLE"), "Proton pencil beam in water",
        fluka_card("DEFAULTS", sdum="HADROTHE"),
        fluka_card("BEAM", "-0.15", sdum="PROTON"),
        fluka_card("GEOBEGIN", sdum="COMBNAME"), "    0    0", fluka_card("GEOEND"),
        fluka_card("USRBIN", "10.", "DOSE", "-21.", "5.", "5.", "20.", sdum="zdose"),
        fluka_card("USRBIN", "-5.", "-5.", "0.", "1.", "1.", "40.", sdum="&"),
        fluka_card("USRBIN", "1.", "DOSE", "-22.", "5.", "0.", "20.", sdum="rzdose"),
        fluka_card("USRBIN", "0.", "0.", "0.", "5.", "1.", "40.", sdum="&"),
        fluka_card("RANDOMIZ", "1.", "137."),
        fluka_card("START", f"{primaries}."),
        fluka_card("STOP"),
    ]
    return {"fl_sim.inp": "\n".join(cards) + "\n"}


def topas_input(primaries: int) -> dict[str, str]:
    config = f"""# Proton pencil beam in a water box
includeFile = phantom.txt
i:Ts/Seed = 1
i:Ts/ShowHistoryCountAtInterval = 1000
s:So/Beam/Type = "Beam"
s:So/Beam/Component = "BeamPosition"
s:So/Beam/BeamParticle = "proton"
d:So/Beam/BeamEnergy = 150. MeV
i:So/Beam/NumberOfHistoriesInRun = {primaries}
s:Sc/Dose/Quantity = "DoseToMedium"
s:Sc/Dose/Component = "Phantom"
s:Sc/Dose/OutputFile = "dose"
i:Sc/Dose/ZBins = 40
sv:Sc/Dose/Report = 2 "Sum" "Mean"
s:Sc/Edep/Quantity = "EnergyDeposit"
s:Sc/Edep/Component = "Phantom"
s:Sc/Edep/OutputFile = "edep"
sv:Sc/Edep/Report = 3 "Sum" "Mean" "Standard_Deviation"
"""
    phantom = """s:Ge/Phantom/Type = "TsBox"
s:Ge/Phantom/Material = "G4_WATER"
d:Ge/Phantom/HLX = 5. cm
d:Ge/Phantom/HLY = 5. cm
d:Ge/Phantom/HLZ = 100. mm
"""
    return {"topas_config.txt": config, "phantom.txt": phantom,
            "spectrum.csv": "# energy (MeV), weight\n150, 1\n"}


def geant4_input(primaries: int) -> dict[str, str]:
    macro = f"""# Proton pencil beam in water, command-based scoring
/control/verbose 2
/run/initialize
/score/create/boxMesh water
/score/mesh/boxSize 5. 5. 100. mm
/score/mesh/nBin 1 1 40
/score/mesh/translate/xyz 0 0 10 cm
/score/quantity/doseDeposit dose Gy
/score/quantity/energyDeposit eDep
/score/close
/gun/particle proton
/gun/energy 150 MeV
/run/printProgress 1000
/run/beamOn {primaries}
/score/dumpQuantityToFile water dose dose.csv
/score/dumpQuantityToFile water eDep edep.csv
"""
    return {"run.mac": macro, "geometry.gdml": "<gdml><!-- stand-in --></gdml>\n"}


INPUTS = {"shieldhit": shieldhit_input, "fluka": fluka_input, "topas": topas_input,
          "geant4": geant4_input}


def run_task(simulator: Simulator, input_files: dict[str, str], workdir: Path,
             primaries: int, seed: int) -> subprocess.CompletedProcess[str]:
    """One task as the runner runs it: its files, its command, in its work directory."""
    write_task_files(workdir, simulator.task_files(input_files, primaries, seed))
    argv = simulator.command(workdir, seed)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           **{variable: "0" for variable in STEP_VARIABLES.values()}}
    return subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=60,
                          env=env)
