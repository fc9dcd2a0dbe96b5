"""The package boundaries hold: the wire protocol is side-free, gateware and host meet only there.

Every ``import`` statement is read from the source (function-local ones too, which would hide a
cycle from a plain ``import``), so a new import across a boundary fails here by name.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> its folder in the source tree
FOLDERS = {
    "psconv.protocol": ROOT / "psconv" / "protocol",
    "psconv.hw": ROOT / "hw",
    "psconv.firmware": ROOT / "firmware",
}

FORBIDDEN = {
    "psconv.protocol": ("psconv.hw", "psconv.firmware", "psconv.sim", "psconv.rtl_gen",
                        "psconv.commands", "psconv.bench", "psconv.nn"),
    "psconv.hw": ("psconv.firmware", "psconv.sim", "psconv.rtl_gen"),
    "psconv.firmware": ("psconv.hw", "psconv.rtl_gen"),
}


def imported_modules(path: Path, package: str):
    """(line, absolute module name) of every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if path.name != "__init__.py" or node.level > 1:
                    base = base[:len(base) - (node.level - 1)]
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.lineno, node.module


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_their_boundary(package):
    offending = []
    for path in sorted(FOLDERS[package].glob("*.py")):
        for line, module in imported_modules(path, package):
            if any(module == f or module.startswith(f + ".") for f in FORBIDDEN[package]):
                offending.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not offending, "\n".join(offending)


def test_the_checker_sees_relative_and_local_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from .sibling import x\n\ndef f():\n    from psconv.firmware import driver\n")
    found = [module for _, module in imported_modules(source, "psconv.hw")]
    assert found == ["psconv.hw.sibling", "psconv.firmware"]
