"""``psconv pack``: pack every layer of a quantized model and compare storage formats."""

from __future__ import annotations

import json

from .golden import add_model_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "pack", help="compressed weight sizes per layer versus dense, bitmap, CSR and 2:4",
        description="Pack each convolution of a quantized model into the compressed format "
                    "(mask table + nonzero weights in engine order), check the round trip, and "
                    "print bytes per layer: ours (weights, metadata) against dense int8, bitmap, "
                    "CSR (16-bit column indices, 32-bit row pointers) and 2:4 structured sparsity. "
                    "Without --model the embedded default is used.")
    add_model_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def storage_rows(model):
    """One :class:`~psconv.firmware.packing.StorageReport` per conv layer (round trip checked)."""
    import torch

    from psconv.errors import PsconvError
    from psconv.firmware.packing import pack_layer, storage_report, unpack_layer

    reports = []
    for layer in model.conv_layers:
        packed = pack_layer(layer.weight, layer.family, layer.name)
        if not torch.equal(unpack_layer(packed), layer.weight):
            raise PsconvError(f"pack: layer {layer.name!r} does not round-trip")
        reports.append(storage_report(packed))
    return reports


def run(args) -> int:
    from .golden import load_or_default

    model = load_or_default(args)
    reports = storage_rows(model)
    fields = ("ours_weights", "ours_metadata", "ours_total", "dense_int8", "bitmap", "csr", "two_four")
    totals = {f: sum(getattr(r, f) for r in reports) for f in fields}
    if args.json:
        rows = [{"layer": r.name, **{f: getattr(r, f) for f in fields}} for r in reports]
        print(json.dumps({"family": model.family_name, "layers": rows, "total": totals}, indent=1))
        return 0
    print(f"compressed weight storage: {model.arch} {model.family_name} (bytes)")
    header = ("layer", "weights", "metadata", "ours", "dense", "bitmap", "CSR", "2:4")
    print(f"{header[0]:<20}" + "".join(f"{h:>10}" for h in header[1:]))
    for r in reports:
        print(f"{r.name:<20}" + "".join(f"{getattr(r, f):>10}" for f in fields))
    print(f"{'total':<20}" + "".join(f"{totals[f]:>10}" for f in fields))
    share = 100 * totals["ours_metadata"] / max(1, totals["ours_weights"])
    print(f"metadata is {share:.4f} % of weight bytes; ours is "
          f"{totals['dense_int8'] / totals['ours_total']:.2f}x smaller than dense int8")
    return 0
