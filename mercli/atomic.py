"""Writing files so that a crash never leaves a half-written one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it onto ``path``.

    The rename is atomic on one file system: readers see the old file or the whole new one.
    On failure the temporary file is removed and the error goes on.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        try:
            write(tmp)
            tmp.close()
            os.chmod(tmp.name, 0o644)  # temporary files are private; results are meant to be shared
            os.replace(tmp.name, path)
        except BaseException:
            os.unlink(tmp.name)
            raise
    return path
