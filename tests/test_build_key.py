"""The Verilator build cache key (psconv.sim.engine_rtl._config_key) changes with every source
that generates the gateware: hw/ and the wire-protocol package (its layouts, codes and
descriptor rules), so a protocol edit never reuses a stale simulated engine or board."""

import shutil
from pathlib import Path

import psconv.hw
import psconv.protocol
from psconv.config import EngineConfig
from psconv.sim.engine_rtl import _config_key


def test_build_key_follows_hw_and_protocol_sources(tmp_path, monkeypatch):
    config = EngineConfig()
    before = _config_key(config)
    for package, edited in ((psconv.protocol, "descriptor.py"), (psconv.hw, "engine.py")):
        copy = tmp_path / package.__name__.rsplit(".", 1)[-1]
        shutil.copytree(Path(package.__file__).parent, copy,
                        ignore=shutil.ignore_patterns("__pycache__"))
        monkeypatch.setattr(package, "__file__", str(copy / "__init__.py"))
        assert _config_key(config) == before          # the same sources: the same key
        (copy / edited).write_text((copy / edited).read_text() + "\n# edited\n")
        assert _config_key(config) != before, package.__name__
        monkeypatch.undo()
    assert _config_key(config.replace(tm=2)) != before
