"""``psconv bench netlist --engine``: which engine and network the netlist benchmark simulates.
The netlist itself is replaced by a stand-in here (synthesizing the ULX3S engine takes minutes;
tests/rtl/test_engine_netlist.py runs real netlists)."""

from types import SimpleNamespace

import pytest

import psconv.sim.engine_netlist as engine_netlist
from psconv.bench import netlist
from psconv.rtl_gen.boards import get_board


@pytest.fixture
def recorded(monkeypatch):
    seen = {}

    class StandIn:
        def __init__(self, config, build_root=None, fault=None, board="icebreaker"):
            seen.update(config=config, board=board)
            self.synthesis_seconds, self.cells = 0.0, {}
            self.build = SimpleNamespace(cached=True, seconds=0.0)

        def run(self, cases):
            seen["cases"] = cases
            return [SimpleNamespace(case=case, mismatches=0, cycles=1) for case in cases]

    monkeypatch.setattr(engine_netlist, "EngineNetlist", StandIn)
    return seen


def test_board_engine_is_the_boards_own_and_its_network_runs_in_passes(recorded, tmp_path):
    netlist.run(images=1, outdir=tmp_path / "out", board="ulx3s-85f", engine="board")
    config = get_board("ulx3s-85f").engine_config()
    assert recorded["config"] == config and recorded["board"] == "ulx3s-85f"
    widest = max(case.spec.in_channels for case in recorded["cases"])
    assert widest == 8 * netlist.BOARD_ENGINE_WIDTH > config.patch_channels


def test_small_engine_is_the_icebreakers_on_either_board(recorded, tmp_path):
    netlist.run(images=1, outdir=tmp_path / "out", board="ulx3s-85f")
    assert recorded["config"] == get_board("icebreaker").engine_config()
    netlist.run(images=1, outdir=tmp_path / "out2", board="icebreaker", engine="board")
    assert recorded["config"] == get_board("icebreaker").engine_config()
