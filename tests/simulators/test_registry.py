"""The registry: primaries read without an executable; a missing executable named for each."""

from __future__ import annotations

import pytest

from services.simulators.errors import BadInput, SimulatorUnavailable
from services.simulators.registry import PLUGINS, SimulatorRegistry, input_primaries
from tests.support.standins import INPUTS, stand_in

SIM_TYPES = sorted(INPUTS)


def test_every_adapter_is_registered() -> None:
    assert set(PLUGINS) >= set(SIM_TYPES)


@pytest.mark.parametrize("sim_type", SIM_TYPES)
def test_input_primaries_needs_no_executable(sim_type: str) -> None:
    assert input_primaries(sim_type, INPUTS[sim_type](31415)) == 31415


@pytest.mark.parametrize("sim_type", SIM_TYPES)
def test_another_simulators_input_is_refused(sim_type: str) -> None:
    other = next(t for t in SIM_TYPES if t != sim_type)
    with pytest.raises(BadInput):
        input_primaries(sim_type, INPUTS[other](100))


def test_unknown_simulator_has_no_primaries() -> None:
    with pytest.raises(BadInput, match="'mcnp' has no plug-in"):
        input_primaries("mcnp", {"deck": ""})


@pytest.mark.parametrize("sim_type", SIM_TYPES)
def test_an_unconfigured_simulator_names_its_variable(sim_type: str) -> None:
    with pytest.raises(SimulatorUnavailable) as caught:
        SimulatorRegistry({}).get(sim_type)
    assert str(caught.value) == (f"simulator {sim_type!r} is not configured on this runner: "
                                 f"set SIMJOBS_SIM_{sim_type.upper()}_EXE to the path of its "
                                 "executable")
    assert SimulatorRegistry({sim_type: stand_in(sim_type)}).get(sim_type).sim_type == sim_type
