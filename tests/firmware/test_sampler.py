"""The sampler on the MicroPython VM: failing sensors are counted and the others keep going (board_sampler.py)."""
import pytest
from board_vm import run_scenario, scenarios

SCRIPT = "board_sampler.py"


@pytest.mark.parametrize("name", scenarios(SCRIPT))
def test_sampler_on_micropython(name):
    run_scenario(SCRIPT, name)
