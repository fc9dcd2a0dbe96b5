"""``psconv bench soak`` in short: injected link faults across model loads and inferences on the
simulated board, every layer checked; and a board that corrupts a map silently is counted."""

import json

from psconv.bench import soak
from psconv.sim import resident_device

from e2e_helpers import SIM_CONFIG


def test_a_short_soak_survives_every_fault_with_no_silent_corruption(tmp_path, capsys):
    folder, summary = soak.run(outdir=tmp_path / "soak", faults=40, rate=0.3, images=1,
                               config=SIM_CONFIG, progress=False)
    capsys.readouterr()
    assert summary["faults injected"] >= 40
    assert summary["silent corruptions"] == 0
    assert summary["faults in bit-exact rounds"] == summary["faults injected"]
    assert summary["retransmissions"] + summary["timeouts"] > 0
    rows = json.loads((folder / "soak.json").read_text())["rows"]
    assert sum(r["faults injected"] for r in rows) == summary["faults injected"]
    assert all(r["outcome"] == "bit-exact" for r in rows)


def test_a_board_that_corrupts_a_map_is_counted_as_silent(monkeypatch, capsys):
    """The reference board with one output byte flipped after every step: nothing on the link
    notices, so the soak must."""
    run = resident_device.ResidentDevice._run

    def corrupting(self, spec, fields):
        run(self, spec, fields)
        self.memory[fields["output_address"]] ^= 0x01

    monkeypatch.setattr(resident_device.ResidentDevice, "_run", corrupting)
    rows, summary = soak.soak(faults=5, rate=0.3, images=2, transport="resident-ref",
                              config=SIM_CONFIG, progress=False)
    assert summary["silent corruptions"] > 0
    assert any(r["outcome"] == "NOT bit-exact" for r in rows)
