"""MMSA-convention label CSVs, for text-only training on real transcripts.

CMU-MOSI's ``label.csv`` has ``id,text,label,mode`` and says ``dev`` for the validation split;
CMU-MOSEI's (and ``mer prepare``'s) has ``video_id,clip_id,text,label,mode`` and says ``valid``.
Ids of the second form become ``"<video_id>$_$<clip_id>"``, as in the MMSA pickles.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from mercli.config import DatasetInfo
from mercli.data import D_TOKEN_PLACEHOLDER, LABEL_RANGE, SPLITS, DatasetError, SplitDatasets
from mercli.schema import MAX_TEXT_TOKENS

_MODES = {"train": "train", "dev": "valid", "valid": "valid", "test": "test"}
_ID_FORMS = (("id",), ("video_id", "clip_id"))


class LabelledText(NamedTuple):
    """One row of a label CSV."""

    id: str
    text: str
    label: float


def read_label_csv(path: str | Path) -> dict[str, list[LabelledText]]:
    """Rows of an MMSA-style label CSV grouped by split (``train``, ``valid``, ``test``).

    Raises:
        DatasetError: a missing column, a label that is not a finite number or an unknown mode,
            naming the file, line and column.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "no such file")
    try:
        return _read_rows(path)
    except UnicodeDecodeError as error:
        raise DatasetError(
            path,
            f"not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} at offset "
            f"{error.start}); save the CSV as UTF-8",
        ) from error
    except csv.Error as error:
        raise DatasetError(path, f"not a readable CSV ({error})") from error


def _read_rows(path: Path) -> dict[str, list[LabelledText]]:
    splits: dict[str, list[LabelledText]] = {split: [] for split in SPLITS}
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        id_columns = _id_columns(path, reader.fieldnames or [])
        for row in reader:
            line = reader.line_num
            missing = next(
                (c for c in (*id_columns, "text", "label", "mode") if row.get(c) is None), None
            )
            if missing is not None:
                raise DatasetError(path, "row has too few fields", line=line, column=missing)
            mode = row["mode"].strip().lower()
            if mode not in _MODES:
                raise DatasetError(
                    path,
                    f"unknown mode {row['mode']!r} (expected train, valid, dev or test)",
                    line=line,
                    column="mode",
                )
            splits[_MODES[mode]].append(
                LabelledText(
                    "$_$".join(row[c] for c in id_columns),
                    row["text"],
                    _label(path, line, row["label"]),
                )
            )
    return splits


def _id_columns(path: Path, header: Sequence[str]) -> tuple[str, ...]:
    for required in ("text", "label", "mode"):
        if required not in header:
            raise DatasetError(
                path, f"missing column (header: {','.join(header)})", line=1, column=required
            )
    for form in _ID_FORMS:
        if all(c in header for c in form):
            return form
    raise DatasetError(
        path,
        f"missing column (header: {','.join(header)}); expected id or video_id,clip_id",
        line=1,
        column="id",
    )


def _label(path: Path, line: int, value: str) -> float:
    try:
        label = float(value)
    except ValueError:
        label = math.nan
    if not math.isfinite(label):
        raise DatasetError(
            path, f"label {value!r} is not a finite number", line=line, column="label"
        )
    low, high = LABEL_RANGE
    if not low <= label <= high:
        raise DatasetError(
            path,
            f"label {value!r} is outside [{low:g}, {high:g}], the sentiment scale",
            line=line,
            column="label",
        )
    return label


def load_label_csv(
    path: str | Path, tokenizer: Any, *, name: str = "mosi", max_text_tokens: int = MAX_TEXT_TOKENS
) -> SplitDatasets:
    """Text-only datasets from a label CSV; ``collate`` tokenises with ``tokenizer``.

    Batches hold ``inputs={"text": ids (B, T) long}``, ``masks={"text": (B, T) bool}`` and float
    labels ``(B,)``, with T the longest text in the batch (at most ``max_text_tokens``).
    """
    from mercli.data.samples import Collator, ListDataset, Sample

    rows = read_label_csv(path)
    splits: dict[str, Any] = {
        split: ListDataset([Sample(features={}, label=r.label, id=r.id, text=r.text) for r in rs])
        for split, rs in rows.items()
    }
    info = DatasetInfo(name=name, d_in={"text": D_TOKEN_PLACEHOLDER}, task="regression")
    collate = Collator(task="regression", tokenizer=tokenizer, max_text_tokens=max_text_tokens)
    return SplitDatasets(**splits, info=info, collate=collate)
