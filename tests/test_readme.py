"""The README's two set-up commands are exactly what CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```sh")
    end = lines.index("```", start + 1)
    return [line for line in lines[start + 1:end] if line.strip() and not line.startswith("#")]


def test_readme_opens_with_two_commands_that_ci_runs():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f"README command not run by .ci/run: {command}"
    assert "torch==2.13.0" in commands[0]  # the CPU wheel on disk, never a CUDA build
    assert "pytest" in commands[1]
