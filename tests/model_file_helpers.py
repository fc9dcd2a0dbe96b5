"""Broken quantized-model files for the loader's tests, shared by the test modules."""

import json

import numpy as np


def edited_model_file(path, tmp_path, edit):
    """A copy of the model file ``path`` after ``edit(manifest, arrays)`` changed it in place."""
    with np.load(path) as data:
        arrays = {key: np.array(data[key]) for key in data.files}
    manifest = json.loads(bytes(arrays.pop("__manifest__")).decode())
    edit(manifest, arrays)
    out = tmp_path / "bad.npz"
    np.savez(out, __manifest__=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8),
             **arrays)
    return out
