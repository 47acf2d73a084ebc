"""The one atomic writer: every file goes through a temporary file in the same folder, renamed over the target,
so a crash or a kill never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def write_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(temporary path)`, then rename the temporary file over `path` (created with its parents)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def write_json_atomic(data: Any, path: str | Path) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")

    return write_atomic(path, write)
