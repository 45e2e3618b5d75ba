"""The MMSA feature pickle (``aligned_50.pkl`` / ``unaligned_50.pkl``) of the MMSA framework.

Layout: ``{"train" | "valid" | "test": {key: array}}`` with ``text`` (N, 50, 768) frozen BERT
states, ``text_bert`` (N, 3, 50) token ids / attention mask / segment ids stored as floats,
``audio`` (N, T_a, d_a), ``vision`` (N, T_v, d_v), ``regression_labels`` (N,), ``id`` (N,),
``raw_text`` (N,) and, in unaligned files only, ``audio_lengths`` / ``vision_lengths`` (N,).

Valid steps: unaligned files record them in ``*_lengths`` (padding past a length holds anything,
and is never handed out); aligned files have none, so the text attention mask's length holds for
all three modalities, as in MMSA. ``-inf``, ``+inf`` and NaN features become 0.

Pickles written by ``mer prepare`` (raw labelled videos, :mod:`mercli.prepare`) add a top-level
``feature_profile`` dict and, per split, ``vision_mask`` (N, T_v) bool (False on frames without a
face). They hold no frozen ``text`` states: their text is always the ``text_bert`` token ids, for
the backbone the profile names. A vision step is valid when it is within ``vision_lengths`` and
``vision_mask`` is True there. :func:`build_dataset` and :func:`write_mmsa` write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mercli.config import DatasetInfo
from mercli.data import (
    D_TOKEN_PLACEHOLDER,
    LABEL_RANGE,
    SPLITS,
    DatasetError,
    SplitDatasets,
    TextSource,
)
from mercli.data.safe_pickle import load_pickle
from mercli.data.samples import Collator, Sample
from mercli.features.acoustic import D_AUDIO
from mercli.features.profile import D_VISION, FeatureProfile, ProfileError

if TYPE_CHECKING:
    from mercli.data.clips import Clip
    from mercli.features.extract import UtteranceFeatures

_LENGTH_KEYS = {"audio": "audio_lengths", "vision": "vision_lengths"}
_MASK_KEYS = {"vision": "vision_mask"}  # per-step masks inside the valid length

collate = Collator(task="regression")
"""``list[Sample] -> Batch`` for MMSA datasets (float labels)."""


class MmsaDataset(Dataset[Sample]):
    """One split of an MMSA pickle; ``dataset[i]`` is a :class:`Sample` cut to its valid steps.

    Args:
        features: per modality ``(N, T_m, d_m)`` float (or text ids ``(N, T_t)`` long), cleaned.
        lengths: per modality ``(N,)`` valid steps.
        labels: ``(N,)`` scores in [-3, 3].
        ids: N identifiers ``"<video>$_$<clip>"``.
        texts: N raw transcripts, or None.
        step_masks: per modality ``(N, T_m)`` bool, False on steps without data (frames
            without a face); modalities absent here have every step up to the length valid.
    """

    def __init__(
        self,
        features: dict[str, torch.Tensor],
        lengths: dict[str, list[int]],
        labels: torch.Tensor,
        ids: list[str],
        texts: list[str] | None = None,
        step_masks: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.features = features
        self.lengths = lengths
        self.labels = labels
        self.ids = ids
        self.texts = texts
        self.step_masks = step_masks or {}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        return Sample(
            features={m: x[index, : self.lengths[m][index]] for m, x in self.features.items()},
            label=float(self.labels[index]),
            id=self.ids[index],
            text=None if self.texts is None else self.texts[index],
            masks={m: x[index, : self.lengths[m][index]] for m, x in self.step_masks.items()},
        )


def load_mmsa(
    path: str | Path, *, name: str = "mosi", text_source: TextSource = "states"
) -> SplitDatasets:
    """Load and validate an MMSA pickle.

    Args:
        path: ``aligned_50.pkl`` or ``unaligned_50.pkl``, or a folder holding one (unaligned
            first).
        name: the dataset's name for :class:`DatasetInfo`.
        text_source: ``states``: text is the frozen ``text`` states (T, 768); ``tokens``: text is
            the ``text_bert`` ids (T,), for a backbone. Pickles written by ``mer prepare`` (with
            a ``feature_profile``) hold no states: their text is always tokens.

    Raises:
        DatasetError: naming the file, split and key of the first problem found.
    """
    if text_source not in ("states", "tokens"):
        raise ValueError(f"text_source must be 'states' or 'tokens', not {text_source!r}")
    path = _pickle_path(Path(path))
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DatasetError(path, f"expected a dict of splits, found {type(data).__name__}")
    profile = None
    if data.get("feature_profile") is not None:
        stored = data["feature_profile"]
        if not isinstance(stored, dict) or not stored.get("name"):
            raise DatasetError(
                path,
                "expected a dict with a 'name' (written by mer prepare)",
                key="feature_profile",
            )
        try:
            profile = FeatureProfile.from_dict(stored)
        except ProfileError as err:
            raise DatasetError(path, str(err), key="feature_profile") from err
        text_source = "tokens"
    splits = {split: read_split(path, split, data, text_source) for split in SPLITS}
    _check_widths(path, splits)
    return SplitDatasets(
        **splits,
        info=dataset_info(name, splits["train"]),
        collate=collate,
        feature_profile=profile,
    )


def _pickle_path(path: Path) -> Path:
    """``path`` itself, or for a folder its ``unaligned_50.pkl`` (else ``aligned_50.pkl``)."""
    if not path.is_dir():
        return path
    for name in ("unaligned_50.pkl", "aligned_50.pkl"):
        if (path / name).is_file():
            return path / name
    raise DatasetError(path, "folder holds neither unaligned_50.pkl nor aligned_50.pkl")


def _check_widths(path: Path, splits: dict[str, MmsaDataset]) -> None:
    """Every split's features must have the train split's widths (one model reads them all)."""
    train = splits["train"].features
    for split, dataset in splits.items():
        for m, x in dataset.features.items():
            if x.dtype != train[m].dtype or x.shape[2:] != train[m].shape[2:]:
                raise DatasetError(
                    path,
                    f"{m} features are {tuple(x.shape[2:]) or 'token ids'} wide, but "
                    f"{tuple(train[m].shape[2:]) or 'token ids'} in the train split",
                    split=split,
                    key=m,
                )


def dataset_info(name: str, dataset: MmsaDataset) -> DatasetInfo:
    """Feature widths per modality, read from a loaded split."""
    text = dataset.features["text"]
    d_in = {
        "text": D_TOKEN_PLACEHOLDER if text.dtype == torch.long else int(text.shape[-1]),
        "audio": int(dataset.features["audio"].shape[-1]),
        "vision": int(dataset.features["vision"].shape[-1]),
    }
    return DatasetInfo(name=name, d_in=d_in, task="regression")


def read_split(path: Path, split: str, data: dict, text_source: TextSource) -> MmsaDataset:
    """Validate one split of a loaded pickle and wrap it in an :class:`MmsaDataset`."""
    if split not in data:
        raise DatasetError(path, f"missing split (found {sorted(map(str, data))})", split=split)
    arrays = data[split]
    if not isinstance(arrays, dict):
        raise DatasetError(
            path, f"expected a dict of arrays, found {type(arrays).__name__}", split=split
        )

    def array(key: str, ndim: int) -> np.ndarray:
        return _array(path, split, arrays, key, ndim)

    text_bert = array("text_bert", 3)  # (N, 3, T_t)
    if text_bert.shape[1] < 2:
        raise DatasetError(
            path,
            f"expected (N, 3, T) ids/mask/segments, found {text_bert.shape}",
            split=split,
            key="text_bert",
        )
    token_ids = np.nan_to_num(text_bert[:, 0], nan=0.0, posinf=0.0, neginf=0.0)  # (N, T_t)
    text_mask = np.nan_to_num(text_bert[:, 1], nan=0.0, posinf=0.0, neginf=0.0)  # (N, T_t)
    features = {
        "text": array("text", 3) if text_source == "states" else token_ids.astype(np.int64),
        "audio": array("audio", 3),
        "vision": array("vision", 3),
    }
    labels = array("regression_labels", 1)
    ids = array("id", 1)
    n_samples = len(labels)
    for key, values in (("text_bert", text_bert), *features.items(), ("id", ids)):
        if len(values) != n_samples:
            raise DatasetError(
                path,
                f"{len(values)} rows but regression_labels has {n_samples}",
                split=split,
                key=key,
            )
    if text_source == "states" and features["text"].shape[1] != text_bert.shape[2]:
        raise DatasetError(
            path,
            f"{features['text'].shape[1]} steps but text_bert has {text_bert.shape[2]}",
            split=split,
            key="text",
        )
    if not np.isfinite(labels).all():
        raise DatasetError(
            path,
            f"{int((~np.isfinite(labels)).sum())} label(s) NaN or infinite",
            split=split,
            key="regression_labels",
        )
    low, high = LABEL_RANGE
    outside = (labels < low) | (labels > high)
    if outside.any():
        raise DatasetError(
            path,
            f"{int(outside.sum())} label(s) outside [{low:g}, {high:g}] (e.g. "
            f"{float(labels[outside][0]):g}): not sentiment scores",
            split=split,
            key="regression_labels",
        )
    text_lengths = text_mask.sum(axis=1).round().astype(np.int64)  # (N,)
    lengths = {
        "text": text_lengths,
        **_modality_lengths(path, split, arrays, features, text_lengths),
    }
    for m, length in lengths.items():
        _check_lengths(path, split, _LENGTH_KEYS.get(m, "text_bert"), length, features[m].shape[1])
    raw_text = arrays.get("raw_text")
    return MmsaDataset(
        features={m: torch.from_numpy(_cleaned(x)) for m, x in features.items()},
        lengths={m: x.tolist() for m, x in lengths.items()},
        labels=torch.tensor(labels, dtype=torch.float32),
        ids=[str(i) for i in ids],
        texts=None if raw_text is None else [str(t) for t in np.asarray(raw_text).ravel()],
        step_masks=_step_masks(path, split, arrays, features),
    )


def _step_masks(
    path: Path, split: str, arrays: dict, features: dict[str, np.ndarray]
) -> dict[str, torch.Tensor]:
    """``vision_mask`` (N, T_v) as bool, checked against the vision features' shape."""
    masks = {}
    for m, key in _MASK_KEYS.items():
        if key not in arrays:
            continue
        values = _array(path, split, arrays, key, 2)
        if values.shape != features[m].shape[:2]:
            raise DatasetError(
                path,
                f"shape {values.shape} does not match {m} {features[m].shape[:2]}",
                split=split,
                key=key,
            )
        masks[m] = torch.from_numpy(values.astype(bool))
    return masks


def _modality_lengths(
    path: Path, split: str, arrays: dict, features: dict[str, np.ndarray], text_lengths: np.ndarray
) -> dict[str, np.ndarray]:
    """Audio and vision lengths: ``*_lengths`` when the file has them, else the text lengths."""
    present = [key for key in _LENGTH_KEYS.values() if key in arrays]
    if not present:  # aligned: one time axis for all modalities
        return {m: text_lengths for m in _LENGTH_KEYS}
    if len(present) == 1:
        missing = next(k for k in _LENGTH_KEYS.values() if k not in arrays)
        raise DatasetError(
            path, f"missing key while {present[0]!r} is present", split=split, key=missing
        )
    lengths = {}
    for m, key in _LENGTH_KEYS.items():
        values = _array(path, split, arrays, key, 1)
        if len(values) != len(features[m]):
            raise DatasetError(
                path,
                f"{len(values)} lengths for {len(features[m])} rows of {m}",
                split=split,
                key=key,
            )
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise DatasetError(path, "lengths must be whole numbers", split=split, key=key)
        lengths[m] = values.astype(np.int64)
    return lengths


def _check_lengths(path: Path, split: str, key: str, lengths: np.ndarray, n_steps: int) -> None:
    if lengths.min(initial=0) < 0:
        raise DatasetError(path, f"negative length {int(lengths.min())}", split=split, key=key)
    if lengths.max(initial=0) > n_steps:
        raise DatasetError(
            path,
            f"length {int(lengths.max())} exceeds the {n_steps} steps stored",
            split=split,
            key=key,
        )


def _array(path: Path, split: str, arrays: dict, key: str, ndim: int) -> np.ndarray:
    """``arrays[key]`` as a numpy array with ``ndim`` dimensions ((N, 1) labels are flattened)."""
    if key not in arrays:
        raise DatasetError(
            path, f"missing key (found {sorted(map(str, arrays))})", split=split, key=key
        )
    value = np.asarray(arrays[key])
    if ndim == 1 and value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.ndim != ndim:
        raise DatasetError(
            path, f"expected {ndim} dimensions, found shape {value.shape}", split=split, key=key
        )
    if key != "id" and value.dtype.kind not in "biuf":
        raise DatasetError(
            path, f"expected numbers, found dtype {value.dtype}", split=split, key=key
        )
    return value


def _cleaned(values: np.ndarray) -> np.ndarray:
    """Float features as float32 with NaN and +-inf set to 0 (MMSA treats -inf as 0)."""
    if values.dtype.kind != "f":
        return values
    values = values.astype(np.float32, copy=not values.flags.writeable)  # protocol 5: read-only
    return np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)


# ---------------------------------------------------------------------------------------------
# writing (``mer prepare``)


def token_arrays(texts: list[str], tokenizer: Any, max_tokens: int) -> np.ndarray:
    """``text_bert`` for ``texts``: float32 (N, 3, max_tokens) ids / attention mask / segments."""
    out = np.zeros((len(texts), 3, max_tokens), np.float32)
    if not texts:
        return out
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=max_tokens)
    for row, key in enumerate(("input_ids", "attention_mask", "token_type_ids")):
        if key in encoded:
            out[:, row] = np.asarray(encoded[key], np.float32)[:, :max_tokens]
    return out


def _annotation(label: float) -> str:
    return "Positive" if label > 0 else "Negative" if label < 0 else "Neutral"


def split_arrays(
    rows: Sequence[tuple[Clip, UtteranceFeatures]],
    n_audio: int,
    n_vision: int,
    tokenizer: Any,
    max_tokens: int,
    d_audio: int = D_AUDIO,
) -> dict[str, np.ndarray]:
    """One split in the MMSA layout, audio/vision zero-padded to ``n_audio``/``n_vision``;
    ``d_audio``: the audio features' width (the profile's)."""
    n = len(rows)
    audio = np.zeros((n, n_audio, d_audio), np.float32)
    vision = np.zeros((n, n_vision, D_VISION), np.float32)
    vision_mask = np.zeros((n, n_vision), bool)
    audio_lengths = np.zeros(n, np.int64)
    vision_lengths = np.zeros(n, np.int64)
    for i, (_, u) in enumerate(rows):
        audio_lengths[i], vision_lengths[i] = len(u.audio), len(u.vision)
        audio[i, : len(u.audio)] = u.audio
        vision[i, : len(u.vision)] = u.vision
        vision_mask[i, : len(u.vision_mask)] = u.vision_mask
    texts = [clip.text for clip, _ in rows]
    labels = [clip.label for clip, _ in rows]
    return {
        "raw_text": np.array(texts, dtype=str),
        "text_bert": token_arrays(texts, tokenizer, max_tokens),
        "audio": audio,
        "vision": vision,
        "audio_lengths": audio_lengths,
        "vision_lengths": vision_lengths,
        "vision_mask": vision_mask,
        "id": np.array([clip.id for clip, _ in rows], dtype=str),
        "regression_labels": np.array(labels, np.float32),
        "annotations": np.array([_annotation(y) for y in labels], dtype=str),
    }


def build_dataset(
    rows: Sequence[tuple[Clip, UtteranceFeatures]],
    feature_profile: FeatureProfile,
    tokenizer: Any,
    max_tokens: int,
) -> dict[str, Any]:
    """A pickle's content: the three splits of ``rows`` (by ``clip.split``) plus
    ``feature_profile``; audio/vision zero-padded to the longest clip."""
    n_audio = max([len(u.audio) for _, u in rows] + [1])
    n_vision = max([len(u.vision) for _, u in rows] + [1])
    data: dict[str, Any] = {
        split: split_arrays(
            [(c, u) for c, u in rows if c.split == split],
            n_audio,
            n_vision,
            tokenizer,
            max_tokens,
            (feature_profile.audio and feature_profile.audio.d) or D_AUDIO,
        )
        for split in SPLITS
    }
    data["feature_profile"] = feature_profile.to_dict()  # plain containers: a safe pickle
    return data


def write_mmsa(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` (see :func:`build_dataset`) as a pickle at ``path``, atomically."""
    import pickle

    from mercli.atomic import write_atomically

    return write_atomically(path, lambda f: pickle.dump(data, f, protocol=4))
