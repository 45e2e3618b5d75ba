"""Writing files so that a crash never leaves a half-written one, or a stray temporary file.

- :func:`write_atomically`: one file, through a temporary file beside it that is flushed to disk
  and renamed onto the target. A temporary name records the writing process
  (``.<name>.<pid>.<random>.tmp``), so the next write of the same target removes the ones whose
  writer is dead (a killed run does not leave them behind for ever).
- :func:`commit_folder`: a set of files that belong together (a checkpoint and its optimizer
  state), written into a fresh folder and swapped in by renames; :func:`recover_folder` finishes
  or undoes a swap that a kill interrupted.
- :func:`check_writable`: whether a file can be written there, before hours of work go into it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

_TMP_SUFFIX = ".tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:
        return False
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> int:
    """Remove the temporary files of writes of ``path`` whose writing process is gone.

    Returns:
        how many were removed.
    """
    path = Path(path)
    removed = 0
    prefix = f".{path.name}."
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return 0
    for p in siblings:
        name = p.name
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX)):
            continue
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            with contextlib.suppress(OSError):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed += 1
    return removed


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (renames into it) to disk; a no-op where folders can't be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk, rename it to ``path``.

    The rename is atomic on one file system: readers see the old file or the whole new one.
    On failure (a full disk included) the temporary file is removed and the error goes on; the
    previous ``path``, if any, is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=_TMP_SUFFIX, delete=False
    ) as tmp:
        try:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
            tmp.close()
            os.chmod(tmp.name, 0o644)  # temporary files are private; results are meant to be shared
            os.replace(tmp.name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp.name)
            raise
    fsync_dir(path.parent)
    return path


def staging_folder(target: str | os.PathLike[str]) -> Path:
    """A fresh, empty folder beside ``target`` to write a set of files into before
    :func:`commit_folder` (named for this process, so a dead writer's is removed later)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    return Path(
        tempfile.mkdtemp(
            dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=_TMP_SUFFIX
        )
    )


def _old(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def commit_folder(staged: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Replace the folder ``target`` by ``staged`` as one step, as far as readers can tell.

    Every file of ``staged`` is flushed to disk first. Then ``target`` is renamed aside,
    ``staged`` renamed onto ``target`` and the old folder removed. A kill between the two
    renames leaves the old complete set aside, which :func:`recover_folder` puts back.
    """
    staged, target = Path(staged), Path(target)
    for p in staged.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(staged)
    old = _old(target)
    recover_folder(target)
    if target.exists():
        os.replace(target, old)
    os.replace(staged, target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def recover_folder(target: str | os.PathLike[str]) -> None:
    """Undo what a kill during :func:`commit_folder` left: put a set that was renamed aside back
    when ``target`` is missing, remove it when ``target`` is whole, and remove dead writers'
    staging folders."""
    target = Path(target)
    old = _old(target)
    if old.exists():
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, target)
    remove_stale_temporaries(target)


def check_writable(path: str | os.PathLike[str], what: str = "output") -> None:
    """Check, before the work, that a file can be written at ``path``: its folder exists or
    can be made, and a file can be created in it. Nothing is left behind, not even the folders
    made for the check (the write makes them again); an existing ``path`` is not touched.

    Raises:
        ValueError: naming ``path``, ``what`` it was for and why it cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: cannot write the {what}: it is a folder")
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=_TMP_SUFFIX
        ):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{path}: cannot write the {what} ({reason})") from error
    finally:
        _remove_empty_folders(missing)


def _remove_empty_folders(folders: list[Path]) -> None:
    """Remove the folders a check made, deepest first; any that is no longer empty stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
