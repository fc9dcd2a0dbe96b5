"""``psconv bench e2e --mode resident`` on the software resident board: the per-mode figures and
the energy estimate against the dense baseline land in the results JSON, with the chart."""

import json

import pytest

from psconv.bench import e2e
from psconv.bench.energy import ENERGY_PJ


def test_bench_e2e_resident_writes_modes_and_energy(tmp_path, capsys):
    folder, report = e2e.run(width=2, mode="resident", outdir=tmp_path / "e2e", progress=False,
                             clock_mhz=50.0, transport="resident-ref")
    capsys.readouterr()
    assert report.bit_exact
    document = json.loads((folder / "e2e.json").read_text())
    summary = document["summary"]
    resident = summary["modes"]["resident"]
    assert set(resident) >= {"mode", "clock_mhz", "device_cycles_per_inference",
                             "link_bytes_per_inference", "memory_bytes_per_inference",
                             "inferences_per_s", "bit_exact"}
    # two images; the figures are the second's (its upload may overlap the first inference)
    assert len(report.inferences) == 2
    inference = report.inferences[-1]
    assert resident["device_cycles_per_inference"] == inference.device_cycles > 0
    # the inference's own bytes: everything on the wire but the status polls before done
    assert resident["link_bytes_per_inference"] == (inference.link_bytes_sent
                                                    + inference.link_bytes_received
                                                    - inference.status_poll_bytes)
    assert resident["status_poll_bytes_in_simulation"] == inference.status_poll_bytes
    assert resident["memory_bytes_per_inference"] == inference.memory_reads + inference.memory_writes
    assert resident["overlapped_link_bytes_per_inference"] == inference.overlapped_link_bytes
    device_s = resident["device_cycles_per_inference"] / 50e6
    link_s = resident["link_bytes_per_inference"] / 300_000
    hidden_s = min(inference.overlapped_link_bytes / 300_000, device_s)
    assert resident["inferences_per_s"] == pytest.approx(1 / (device_s + link_s - hidden_s))
    assert resident["inferences_per_s_without_overlap"] == pytest.approx(1 / (device_s + link_s))
    assert resident["link_share"] == pytest.approx((link_s - hidden_s) * resident["inferences_per_s"])
    split = resident["time_split"]
    assert split["compute_s"] + split["memory_setup_drain_s"] == pytest.approx(device_s)
    assert 0 < split["compute_s"] < device_s
    assert [row["model"] for row in document["rows"]] == ["PSD1_P16", "dense"]
    energy = summary["energy per inference"]
    sparse, dense = energy["PSD1_P16"], energy["dense"]
    for figures in (sparse, dense):
        assert figures["MACs_uJ"] == pytest.approx(
            figures["multiplies"] * (ENERGY_PJ["int8_multiply"] + ENERGY_PJ["int8_add"]) / 1e6)
        assert figures["DRAM_uJ"] == pytest.approx(figures["dram_bytes"] / 4 * 640 / 1e6)
        assert figures["total_uJ"] == pytest.approx(
            figures["DRAM_uJ"] + figures["on-chip buffers_uJ"] + figures["MACs_uJ"])
    assert sparse["multiplies"] < dense["multiplies"] and sparse["dram_bytes"] < dense["dram_bytes"]
    assert summary["energy figures (pJ)"]["dram_access_32bit"] == 640.0
    assert (folder / "e2e.png").stat().st_size > 10_000 and (folder / "e2e.csv").is_file()
