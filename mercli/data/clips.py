"""Labelled clips of a raw-video dataset: the label CSV's rows and the media file of each.

The layout follows MMSA-FET: a ``label.csv`` with ``video_id,clip_id,text,label,mode`` and one
clip per row at ``RAW_DIR/Raw/<video_id>/<clip_id>.mp4`` or ``RAW_DIR/<video_id>/<clip_id>.mp4``
(any media extension; a CMU-MOSI ``id`` may also be a flat ``Raw/<id>.*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mercli.features.media import MEDIA_EXTENSIONS

ID_SEPARATOR = "$_$"  # MMSA's "<video_id>$_$<clip_id>"


@dataclass(frozen=True)
class Clip:
    """One labelled clip of the CSV.

    Attributes:
        id: ``"<video_id>$_$<clip_id>"`` (or the CSV's ``id`` as it is).
        text, label, split: from the CSV (split: train, valid or test).
        path: the media file found for it, or None.
    """

    id: str
    text: str
    label: float
    split: str
    path: Path | None


def split_id(clip_id: str) -> tuple[str, str]:
    """(video_id, clip_id) of an id; a CMU-MOSI ``id`` without ``$_$`` is split at its last
    underscore (``03bSnISJMiM_1`` -> ``03bSnISJMiM``, ``1``)."""
    if ID_SEPARATOR in clip_id:
        video, clip = clip_id.split(ID_SEPARATOR, 1)
        return video, clip
    video, _, clip = clip_id.rpartition("_")
    return video, clip


class ClipFinder:
    """Finds clip files under ``RAW_DIR`` (each folder is listed once)."""

    def __init__(self, raw_dir: Path) -> None:
        self.raw_dir = raw_dir
        self.extensions = MEDIA_EXTENSIONS
        self.listings: dict[Path, dict[str, list[Path]]] = {}

    def _listing(self, folder: Path) -> dict[str, list[Path]]:
        if folder not in self.listings:
            by_stem: dict[str, list[Path]] = {}
            if folder.is_dir():
                for p in sorted(folder.iterdir()):
                    if p.suffix.lower() in self.extensions and p.is_file():
                        by_stem.setdefault(p.stem, []).append(p)
            self.listings[folder] = by_stem
        return self.listings[folder]

    def candidates(self, id_: str) -> list[tuple[Path, str]]:
        """(folder, file stem) pairs where the clip ``id_`` may be, in the order searched."""
        video_id, clip_id = split_id(id_)
        pairs = [(self.raw_dir / "Raw", id_), (self.raw_dir, id_)]  # flat: <id>.*
        if video_id:
            pairs = [(self.raw_dir / "Raw" / video_id, clip_id), (self.raw_dir / video_id, clip_id)]
            pairs += [] if ID_SEPARATOR in id_ else [(self.raw_dir / "Raw", id_)]
        return pairs

    def unsafe(self, id_: str) -> str | None:
        """Why ``id_`` may not name a file (a path that leaves ``RAW_DIR``), or None.

        The ids come from the CSV: ``../../x`` or ``/etc/x`` must not read files outside the
        dataset into it. An id part may not be empty, ``.``, ``..``, or hold a path separator.
        """
        for part in (id_, *split_id(id_)):
            if not part:
                continue
            if (
                part in (".", "..")
                or "/" in part.replace(ID_SEPARATOR, "")
                or "\\" in part
                or "\0" in part
                or Path(part).is_absolute()
            ):
                return f"unsafe id {id_!r}: it names a path outside {self.raw_dir}"
        return None

    def find(self, id_: str) -> Path | None:
        """``Raw/<video>/<clip>.*`` then ``<video>/<clip>.*`` (a CMU-MOSI ``id`` may also be a
        flat ``Raw/<id>.*``); ``.mp4`` first where a stem has several media files. None for an
        id that is not there or is :meth:`unsafe`."""
        if self.unsafe(id_):
            return None
        for folder, stem in self.candidates(id_):
            found = self._listing(folder).get(stem)
            if found:
                return min(found, key=lambda p: (p.suffix.lower() != ".mp4", p.name))
        return None

    def not_found(self, id_: str) -> str:
        """The reason of a clip that is not there."""
        places = " or ".join(f"{folder / stem}.*" for folder, stem in self.candidates(id_))
        return f"file not found: no media file at {places}"


def read_clips(labels: str | Path, raw_dir: str | Path) -> list[Clip]:
    """The CSV's rows in order (train, valid, test), each with the file found for it.

    Raises:
        DatasetError: the CSV is missing or malformed (naming the line and column).
    """
    from mercli.data.labels_csv import read_label_csv

    finder = ClipFinder(Path(raw_dir))
    clips = []
    for split, rows in read_label_csv(labels).items():
        for row in rows:
            clips.append(Clip(row.id, row.text, row.label, split, finder.find(row.id)))
    return clips
