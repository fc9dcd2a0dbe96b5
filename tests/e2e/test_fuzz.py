"""``psconv bench fuzz`` in short: random bytes, frames and descriptors into the simulated board;
it answers every new session, keeps its model and runs bit-exact afterwards. A model changed
behind the harness's back is caught."""

import json
import struct

import pytest

from psconv.bench import fuzz
from psconv.protocol.codes import Command
from psconv.protocol.frame import encode_frame

from e2e_helpers import SIM_CONFIG


def test_a_short_fuzz_leaves_the_board_answering_with_its_model(tmp_path, capsys):
    folder, summary = fuzz.run(outdir=tmp_path / "fuzz", total_bytes=40_000, seed=3,
                               config=SIM_CONFIG, progress=False)
    capsys.readouterr()
    rows = json.loads((folder / "fuzz.json").read_text())["rows"]
    assert summary["bytes"] >= 40_000 and summary["sessions answered"] == len(rows) >= 8
    assert all(summary[f"{kind} pieces"] > 0 for kind in fuzz.KINDS)
    assert summary["inference after the fuzz"] == "bit-exact"
    assert sum(r["bytes answered"] for r in rows) > 0


def test_a_model_changed_without_a_frame_that_writes_it_is_caught(monkeypatch):
    """A burst that overwrites the model but reports it did not: the CRC check must object."""
    make_burst = fuzz.make_burst

    def sneaky(rng, config, model_bytes, max_payload, burst_bytes=fuzz.BURST_BYTES):
        burst, kinds, _ = make_burst(rng, config, model_bytes, max_payload, burst_bytes)
        write = encode_frame(rng.randrange(256), Command.WRITE_MEM, struct.pack("<I", 40) + b"\x5a")
        return burst + write, kinds, False

    monkeypatch.setattr(fuzz, "make_burst", sneaky)
    with pytest.raises(fuzz.FuzzFailure, match="though no frame wrote into it"):
        fuzz.fuzz(total_bytes=4000, seed=4, config=SIM_CONFIG, progress=False)
