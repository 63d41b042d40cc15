"""Which simulators a platform can run, with which executables.

Which executable runs comes from configuration (``SIMJOBS_SIM_<TYPE>_EXE``), so
the same plug-in drives the real binary in production and a stand-in in tests.
A simulator without a plug-in or without a configured executable is not an
error of the platform: the task fails at once with a reason that says which
variable to set (:class:`~services.simulators.errors.SimulatorUnavailable`).

What a simulator's input says before anything runs (the number of primaries)
is known from the plug-in class alone (:func:`input_primaries`), so the API
validates submissions on a host with no simulator installed.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from services.settings import RunnerSettings, sim_exe_variable
from services.simulators.base import Simulator, SimulatorPlugin
from services.simulators.builtin import Builtin
from services.simulators.errors import BadInput, SimulatorUnavailable
from services.simulators.fluka import Fluka
from services.simulators.geant4 import Geant4
from services.simulators.shieldhit import ShieldHit
from services.simulators.topas import Topas

#: sim_type -> plug-in class; each instance is built with the configured executable.
PLUGINS: dict[str, SimulatorPlugin] = {
    "shieldhit": ShieldHit, "fluka": Fluka, "topas": Topas, "geant4": Geant4,
    "builtin": Builtin,
}

#: Executables used when none is configured: the built-in engine runs on this Python.
DEFAULT_EXECUTABLES: dict[str, str] = {"builtin": sys.executable}


def input_primaries(sim_type: str, input_files: Mapping[str, str]) -> int:
    """The number of primaries a job's input files ask for, read as its simulator reads them.

    Raises:
        BadInput: no plug-in for ``sim_type``, or the input does not say.
    """
    plugin = PLUGINS.get(sim_type)
    if plugin is None:
        raise BadInput(f"simulator {sim_type!r} has no plug-in here "
                       f"(available: {', '.join(sorted(PLUGINS))})")
    return plugin.input_primaries(input_files)


@dataclass(frozen=True)
class SimulatorRegistry:
    """The plug-ins of one platform and the executables configured for them."""

    executables: Mapping[str, str]

    @classmethod
    def from_settings(cls, settings: RunnerSettings) -> SimulatorRegistry:
        return cls(dict(settings.executables))

    def get(self, sim_type: str) -> Simulator:
        """The plug-in for a job's simulator.

        Raises:
            SimulatorUnavailable: no plug-in, no executable configured, or not executable.
        """
        exe = self.executables.get(sim_type) or DEFAULT_EXECUTABLES.get(sim_type)
        if not exe:
            raise SimulatorUnavailable(
                f"simulator {sim_type!r} is not configured on this runner: set "
                f"{sim_exe_variable(sim_type)} to the path of its executable")
        plugin = plugin_for(sim_type, exe)
        if shutil.which(exe) is None:
            raise SimulatorUnavailable(
                f"simulator {sim_type!r}: {exe!r} (from {sim_exe_variable(sim_type)}) "
                "is not an executable file")
        return plugin


def plugin_for(sim_type: str, executable: str) -> Simulator:
    """The plug-in of ``sim_type`` driving ``executable``, which is not checked here.

    The executable may live on another host: the SLURM bridge gives a cluster's path.

    Raises:
        SimulatorUnavailable: there is no plug-in for ``sim_type``.
    """
    plugin = PLUGINS.get(sim_type)
    if plugin is None:
        raise SimulatorUnavailable(
            f"simulator {sim_type!r} cannot run on this platform: there is "
            f"no plug-in for it (available: {', '.join(sorted(PLUGINS))})")
    return plugin(executable)
