"""UR-FUNNY from the ``*.pkl`` files of its release: humour on the punchline.

A folder with ``data_folds.pkl`` ({train, dev, test: [ids]}), ``humor_label_sdk.pkl`` ({id: 0/1}),
``covarep_features_sdk.pkl`` and ``openface_features_sdk.pkl`` ({id: {punchline_features
(n_words, d), context_features [sentence][word][d]}}), and the language: V2 ``language_sdk.pkl``
(sentences and word indexes) or V1 ``word_embedding_indexes_sdk.pkl`` (indexes only), plus
``word_embedding_list.pkl`` (GloVe 300-d per word index) when text is given as word vectors.

Features are word-aligned, so the three modalities of a sample have the same number of steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mercli.config import DatasetInfo
from mercli.data import D_TOKEN_PLACEHOLDER, DatasetError, SplitDatasets, TextSource
from mercli.data.safe_pickle import load_pickle
from mercli.data.samples import Collator, ListDataset, Sample
from mercli.schema import MAX_TEXT_TOKENS

_FOLDS = {"train": "train", "dev": "valid", "valid": "valid", "test": "test"}
_FEATURE_FILES = {"audio": "covarep_features_sdk.pkl", "vision": "openface_features_sdk.pkl"}


def load_urfunny(
    directory: str | Path,
    *,
    text_source: TextSource = "states",
    use_context: bool = False,
    max_words: int = 64,
    tokenizer: Any = None,
    max_text_tokens: int = MAX_TEXT_TOKENS,
) -> SplitDatasets:
    """Load UR-FUNNY V1 or V2 from its pickles.

    Args:
        directory: the folder holding the pickles.
        text_source: ``states``: GloVe vectors per word (needs ``word_embedding_list.pkl``);
            ``tokens``: the raw sentence, tokenised by ``tokenizer`` at collate time (V2 only).
        use_context: put the context sentences' words before the punchline's.
        max_words: keep at most this many words per sample (the last ones, so the punchline stays).
        tokenizer: a Hugging Face tokenizer, required with ``text_source="tokens"``.
        max_text_tokens: tokenizer truncation length.

    Raises:
        DatasetError: naming the file, split and key (segment id) of the first problem found.
    """
    directory = Path(directory)
    if text_source == "tokens" and tokenizer is None:
        raise ValueError("UR-FUNNY text as tokens needs a tokenizer")
    language_path = _language_path(directory)
    language = _load_dict(language_path)
    embeddings = _embeddings(directory, text_source)
    features = {m: _load_dict(directory / name) for m, name in _FEATURE_FILES.items()}
    labels = _load_dict(directory / "humor_label_sdk.pkl")
    folds = _folds(directory / "data_folds.pkl")
    if text_source == "tokens" and language_path.name != "language_sdk.pkl":
        raise DatasetError(
            language_path,
            "UR-FUNNY V1 has no sentences to tokenise; use "
            "text_source='states' or the V2 language_sdk.pkl",
        )
    reader = _SampleReader(
        directory,
        language,
        language_path.name,
        features,
        labels,
        embeddings,
        use_context,
        max_words,
    )
    splits: dict[str, Any] = {
        split: ListDataset([reader.read(split, i) for i in ids]) for split, ids in folds.items()
    }
    if reader.n_truncated:
        warnings.warn(
            f"{directory}: {reader.n_truncated} sentence(s) had modalities of unequal "
            "length; each was cut to its shortest modality",
            stacklevel=2,
        )
    d_text = D_TOKEN_PLACEHOLDER if embeddings is None else int(embeddings.shape[1])
    info = DatasetInfo(
        name="urfunny",
        d_in={"text": d_text, "audio": reader.widths["audio"], "vision": reader.widths["vision"]},
        task="classification",
        n_classes=2,
    )
    collate = Collator(task="classification", tokenizer=tokenizer, max_text_tokens=max_text_tokens)
    return SplitDatasets(**splits, info=info, collate=collate)


class _SampleReader:
    """Builds one :class:`Sample` per segment id, checking it against the other files."""

    def __init__(
        self,
        directory: Path,
        language: dict,
        language_file: str,
        features: dict[str, dict],
        labels: dict,
        embeddings: np.ndarray | None,
        use_context: bool,
        max_words: int,
    ) -> None:
        self.directory = directory
        self.language = language
        self.features = features
        self.labels = labels
        self.embeddings = embeddings
        self.use_context = use_context
        self.max_words = max_words
        self.language_file = language_file
        self.widths = {
            m: _feature_width(directory / _FEATURE_FILES[m], table) for m, table in features.items()
        }
        self.n_truncated = 0

    def read(self, split: str, segment: Any) -> Sample:
        words = self._entry(self.language_file, self.language, split, segment)
        parts = {
            m: self._entry(_FEATURE_FILES[m], table, split, segment)
            for m, table in self.features.items()
        }
        label = self._entry("humor_label_sdk.pkl", self.labels, split, segment)
        if label not in (0, 1):
            raise DatasetError(
                self.directory / "humor_label_sdk.pkl",
                f"label {label!r} is not 0 or 1",
                split=split,
                key=str(segment),
            )
        n_context = (
            len(self._field(self.language_file, words, "context_embedding_indexes", split, segment))
            if self.use_context
            else 0
        )
        sentences = [
            self._sentence(split, segment, words, parts, k, n_context) for k in range(n_context + 1)
        ]
        features = {
            m: torch.from_numpy(np.concatenate([s[m] for s in sentences])[-self.max_words :])
            for m in sentences[0]
        }
        text = " ".join(_sentence_text(s) for s in self._texts(words, n_context))
        return Sample(features=features, label=int(label), id=str(segment), text=text or None)

    def _sentence(
        self, split: str, segment: Any, words: dict, parts: dict[str, dict], k: int, n_context: int
    ) -> dict[str, np.ndarray]:
        """Context sentence ``k`` (``k == n_context``: the punchline) as ``(n_words, d)`` each."""
        kind = "punchline" if k == n_context else "context"
        per_modality = {}
        for m, part in parts.items():
            file = _FEATURE_FILES[m]
            rows = self._field(file, part, f"{kind}_features", split, segment)
            if kind == "context":
                rows = self._item(file, rows, k, f"{kind}_features", split, segment)
            per_modality[m] = self._matrix(file, m, rows, split, segment)
        if self.embeddings is not None:
            key = f"{kind}_embedding_indexes"
            indexes = self._field(self.language_file, words, key, split, segment)
            if kind == "context":
                indexes = self._item(self.language_file, indexes, k, key, split, segment)
            per_modality["text"] = self._vectors(indexes, split, segment)
        n_words = min(len(x) for x in per_modality.values())
        if any(len(x) != n_words for x in per_modality.values()):
            self.n_truncated += 1
        return {m: x[:n_words] for m, x in per_modality.items()}

    def _field(self, file: str, entry: Any, name: str, split: str, segment: Any) -> Any:
        if not isinstance(entry, dict) or name not in entry:
            raise DatasetError(
                self.directory / file, f"missing {name!r}", split=split, key=str(segment)
            )
        return entry[name]

    def _item(self, file: str, items: Any, k: int, name: str, split: str, segment: Any) -> Any:
        if k >= len(items):
            raise DatasetError(
                self.directory / file,
                f"{name} has {len(items)} sentences, the language file more",
                split=split,
                key=str(segment),
            )
        return items[k]

    def _matrix(self, file: str, modality: str, rows: Any, split: str, segment: Any) -> np.ndarray:
        """Word-level features as float32 ``(n_words, d)``, NaN and +-inf set to 0."""
        try:
            x = np.asarray(rows, dtype=np.float32)
        except ValueError as error:
            raise DatasetError(
                self.directory / file,
                f"ragged or non-numeric features ({error})",
                split=split,
                key=str(segment),
            ) from error
        width = self.widths[modality]
        if x.size == 0:
            x = x.reshape(0, width)
        if x.ndim != 2 or x.shape[1] != width:
            raise DatasetError(
                self.directory / file,
                f"expected (n_words, {width}) features, found shape {x.shape}",
                split=split,
                key=str(segment),
            )
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def _vectors(self, indexes: Sequence[int], split: str, segment: Any) -> np.ndarray:
        assert self.embeddings is not None
        index = np.asarray(indexes, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= len(self.embeddings)):
            raise DatasetError(
                self.directory / "word_embedding_list.pkl",
                f"word index out of range [0, {len(self.embeddings)})",
                split=split,
                key=str(segment),
            )
        return self.embeddings[index]

    def _entry(self, file: str, table: dict, split: str, segment: Any) -> Any:
        if segment not in table:
            raise DatasetError(
                self.directory / file,
                "segment id listed in data_folds.pkl is missing here",
                split=split,
                key=str(segment),
            )
        return table[segment]

    def _texts(self, words: dict, n_context: int) -> list[Any]:
        """The raw sentences used (V2), context first; none in V1."""
        if "punchline_sentence" not in words:
            return []
        context = list(words.get("context_sentences", []))[:n_context] if n_context else []
        return [*context, words["punchline_sentence"]]


def _sentence_text(sentence: Any) -> str:
    """A sentence stored as a string or as a (nested) list of strings."""
    if isinstance(sentence, str):
        return sentence
    return " ".join(_sentence_text(part) for part in sentence)


def _language_path(directory: Path) -> Path:
    for name in ("language_sdk.pkl", "word_embedding_indexes_sdk.pkl"):
        if (directory / name).is_file():
            return directory / name
    raise DatasetError(directory, "no language_sdk.pkl (V2) or word_embedding_indexes_sdk.pkl (V1)")


def _load_dict(path: Path) -> dict:
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(
            path, f"expected a dict keyed by segment id, found {type(data).__name__}"
        )
    return data


def _feature_width(path: Path, table: dict) -> int:
    """The feature width d, read from the first non-empty punchline in the file."""
    for entry in table.values():
        rows = np.asarray(entry.get("punchline_features", []) if isinstance(entry, dict) else [])
        if rows.ndim == 2 and rows.shape[0] > 0:
            return int(rows.shape[1])
    raise DatasetError(path, "no punchline_features of shape (n_words, d) in any segment")


def _embeddings(directory: Path, text_source: TextSource) -> np.ndarray | None:
    """GloVe vectors ``(n_vocab, d_word)`` when text is given as states, else None."""
    if text_source == "tokens":
        return None
    path = directory / "word_embedding_list.pkl"
    if not path.is_file():
        raise DatasetError(path, "missing: text_source='states' needs the word vectors")
    try:
        vectors = np.asarray(load_pickle(path), dtype=np.float32)
    except ValueError as error:
        raise DatasetError(path, f"ragged or non-numeric word vectors ({error})") from error
    if vectors.ndim != 2:
        raise DatasetError(path, f"expected (n_vocab, d_word) vectors, found shape {vectors.shape}")
    return np.nan_to_num(vectors, nan=0.0, posinf=0.0, neginf=0.0)


def _folds(path: Path) -> dict[str, list[Any]]:
    """``{"train", "valid", "test": [segment ids]}`` from ``data_folds.pkl`` (``dev`` = valid)."""
    data = _load_dict(path)
    folds = {_FOLDS[name]: list(ids) for name, ids in data.items() if name in _FOLDS}
    for split, name in (("train", "train"), ("valid", "dev"), ("test", "test")):
        if split not in folds:
            raise DatasetError(path, "missing fold", split=name)
    return folds
