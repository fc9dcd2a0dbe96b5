"""Energy per inference, estimated from counted operations and published per-operation energies.

Why: a resident board trades link bytes for memory bytes, and a periodic-sparse model trades
MACs and weight bytes against a dense one; this says where the joules go. It is an estimate in
45 nm terms (the figures below), not a measurement of any FPGA.

What is counted, per inference:

* **DRAM accesses**: the bytes the resident runner read from and wrote to the board's memory
  (``RUN_STATUS`` ``memory_reads + memory_writes``: step records, masks, quantization entries,
  weights, input maps, residuals, outputs), as 32-bit accesses (bytes / 4).
* **On-chip buffer accesses** (32-bit SRAM reads, bytes / 4): every busy engine cycle reads one
  ``tn``-byte weight word and ``tm x tn`` patch bytes; every byte brought from DRAM into the
  weight and feature-map buffers is written once (counted as a read-sized access). Line-buffer
  traffic while patches are built is not counted. Busy cycles come from the analytical cycle
  model (:func:`psconv.sim.cycle_model.predict_cycles`), which the RTL counters match.
* **MACs**: multiplies the engine issues (``multipliers`` per busy cycle, idle lanes included),
  each an 8-bit multiply plus an 8-bit add.
"""

from __future__ import annotations

ENERGY_SOURCE = ("M. Horowitz, 'Computing's energy problem (and what we can do about it)', "
                 "ISSCC 2014 (45 nm, 0.9 V)")
ENERGY_PJ = {
    "dram_access_32bit": 640.0,
    "sram_read_32bit_8kb": 5.0,
    "int8_multiply": 0.2,
    "int8_add": 0.03,
}
"""Picojoules per operation (:data:`ENERGY_SOURCE`)."""

PARTS = ("DRAM", "on-chip buffers", "MACs")


def engine_activity(program) -> dict:
    """Busy cycles, issued multiplies, useful MACs and on-chip buffer bytes of one inference of
    ``program`` (see the module docstring)."""
    from psconv.sim.cycle_model import predict_cycles

    cfg = program.config
    busy = useful = fills = 0
    for step in program.engine_steps:
        spec = step.descriptor
        busy += predict_cycles(cfg, spec, step.masks)["busy"]
        useful += step.useful_macs
        fills += step.weight_words.numel() + spec.in_channels * spec.in_height * spec.in_width
    return {"busy_cycles": busy, "multiplies": busy * cfg.multipliers, "useful_macs": useful,
            "buffer_bytes": busy * (cfg.tn + cfg.tm * cfg.tn) + fills}


def energy_per_inference(dram_bytes: int, activity: dict) -> dict:
    """Energy in microjoules by part (:data:`PARTS`) and in total, with the counts used."""
    pj = ENERGY_PJ
    parts_pj = {
        "DRAM": dram_bytes / 4 * pj["dram_access_32bit"],
        "on-chip buffers": activity["buffer_bytes"] / 4 * pj["sram_read_32bit_8kb"],
        "MACs": activity["multiplies"] * (pj["int8_multiply"] + pj["int8_add"]),
    }
    return {"dram_bytes": dram_bytes, **activity,
            **{f"{name}_uJ": value / 1e6 for name, value in parts_pj.items()},
            "total_uJ": sum(parts_pj.values()) / 1e6}


def plot_energy(path, energies: dict) -> None:
    """A stacked bar per model (``energies``: label -> :func:`energy_per_inference`)."""
    import matplotlib.pyplot as plt

    labels = list(energies)
    fig, ax = plt.subplots(figsize=(6, 4))
    bottom = [0.0] * len(labels)
    for part in PARTS:
        values = [energies[label][f"{part}_uJ"] for label in labels]
        ax.bar(labels, values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    for x, total in enumerate(bottom):
        ax.annotate(f"{total:.0f} uJ", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("estimated energy per inference (uJ)")
    ax.set_title("Where the energy goes (resident mode; Horowitz ISSCC 2014 figures)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
