"""Where a command will write, checked before it reads or trains anything: an existing file where a folder is
expected, a parent that is a file, or a place the user cannot write is one clear line (exit code 2), not a
traceback after minutes of work."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from inspect_train.errors import InputError

# OSError numbers that mean "this place cannot be written", which the CLI reports in one line.
WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EEXIST, errno.ENOTDIR, errno.EISDIR,
                errno.ENAMETOOLONG, errno.EDQUOT}


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _probe_writable(folder: Path, flag: str, target: Path) -> None:
    """Create and remove a temporary file in `folder`: the only test that holds for root, read-only mounts and
    network filesystems alike."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise InputError(f"{flag} {target}: cannot write in {folder} ({err.strerror})") from None


def check_output_folder(path: str | Path, flag: str = "--out") -> Path:
    """`path` as a folder this command may create or write into; nothing is created."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path}: is a file, not a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise InputError(f"{flag} {path}: {existing} is a file, so no folder can be made under it")
    _probe_writable(existing, flag, path)
    return path


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """`path` as a file this command may create or replace; nothing is created."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a folder; give a file name")
    existing = _nearest_existing(path.parent)
    if not existing.is_dir():
        raise InputError(f"{flag} {path}: {existing} is a file, so no folder can be made under it")
    _probe_writable(existing, flag, path)
    return path


def make_folder(path: str | Path, flag: str = "--out") -> Path:
    """Create the output folder (and its parents) checked by `check_output_folder`; a race or a full disk
    is still one line."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{flag} {path}: cannot create it ({err.strerror})") from None
    return path


def portable_path(path: Path, base: Path) -> str:
    """`path` as a model file or a generator checkpoint records it: relative to the run folder `base` when inside
    it, else the file's name, so that no shipped file carries a path of the machine it was made on."""
    path, base = Path(path).resolve(), Path(base).resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else path.name


def write_error_line(err: OSError) -> str | None:
    """The one line for an OSError that says a place cannot be written, else None (a bug keeps its traceback)."""
    if err.errno not in WRITE_ERRNOS:
        return None
    where = err.filename if err.filename is not None else "a file"
    return f"cannot write {os.fspath(where)}: {err.strerror}"
