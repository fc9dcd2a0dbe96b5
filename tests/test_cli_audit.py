"""User-facing CLI behaviour found in an audit: bounded inputs, quiet pipes, progress bars only on
a terminal, one calibration recipe, and help that documents every option and its default."""

import argparse
import os
import subprocess
import sys

import pytest
import torch

from psconv.cli import build_parser, main


def test_model_stats_refuses_periods_beyond_the_mask_table(capsys):
    """P = 10**6 used to build a million-entry table per variant and never finish."""
    assert main(["model-stats", "--periods", "8", "1000000"]) == 2
    err = capsys.readouterr().err
    assert "--periods: pattern family: P is 1000000; allowed: an integer 1..64" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["golden"], ["pack"], ["run", "--no-progress"], ["demo", "--no-progress"],
    ["quantize", "-o", "unused.npz"], ["bench", "storage"], ["bench", "e2e"],
    ["bench", "impl"], ["train", "-o", "unused"], ["bench", "accuracy"],
    ["evaluate", "--checkpoint", "unused.pt", "--family", "PS4_P8"],
])
def test_width_is_bounded_before_anything_is_allocated(argv, capsys):
    """--width 100000 used to end in a 360 GB torch allocation traceback."""
    assert main(argv + ["--width", "100000"]) == 2
    err = capsys.readouterr().err
    assert "--width is 100000; allowed: an integer 1..64" in err and "Traceback" not in err


def test_closed_stdout_pipe_ends_quietly():
    """``psconv model-stats | head -1``: the reader is gone; no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)        # nobody will ever read: the first flush of stdout fails
    try:
        proc = subprocess.run([sys.executable, "-m", "psconv.cli", "model-stats", "--arch",
                               "resnet18", "--k", "1", "--periods", "4"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 141           # 128 + SIGPIPE, as for `yes | head -1`


def test_a_broken_pipe_elsewhere_is_not_hidden(monkeypatch):
    """Only stdout's reader going away is quiet; a dead link (a socket's EPIPE) still surfaces."""
    from psconv.commands import model_stats

    def dead_link(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(model_stats, "variant_table", dead_link)
    with pytest.raises(BrokenPipeError):
        main(["model-stats", "--arch", "resnet18"])


def test_quantize_without_checkpoint_is_the_embedded_default(tmp_path, capsys):
    """Both calibrate on DEFAULT_CALIBRATION_IMAGES seeded images, so the integers are equal."""
    from psconv.nn.default import DEFAULT_CALIBRATION_IMAGES, default_quantized_model
    from psconv.qmodel import QuantizedModel

    path = tmp_path / "q.npz"
    assert main(["quantize", "-o", str(path), "--width", "2"]) == 0
    written, default = QuantizedModel.load(path), default_quantized_model(width=2)
    assert written.input_scale == default.input_scale
    assert [layer.name for layer in written.layers] == [layer.name for layer in default.layers]
    for a, b in zip(written.layers, default.layers):
        for field in ("weight", "bias", "multiplier", "shift", "residual_multiplier"):
            if getattr(b, field) is not None:
                assert torch.equal(getattr(a, field), getattr(b, field)), (a.name, field)
    args = build_parser().parse_args(["quantize", "-o", str(path)])
    assert args.calibration_images == DEFAULT_CALIBRATION_IMAGES


def test_no_progress_frames_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """tqdm's disable=None: a bar on a terminal, nothing in a log (capsys' stderr is no tty)."""
    assert main(["bench", "engine", "--model-only", "--families", "PS4_P8", "--layers", "stem",
                 "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "PS4_P8" in captured.out


# Every command that shows a progress bar; each accepts --no-progress.
PROGRESS_COMMANDS = (["run"], ["demo"], ["build"], ["bench", "e2e"], ["bench", "engine"],
                     ["bench", "impl"], ["train", "-o", "unused"], ["evaluate"],
                     ["bench", "accuracy"])


@pytest.mark.parametrize("command", PROGRESS_COMMANDS, ids=" ".join)
def test_every_command_with_a_progress_bar_takes_no_progress(command):
    assert build_parser().parse_args(command + ["--no-progress"]).no_progress is True


def test_impl_no_progress_keeps_the_build_lines_quiet_drops_them(tmp_path, monkeypatch, capsys):
    """bench impl: --no-progress drops only the bar; --quiet also the line printed per build."""
    from psconv.bench import impl
    from psconv.rtl_gen.fmax import FmaxReport, config_record

    def fake_build(config, folder, freq, route, reuse, router, placer, progress=None):
        assert progress is None          # nothing to show the build's progress in
        return FmaxReport(config=config_record(config), luts=900, ffs=800, dsps=2, brams=3,
                          fmax_mhz=50.0, target_mhz=freq, routed=route, router=router,
                          placer=placer, seconds={"synth_s": 1}), False

    monkeypatch.setattr(impl, "build", fake_build)
    argv = ["bench", "impl", "--grid", "none", "--dense-baseline", "1x2", "--families",
            "PSD1_P16", "--width", "2", "--set", "max_in_channels=16", "--set",
            "max_out_channels=16", "--set", "max_height=8", "--set", "max_width=8",
            "--boards", "none",
            "--out", str(tmp_path / "results"), "--build-dir", str(tmp_path / "build")]
    assert main(argv + ["--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "1x2 dense: LUT4" in captured.out and captured.err == ""
    assert main(argv + ["--quiet"]) == 0
    assert "1x2 dense: LUT4" not in capsys.readouterr().out


def _options(parser, command=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, command + (name,))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(command), action


def test_every_option_has_help_and_shows_its_default():
    missing = []
    for command, action in _options(build_parser()):
        name = f"psconv {command} {'/'.join(action.option_strings) or action.dest}"
        text = action.help or ""
        if not text:
            missing.append(f"{name}: no help")
        elif action.default not in (None, False) and not any(
                mark in text for mark in ("(default", "default:", "%(default)")):
            missing.append(f"{name}: default {action.default!r} not shown")
    assert missing == []


def test_help_states_the_bounds():
    parser = build_parser()
    sub = {name: p for action in parser._actions if isinstance(action, argparse._SubParsersAction)
           for name, p in action.choices.items()}
    assert "1..64" in sub["golden"].format_help()
    assert "1..64" in sub["quantize"].format_help()
    assert "1..64" in sub["model-stats"].format_help()
