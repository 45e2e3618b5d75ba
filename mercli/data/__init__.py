"""Dataset adapters: MMSA feature pickles, UR-FUNNY's pickles and MMSA-style label CSVs.

Every loader returns :class:`SplitDatasets`: one map-style dataset per split (``train``, ``valid``,
``test``), the :class:`~mercli.config.DatasetInfo` the model is built from, and the ``collate``
function that turns a list of samples into a :class:`~mercli.schema.Batch`.

Importing this package is cheap: torch is imported only by the loaders that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mercli.schema import MAX_TEXT_TOKENS

if TYPE_CHECKING:
    from mercli.config import DatasetInfo
    from mercli.data.samples import Sample
    from mercli.features.profile import FeatureProfile
    from mercli.schema import Batch

SPLITS: tuple[str, ...] = ("train", "valid", "test")
# Sentiment labels of CMU-MOSI/MOSEI (and CH-SIMS, in [-1, 1]) lie on this scale.
LABEL_RANGE = (-3.0, 3.0)
# Text width reported for token ids: the model replaces it with its backbone's width.
D_TOKEN_PLACEHOLDER = 768

# The benchmarks mer trains and evaluates on (``--dataset``, ``--preset``).
BENCHMARKS: tuple[str, ...] = ("mosi", "mosei", "urfunny")
DatasetKind = Literal["mosi", "mosei", "urfunny", "mosi-text", "mosei-text"]
TextSource = Literal["states", "tokens"]


class DatasetError(ValueError):
    """A dataset file that is missing, malformed or not what its loader expects.

    The message names the file and, where they apply, the split, key, line and column.
    """

    def __init__(
        self,
        path: str | Path,
        problem: str,
        *,
        split: str | None = None,
        key: str | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.path = str(path)
        self.split = split
        self.key = key
        self.line = line
        self.column = column
        where = [self.path]
        if split is not None:
            where.append(f"split {split!r}")
        if line is not None:
            where.append(f"line {line}")
        if key is not None:
            where.append(f"key {key!r}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {problem}")


@dataclass(frozen=True)
class SplitDatasets:
    """The three splits of a dataset with what the model and the loader need to use them.

    Attributes:
        train, valid, test: map-style datasets of :class:`~mercli.data.samples.Sample`.
        info: feature widths per modality and the task, read from the data.
        collate: ``list[Sample] -> Batch``, for ``DataLoader(collate_fn=...)``.
        feature_profile: the extractors that made the features when the data records them
            (pickles written by ``mer prepare``), else None.
    """

    train: Any
    valid: Any
    test: Any
    info: DatasetInfo
    collate: Callable[[list[Sample]], Batch]
    feature_profile: FeatureProfile | None = None

    def split(self, name: str) -> Any:
        """The dataset of split ``name`` (one of :data:`SPLITS`)."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        return getattr(self, name)


def require_splits(data: SplitDatasets, path: str | Path) -> None:
    """Raise :class:`DatasetError` when a split is empty (training would fit or select on
    nothing, or report metrics of nothing)."""
    for name in SPLITS:
        if len(data.split(name)) == 0:
            raise DatasetError(path, "the split is empty; training needs all three", split=name)


def load_dataset(
    kind: DatasetKind,
    path: str | Path,
    *,
    text_source: TextSource = "states",
    tokenizer: Any = None,
    use_context: bool = False,
    max_words: int = 64,
    max_text_tokens: int = MAX_TEXT_TOKENS,
) -> SplitDatasets:
    """Load a dataset by kind.

    Args:
        kind: ``mosi``/``mosei`` (an MMSA pickle), ``urfunny`` (a folder of UR-FUNNY pickles), or
            ``mosi-text``/``mosei-text`` (an MMSA-style ``label.csv``, text only).
        path: the pickle, folder or CSV.
        text_source: ``states`` (frozen word/token vectors) or ``tokens`` (ids for a backbone).
        tokenizer: a Hugging Face tokenizer; needed where token ids are not stored in the data
            (the label CSVs, UR-FUNNY with ``text_source="tokens"``).
        use_context: UR-FUNNY only: put the context sentences before the punchline.
        max_words: UR-FUNNY only: keep at most this many (last) words per sample.
        max_text_tokens: tokenizer truncation length.
    """
    if kind in ("mosi", "mosei"):
        from mercli.data.mmsa import load_mmsa

        return load_mmsa(path, name=kind, text_source=text_source)
    if kind == "urfunny":
        from mercli.data.urfunny import load_urfunny

        return load_urfunny(
            path,
            text_source=text_source,
            use_context=use_context,
            max_words=max_words,
            tokenizer=tokenizer,
            max_text_tokens=max_text_tokens,
        )
    if kind in ("mosi-text", "mosei-text"):
        from mercli.data.labels_csv import load_label_csv

        if tokenizer is None:
            raise ValueError(f"{kind} holds raw text only: pass a tokenizer")
        return load_label_csv(
            path, tokenizer, name=kind.removesuffix("-text"), max_text_tokens=max_text_tokens
        )
    raise ValueError(
        f"unknown dataset kind {kind!r}; choose from mosi, mosei, urfunny, mosi-text, mosei-text"
    )


__all__ = [
    "BENCHMARKS",
    "D_TOKEN_PLACEHOLDER",
    "LABEL_RANGE",
    "SPLITS",
    "DatasetError",
    "DatasetKind",
    "SplitDatasets",
    "TextSource",
    "load_dataset",
    "require_splits",
]
