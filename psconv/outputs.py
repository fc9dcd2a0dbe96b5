"""Paths a command writes: one check for all of them, run before any work starts.

A command declares each path option it writes with :func:`output_file` (a file such as
``quantize -o``) or :func:`output_folder` (a folder of files such as ``generate -o`` or
``bench ... --out``) as the option's argparse ``type``. The CLI calls :func:`check_outputs` on
the parsed arguments before the command runs, so a file option naming a directory, a folder
option naming a file, or a path below an existing file is a one-line :class:`PsconvError`
instead of a traceback after minutes of work. Library writers call :func:`check_output_file` or
:func:`check_output_folder` themselves.
"""

from __future__ import annotations

from pathlib import Path

from .errors import PsconvError


class OutputPath(str):
    """A path-valued option's text, remembering the option and whether it names a folder."""

    option: str
    folder: bool

    def check(self) -> Path:
        if self.folder:
            return check_output_folder(self, self.option)
        return check_output_file(self, self.option)


def _path_type(option: str, folder: bool):
    def convert(text: str) -> OutputPath:
        path = OutputPath(text)
        path.option, path.folder = option, folder
        return path

    convert.__name__ = "output folder" if folder else "output file"
    return convert


def output_file(option: str):
    """argparse ``type`` of an option (named ``option`` in errors) that names a file to write."""
    return _path_type(option, folder=False)


def output_folder(option: str):
    """argparse ``type`` of an option (named ``option`` in errors) that names a folder to write."""
    return _path_type(option, folder=True)


def _check_parents(path: Path, what: str) -> None:
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise PsconvError(f"{what}: {path} lies below {parent}, which is a file, not a "
                              f"directory; allowed: a path whose parent folders are folders")


def check_output_file(path, what: str) -> Path:
    """``path`` as a :class:`Path`, or a :class:`PsconvError` naming ``what`` if it is a directory
    or lies below a file."""
    path = Path(path)
    if path.is_dir():
        raise PsconvError(f"{what}: {path} is a directory; allowed: the path of a file "
                          f"(e.g. a file name inside {path})")
    _check_parents(path, what)
    return path


def check_output_folder(path, what: str) -> Path:
    """``path`` as a :class:`Path`, or a :class:`PsconvError` naming ``what`` if it exists and is
    not a directory or lies below a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PsconvError(f"{what}: {path} is a file; allowed: a folder (created if missing)")
    _check_parents(path, what)
    return path


def check_outputs(args) -> None:
    """Check every :class:`OutputPath` among the parsed ``args`` (see the module doc)."""
    for value in vars(args).values():
        if isinstance(value, OutputPath):
            value.check()
