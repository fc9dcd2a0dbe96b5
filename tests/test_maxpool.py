"""Max pooling on the host side: the golden op against torch, the model file's ``maxpool``
layer, VGG16 quantized in every paper family, its compiled program and the refusal to stream it.
(The reference resident board runs it: tests/resident/test_vgg16_resident.py.)"""

import json
import random

import numpy as np
import pytest
import torch

from psconv.cli import main
from psconv.config import EngineConfig
from psconv.errors import PsconvError
from psconv.bench.engine import PAPER_FAMILIES
from psconv.firmware.compiler import PoolStep, check_streamable, compile_model, streamed_program
from psconv.nn.default import default_quantized_model
from psconv.qmodel import QuantizedModel
from psconv.sim.golden import ops
from psconv.sim.golden.network import run_golden

from model_file_helpers import edited_model_file


@pytest.mark.parametrize("case", range(40))
def test_maxpool_equals_float64_max_pool2d(case):
    """Exact equality with float64 torch max_pool2d on the same integers, odd sizes included
    (the last row and column dropped), the int8 extremes in every map."""
    rng = random.Random(500 + case)
    shape = (rng.randint(1, 16), rng.randint(2, 33), rng.randint(2, 33))
    g = torch.Generator().manual_seed(case)
    x = torch.randint(-128, 128, shape, generator=g)
    x.view(-1)[0], x.view(-1)[-1] = -128, 127
    y = ops.maxpool2d_int(x.to(torch.int8))
    reference = torch.nn.functional.max_pool2d(x[None].double(), 2, 2)[0]
    assert y.dtype == torch.int64
    assert tuple(y.shape) == (shape[0], shape[1] // 2, shape[2] // 2)
    assert torch.equal(y, reference.to(torch.int64))


def test_maxpool_of_all_negative_windows_keeps_the_largest():
    x = torch.tensor([[[-128, -3, -7], [-5, -128, -1], [9, 9, 9]]])
    assert ops.maxpool2d_int(x).tolist() == [[[-3]]]


@pytest.mark.parametrize("call, message", [
    (lambda: ops.maxpool2d_int(torch.zeros(2, 1, 5, dtype=torch.int8)),
     "input 1x5 is smaller than its 2x2 window"),
    (lambda: ops.maxpool2d_int(torch.zeros(2, 4, 4), 2, 2), "dtype torch.float32"),
    (lambda: ops.maxpool2d_int(torch.zeros(2, 4, 4, dtype=torch.int8), 3, 2),
     "kernel_size 3, stride 2; allowed: kernel_size 2, stride 2"),
    (lambda: ops.maxpool2d_int(torch.full((1, 2, 2), 200)), "value 200"),
    (lambda: ops.maxpool2d_int(torch.zeros(4, 4, dtype=torch.int8)), "input must be CHW"),
])
def test_maxpool_refuses_what_is_outside_its_contract(call, message):
    with pytest.raises(PsconvError, match=message):
        call()


@pytest.fixture(scope="module")
def vgg():
    return default_quantized_model("PSD2_P8", width=2, calibration_images=2, arch="vgg16")


@pytest.fixture(scope="module")
def vgg_file(vgg, tmp_path_factory):
    return vgg.save(tmp_path_factory.mktemp("vgg") / "vgg16.npz")


def test_vgg16_layers_are_conv_relu_then_maxpool_then_fc(vgg):
    ops_seen = [(l.name, l.op) for l in vgg.layers]
    convs = [f"conv{k}" for k in range(1, 14)]
    expected = []
    conv = iter(convs)
    for entry in (2, "M", 2, "M", 3, "M", 3, "M", 3, "M"):
        if entry == "M":
            expected.append((f"pool{sum(1 for n, _ in expected if n.startswith('pool')) + 1}",
                             "maxpool"))
        else:
            expected += [(next(conv), "conv") for _ in range(entry)]
    assert ops_seen == expected + [("fc", "fc")]
    assert all(l.relu and l.residual is None for l in vgg.conv_layers)
    assert vgg.layers[0].family.name == "dense" and vgg.layers[1].family.name == "PSD2_P8"
    assert all(l.input_scale == l.output_scale for l in vgg.layers if l.op == "maxpool")
    result = run_golden(vgg, torch.zeros(3, 32, 32, dtype=torch.int64))
    assert tuple(result.outputs["pool5"].shape) == (16, 1, 1)
    assert vgg.layers[-1].input == "pool5" and vgg.layers[-1].in_channels == 16


def test_maxpool_layer_round_trips_through_the_file(vgg, vgg_file):
    loaded = QuantizedModel.load(vgg_file)
    assert [l.manifest() for l in loaded.layers] == [l.manifest() for l in vgg.layers]
    pool = loaded.layer("pool3")
    assert (pool.op, pool.kernel_size, pool.stride, pool.weight, pool.multiplier) == (
        "maxpool", 2, 2, None, None)
    image = torch.randint(-128, 128, (3, 32, 32))
    assert torch.equal(run_golden(loaded, image).logits, run_golden(vgg, image).logits)




def _pool(manifest, name="pool2"):
    return next(entry for entry in manifest["layers"] if entry["name"] == name)


@pytest.mark.parametrize("edit, fragments", [
    (lambda m, a: _pool(m).update(kernel_size=3),
     ("layer 'pool2' (maxpool): kernel_size is 3; allowed: 2",)),
    (lambda m, a: _pool(m).update(stride=1), ("layer 'pool2' (maxpool): stride is 1; allowed: 2",)),
    (lambda m, a: _pool(m).update(relu=True), ("layer 'pool2' (maxpool): relu is True",)),
    (lambda m, a: _pool(m).update(residual="conv3"),
     ("layer 'pool2' (maxpool): residual is 'conv3'; allowed: None",)),
    (lambda m, a: _pool(m).update(output_scale=_pool(m)["output_scale"] * 2),
     ("layer 'pool2' (maxpool): output_scale is", "max pooling keeps the scale")),
    (lambda m, a: a.update({"pool2/shift": np.ones(1, dtype=np.int64)}),
     ("layer 'pool2' (maxpool): tensor 'shift' is present",)),
    (lambda m, a: _pool(m, "pool5").update(input="fc"),
     ("layer 'pool5' input: 'fc' is no earlier layer's output",)),
])
def test_malformed_maxpool_layer_is_refused_in_one_line(vgg_file, tmp_path, capsys, edit,
                                                        fragments):
    path = edited_model_file(vgg_file, tmp_path, edit)
    assert main(["golden", "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_maxpool_of_a_too_small_map_is_refused(vgg, tmp_path):
    from dataclasses import replace

    model = QuantizedModel(arch=vgg.arch, family_name=vgg.family_name,
                           input_scale=vgg.input_scale, num_classes=10, input_shape=(3, 32, 32),
                           layers=[replace(l) for l in vgg.layers[:-1]]
                           + [replace(vgg.layers[-1], name="pool6", op="maxpool", input="pool5",
                                      weight=None, bias=None, weight_scale=None,
                                      output_scale=vgg.layers[-2].output_scale,
                                      input_scale=vgg.layers[-2].output_scale,
                                      kernel_size=2, stride=2),
                              replace(vgg.layers[-1], input="pool6")])
    with pytest.raises(PsconvError, match=r"layer 'pool6': input 'pool5' has shape \(16, 1, 1\); "
                                          r"allowed: a C x H x W map of at least 2x2"):
        model.save(tmp_path / "x.npz")


@pytest.mark.parametrize("family", ["dense", *PAPER_FAMILIES])
def test_vgg16_quantize_golden_and_pack_in_every_paper_family(family, tmp_path, capsys):
    path = tmp_path / "v.npz"
    assert main(["quantize", "--network", "vgg16", "--family", family, "--width", "1",
                 "--calibration-images", "1", "-o", str(path)]) == 0
    model = QuantizedModel.load(path)
    assert model.arch == "vgg16" and [l.op for l in model.layers].count("maxpool") == 5
    assert model.conv_layers[1].family.name == family
    capsys.readouterr()
    assert main(["golden", "--model", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    assert [r["layer"] for r in rows if r["op"] == "maxpool"] == [
        f"pool{k}" for k in range(1, 6)]
    assert main(["pack", "--model", str(path)]) == 0
    assert "conv13" in capsys.readouterr().out


def test_vgg16_needs_32x32_images(capsys):
    assert main(["golden", "--network", "vgg16", "--image-size", "16"]) == 2
    err = capsys.readouterr().err
    assert "--image-size is 16 but vgg16 needs images of at least 32x32" in err
    assert main(["quantize", "--network", "vgg16", "--dataset", "digits", "-o", "x.npz"]) == 2
    assert "vgg16 needs images of at least 32x32" in capsys.readouterr().err


def test_network_with_model_is_refused(vgg_file, capsys):
    assert main(["golden", "--model", str(vgg_file), "--network", "vgg16"]) == 2
    assert "--network/--family/--width/--image-size describe the embedded default" in (
        capsys.readouterr().err)


def test_help_names_vgg16(capsys):
    for command in ("quantize", "golden", "run"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "--network {resnet18,vgg16}" in out and "vgg16" in out, command


def test_compiled_vgg16_has_a_pool_step_per_maxpool(vgg):
    program = compile_model(vgg, EngineConfig())
    pools = program.pool_steps
    assert [s.layer for s in pools] == [f"pool{k}" for k in range(1, 6)]
    first = pools[0]
    assert isinstance(first, PoolStep) and first.input == "conv2"
    spec = first.descriptor
    assert (spec.in_channels, spec.out_channels, spec.in_height, spec.in_width, spec.kernel,
            spec.stride, spec.period, spec.relu, spec.residual) == (2, 2, 32, 32, 1, 2, 1,
                                                                     False, False)
    assert first.output_shape == (2, 16, 16)
    assert program.device_steps.index(first) == 2


def test_maxpool_breaking_the_descriptor_rules_is_a_compile_error(vgg):
    """A pool whose channel count exceeds the engine's max_out_channels cannot be described."""
    config = EngineConfig()
    wide = default_quantized_model("PSD2_P8", width=64, calibration_images=1, arch="vgg16")
    config = EngineConfig(max_out_channels=256, max_in_channels=512)
    with pytest.raises(PsconvError, match=r"compile: max-pool layer 'pool4' \(512x4x4\) does "
                                          r"not fit the engine's descriptor rules: engine layer: "
                                          r"out_channels is 512; allowed"):
        compile_model(wide, config)


def test_streamed_vgg16_fuses_every_pool_into_its_convolution(vgg):
    """Streamed, each max pool becomes the output max pool of the convolution before it; with a
    weight buffer of 3 words every pooled convolution runs in several output-channel tiles, each
    pooled on its own. The engine's functional model runs it equal to the golden model at every
    layer the host sees and at the logits."""
    from psconv.firmware.execute import execute_program
    from psconv.sim.engine_model import run_step

    config = EngineConfig(weight_depth=3)
    program = streamed_program(compile_model(vgg, config))
    assert not program.pool_steps
    fused = [s for s in program.engine_steps if s.pool is not None]
    assert sorted({(s.layer, s.pool) for s in fused}) == [
        ("conv10", "pool4"), ("conv13", "pool5"), ("conv2", "pool1"), ("conv4", "pool2"),
        ("conv7", "pool3")]
    assert all(s.descriptor.pool for s in fused) and all(s.tiles > 1 for s in fused)
    assert fused[0].name == "conv2+pool1 tile 1/2" and fused[0].output_layer == "pool1"
    image = ops.quantize_input(torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3)),
                               vgg.input_scale)
    golden = run_golden(vgg, image)
    result = execute_program(program, image,
                             lambda step, x, res: run_step(step, x, res, config.tn,
                                                           config.patch_channels))
    convs_pooled = {s.layer for s in fused}
    for layer in vgg.layers:
        if layer.name in convs_pooled:
            assert layer.name not in result.outputs
        else:
            assert torch.equal(result.outputs[layer.name], golden.outputs[layer.name]), layer.name
    assert torch.equal(result.logits, golden.logits)


NO_BLOCK = ("layer 'pool1' is a max pool that cannot run streamed: the engine has no output "
            "max-pool block (EngineConfig.max_pool is false; the iCEBreaker leaves it out). Use "
            "--mode resident on a board with memory")


def test_streaming_max_pools_on_an_engine_without_the_block_is_refused(vgg, vgg_file, tmp_path,
                                                                        capsys):
    config = EngineConfig(max_pool=False)
    program = compile_model(vgg, config)
    with pytest.raises(PsconvError) as error:
        check_streamable(program)
    assert str(error.value) == NO_BLOCK
    from psconv.firmware.driver import run_on_board

    with pytest.raises(PsconvError, match="layer 'pool1' is a max pool that cannot run streamed"):
        run_on_board(program, torch.zeros(3, 32, 32, dtype=torch.int64), "tcp:127.0.0.1:1")
    config_file = tmp_path / "cfg.json"
    config_file.write_text(json.dumps(config.to_json()))
    assert main(["run", "--model", str(vgg_file), "--config", str(config_file), "--mode",
                 "streamed", "--transport", "tcp:127.0.0.1:1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and NO_BLOCK in err, err


def test_the_pool_flag_is_refused_on_an_engine_without_the_block_and_with_a_residual():
    from psconv.protocol.descriptor import DESCRIPTOR_RULES, LayerSpec, describe_rejection

    spec = LayerSpec(4, 4, 8, 8, period=1, pool=True)
    spec.check(EngineConfig())
    with pytest.raises(PsconvError) as error:
        spec.check(EngineConfig(max_pool=False))
    assert str(error.value) == ("engine layer: pool is True; allowed: only 0 (1 needs the "
                                "engine's output max-pool block: EngineConfig.max_pool)")
    with pytest.raises(PsconvError) as error:
        LayerSpec(4, 4, 8, 8, period=1, pool=True, residual=True).check(EngineConfig())
    assert str(error.value) == ("engine layer: pool is True; allowed: only 0 (a layer with a "
                                "residual is not pooled: the residual window counts output beats)")
    # the board's NAK names the same rule (the gateware check evaluates DESCRIPTOR_RULES)
    config = EngineConfig(max_pool=False)
    rule = next(i for i, r in enumerate(DESCRIPTOR_RULES) if r.name == "pool")
    sent = LayerSpec(4, 4, 8, 8, period=1).encode(config) | (1 << (
        layout_offset(config, "pool")))
    assert describe_rejection(config, rule, sent) == (
        "pool is 1; allowed: only 0 (1 needs the engine's output max-pool block: "
        "EngineConfig.max_pool)")


def layout_offset(config, name):
    from psconv.protocol.descriptor import layer_descriptor_layout

    return layer_descriptor_layout(config)[name].offset


class ResidualThenPool(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x) + x), 2)
        return self.fc(x.mean(dim=(2, 3)))


def test_a_max_pool_after_a_residual_add_is_refused_streamed_naming_the_layer():
    from psconv.nn.importer import import_model

    torch.manual_seed(4)
    quantized, _ = import_model(ResidualThenPool().eval(), torch.rand(4, 3, 8, 8), EngineConfig(),
                                "residual-pool")
    program = compile_model(quantized, EngineConfig())
    pool = program.pool_steps[0]
    with pytest.raises(PsconvError) as error:
        check_streamable(program)
    assert str(error.value) == (
        f"layer {pool.layer!r} is a max pool that cannot run streamed: it pools 'conv', a "
        f"convolution with a residual add (the engine pools no layer with a residual). Use "
        f"--mode resident on a board with memory")


def test_vgg16_checkpoint_quantizes_to_the_same_model_as_its_network(tmp_path):
    """--checkpoint with --network vgg16 loads the state dict into VGG16 of that width."""
    from psconv.nn.default import seeded_network

    torch.save(seeded_network("vgg16", "PS2_P8", 2).state_dict(), tmp_path / "ck.pt")
    common = ["--network", "vgg16", "--family", "PS2_P8", "--width", "2",
              "--calibration-images", "1"]
    assert main(["quantize", *common, "--checkpoint", str(tmp_path / "ck.pt"),
                 "-o", str(tmp_path / "c.npz")]) == 0
    assert main(["quantize", *common, "-o", str(tmp_path / "s.npz")]) == 0
    assert (tmp_path / "c.npz").read_bytes() == (tmp_path / "s.npz").read_bytes()
    assert main(["quantize", "--network", "vgg16", "--width", "4", "--checkpoint",
                 str(tmp_path / "ck.pt"), "-o", str(tmp_path / "x.npz")]) == 2
