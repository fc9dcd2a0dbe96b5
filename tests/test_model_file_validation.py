"""Broken model files and output paths end in one line naming the field, never a traceback.

Each case edits a valid model file the way a broken or hand-made one would differ, runs the CLI
in-process and checks the exit status and that the message names the layer and field.
"""

import re

import numpy as np
import pytest
import torch

from psconv.cli import main
from psconv.errors import PsconvError
from psconv.qmodel import QuantizedModel

from model_file_helpers import edited_model_file


@pytest.fixture(scope="module")
def model():
    from psconv.nn.default import default_quantized_model

    return default_quantized_model(width=2, image_size=8)


@pytest.fixture(scope="module")
def good_file(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("model") / "good.npz")




def _refused(argv, capsys, *fragments):
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def _layer(manifest, name):
    return next(entry for entry in manifest["layers"] if entry["name"] == name)


def test_the_good_file_runs(good_file, capsys):
    assert main(["golden", "--model", str(good_file)]) == 0


def test_empty_file(tmp_path, capsys):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    _refused(["golden", "--model", str(path)], capsys, "is not a psconv quantized model",
             "it is empty")


def test_npz_without_arrays(tmp_path, capsys):
    path = tmp_path / "nothing.npz"
    np.savez(path)
    _refused(["golden", "--model", str(path)], capsys, "is not a psconv quantized model",
             "__manifest__")


def test_single_npy_array(tmp_path, capsys):
    path = tmp_path / "array.npz"
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))
    _refused(["golden", "--model", str(path)], capsys, "is not a psconv quantized model",
             "not an .npz archive")


def test_truncated_file(good_file, tmp_path, capsys):
    path = tmp_path / "cut.npz"
    path.write_bytes(good_file.read_bytes()[:3000])
    _refused(["golden", "--model", str(path)], capsys, "is not a psconv quantized model")


def test_manifest_that_is_not_an_object(tmp_path, capsys):
    path = tmp_path / "list.npz"
    np.savez(path, __manifest__=np.frombuffer(b"[1, 2]", dtype=np.uint8))
    _refused(["golden", "--model", str(path)], capsys, "the manifest is list",
             "allowed: a JSON object")


def test_missing_weight_tensor(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: a.pop("layer1.0.conv1/weight"))
    _refused(["golden", "--model", str(path)], capsys,
             "layer 'layer1.0.conv1' (conv): tensor 'weight' is missing",
             "conv layers without a residual have: weight, bias, multiplier, shift, weight_scale")


def test_missing_residual_multiplier(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: a.pop("layer1.0.conv2/residual_multiplier"))
    _refused(["golden", "--model", str(path)], capsys,
             "layer 'layer1.0.conv2' (conv): tensor 'residual_multiplier' is missing")


def test_tensor_the_op_does_not_have(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: a.update({"avgpool/bias": a["fc/bias"]}))
    _refused(["golden", "--model", str(path)], capsys,
             "layer 'avgpool' (avgpool): tensor 'bias' is present; avgpool layers have: "
             "multiplier, shift")


def test_tensor_of_no_layer(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path,
                   lambda m, a: a.update({"stem/weights": a["stem/weight"]}))
    _refused(["golden", "--model", str(path)], capsys,
             "tensor 'stem/weights' is no layer's field")


def test_no_layers(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: (m.update(layers=[]), a.clear()))
    _refused(["golden", "--model", str(path)], capsys, "field 'layers' is empty",
             "allowed: at least one layer")


def test_missing_manifest_field(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: _layer(m, "stem").pop("stride"))
    _refused(["golden", "--model", str(path)], capsys,
             "layer 0 ('stem'): field 'stride' is missing")


def test_manifest_field_of_the_wrong_type(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: _layer(m, "stem").update(stride="2"))
    _refused(["golden", "--model", str(path)], capsys, "layer 0 ('stem'): field 'stride' is '2'",
             "allowed: an integer")


def test_model_field_of_the_wrong_type(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: m.update(num_classes="10"))
    _refused(["golden", "--model", str(path)], capsys, "field 'num_classes' is '10'",
             "allowed: an integer")


def test_stride_outside_the_contract(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: _layer(m, "stem").update(stride=3))
    _refused(["golden", "--model", str(path)], capsys, "layer 'stem': stride is 3",
             "allowed: 1 or 2")


@pytest.mark.parametrize("command", ["golden", "pack", "run"])
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", 0.0])
def test_input_scale_must_be_finite_and_positive(good_file, tmp_path, capsys, command, value):
    path = edited_model_file(good_file, tmp_path, lambda m, a: m.update(input_scale=float(value)))
    _refused([command, "--model", str(path)], capsys,
             f"input_scale is {float(value)!r}", "allowed: a finite number > 0")


def test_layer_scale_must_be_finite(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path,
                   lambda m, a: _layer(m, "layer2.0.conv2").update(residual_scale=float("nan")))
    _refused(["golden", "--model", str(path)], capsys,
             "layer 'layer2.0.conv2': residual_scale is nan")


def test_weight_scale_must_be_finite(good_file, tmp_path, capsys):
    def edit(manifest, arrays):
        arrays["fc/weight_scale"][3] = np.inf

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["golden", "--model", str(path)], capsys, "layer 'fc' weight_scale: value inf",
             "allowed: float64, finite and > 0")


def test_int16_weights_beyond_int8(good_file, tmp_path, capsys):
    def edit(manifest, arrays):
        arrays["stem/weight"] = arrays["stem/weight"].astype(np.int16) * 3

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["golden", "--model", str(path)], capsys, "layer 'stem' weight: dtype int16 (values",
             "allowed: int8 -128..127")


def test_weights_stored_as_text(good_file, tmp_path, capsys):
    def edit(manifest, arrays):
        arrays["stem/weight"] = arrays["stem/weight"].astype(str)

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["golden", "--model", str(path)], capsys, "layer 'stem' weight: dtype str",
             "allowed: int8")


def test_float_weights(good_file, tmp_path, capsys):
    def edit(manifest, arrays):
        arrays["fc/weight"] = arrays["fc/weight"].astype(np.float32)

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["pack", "--model", str(path)], capsys, "layer 'fc' weight: dtype float32",
             "allowed: int8")


def test_bias_beyond_int32(good_file, tmp_path, capsys):
    def edit(manifest, arrays):
        arrays["stem/bias"] = arrays["stem/bias"].astype(np.int64) + 2 ** 40

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["golden", "--model", str(path)], capsys, "layer 'stem' bias: dtype int64 (values",
             "allowed: int32 -2147483648..2147483647")


@pytest.mark.parametrize("field, value, allowed", [
    ("multiplier", 2 ** 30, "outside 0..1073741823"),
    ("multiplier", -1, "outside 0..1073741823"),
    ("shift", 0, "outside 1..62"),
    ("shift", 63, "outside 1..62"),
    ("residual_multiplier", 2 ** 31, "outside 0..1073741823"),
])
def test_requantization_parameters_out_of_range(good_file, tmp_path, capsys, field, value,
                                                 allowed):
    def edit(manifest, arrays):
        arrays[f"layer1.0.conv2/{field}"][1] = value

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["golden", "--model", str(path)], capsys,
             f"layer 'layer1.0.conv2' {field}: value {value} at index (1,) is {allowed}")


def test_avgpool_shift_out_of_range(good_file, tmp_path, capsys):
    def edit(manifest, arrays):
        arrays["avgpool/shift"][0] = 99

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["golden", "--model", str(path)], capsys,
             "layer 'avgpool' shift: value 99 at index (0,) is outside 1..62")


def test_weight_shape_disagrees_with_its_input(good_file, tmp_path, capsys):
    def edit(manifest, arrays):
        arrays["layer1.0.conv1/weight"] = np.zeros((2, 3, 3, 3), dtype=np.int8)

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["golden", "--model", str(path)], capsys,
             "layer 'layer1.0.conv1' weight: shape (2, 3, 3, 3)",
             "allowed: (out channels, 2, 3, 3): input 'stem' has 2 channels")


def test_kernel_size_disagrees_with_the_weight(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path,
                   lambda m, a: _layer(m, "layer2.0.shortcut").update(kernel_size=3))
    _refused(["golden", "--model", str(path)], capsys,
             "layer 'layer2.0.shortcut': kernel_size is 3 but family 'pointwise' is for 1x1")


def test_per_channel_tensor_of_the_wrong_length(good_file, tmp_path, capsys):
    def edit(manifest, arrays):
        arrays["layer2.0.conv1/bias"] = arrays["layer2.0.conv1/bias"][:3]

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["golden", "--model", str(path)], capsys, "layer 'layer2.0.conv1' bias: shape (3,)",
             "allowed: (4,)")


def test_classifier_disagrees_with_num_classes(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: m.update(num_classes=7))
    _refused(["golden", "--model", str(path)], capsys, "the last layer 'fc' is fc with 10 outputs",
             "num_classes = 7")


def test_residual_of_another_shape(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path,
                   lambda m, a: _layer(m, "layer2.0.conv2").update(residual="layer1.1.conv2"))
    _refused(["golden", "--model", str(path)], capsys,
             "layer 'layer2.0.conv2': residual 'layer1.1.conv2' has shape (2, 8, 8)",
             "allowed: the layer's output shape (4, 4, 4)")


def test_input_of_a_later_layer(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path, lambda m, a: _layer(m, "stem").update(input="fc"))
    _refused(["golden", "--model", str(path)], capsys,
             "layer 'stem' input: 'fc' is no earlier layer's output", "allowed: 'input'")


def test_weight_where_the_mask_prunes_the_tap(good_file, tmp_path, capsys, model):
    layer = model.layer("layer1.0.conv1")
    o, i, dy, dx = (int(v) for v in (layer.family.weight_mask(2, 2) == 0).nonzero()[0])

    def edit(manifest, arrays):
        arrays["layer1.0.conv1/weight"][o, i, dy, dx] = 5

    path = edited_model_file(good_file, tmp_path, edit)
    _refused(["golden", "--model", str(path)], capsys,
             f"layer 'layer1.0.conv1' weight: output channel {o}, input channel {i}, tap "
             f"{3 * dy + dx}", "prunes that tap")


def test_malformed_family(good_file, tmp_path, capsys):
    path = edited_model_file(good_file, tmp_path,
                   lambda m, a: _layer(m, "layer1.0.conv1")["family"].update(masks=[0]))
    _refused(["golden", "--model", str(path)], capsys, "layer 'layer1.0.conv1' family",
             "mask 0 is 0")


@pytest.mark.parametrize("field, value, message", [
    ("weight", "int16", "layer 'stem' weight: dtype int16"),
    ("relu", 1, "layer 'stem': relu is 1; allowed: True or False"),
    ("output_scale", float("nan"), "layer 'stem': output_scale is nan"),
])
def test_save_refuses_a_bad_model(model, tmp_path, field, value, message):
    stem = model.layers[0]
    original = getattr(stem, field)
    setattr(stem, field, original.to(torch.int16) if value == "int16" else value)
    try:
        with pytest.raises(PsconvError, match=re.escape(message)):
            model.save(tmp_path / "never.npz")
    finally:
        setattr(stem, field, original)
    assert not (tmp_path / "never.npz").exists()


@pytest.mark.parametrize("argv, message", [
    (["quantize", "--width", "2", "-o", "{dir}"], "-o/--out: {dir} is a directory"),
    (["run", "--no-progress", "--json", "{dir}"], "--json: {dir} is a directory"),
    (["quantize", "--width", "2", "-o", "{file}/m.npz"], "lies below {file}, which is a file"),
    (["generate", "-o", "{file}"], "-o/--out: {file} is a file; allowed: a folder"),
    (["build", "--board", "icebreaker", "-o", "{file}"], "-o/--outdir: {file} is a file"),
    (["bench", "storage", "--out", "{file}"], "--out: {file} is a file; allowed: a folder"),
    (["bench", "impl", "--build-dir", "{file}"], "--build-dir: {file} is a file"),
])
def test_output_path_of_the_wrong_kind(tmp_path, capsys, argv, message):
    (tmp_path / "file").write_text("taken\n")
    names = {"dir": str(tmp_path), "file": str(tmp_path / "file")}
    _refused([arg.format(**names) for arg in argv], capsys, message.format(**names))


def test_save_onto_a_directory(model, tmp_path):
    with pytest.raises(PsconvError, match="is a directory"):
        model.save(tmp_path)


def test_load_round_trip_is_unchanged(model, good_file):
    loaded = QuantizedModel.load(good_file)
    assert loaded.input_scale == model.input_scale
    for a, b in zip(loaded.layers, model.layers):
        assert a.manifest() == b.manifest()
        for field in ("weight", "bias", "multiplier", "shift", "residual_multiplier"):
            if getattr(b, field) is not None:
                assert torch.equal(getattr(a, field), getattr(b, field))
