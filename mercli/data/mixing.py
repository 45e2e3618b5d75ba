"""Training sets that mix transcripts without media and clips with media (``--extra-train``).

A label CSV gives transcripts only; a ``mer prepare`` dataset gives clips with their transcript
and mer's own audio (and vision) features. Their train splits are concatenated: a transcript
sample carries no audio, a clip carries both, and the model's per-sample presence mask scores
each from what it has (README, "Missing modalities"). The clips keep their raw text, so the
text reaches the model through whatever backbone the run uses (the token ids the dataset stores
are not used): the clips need not be prepared again for another backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mercli.data import DatasetError, SplitDatasets
from mercli.data.samples import ListDataset, Sample
from mercli.features.profile import FeatureProfile, TextProfile
from mercli.schema import MAX_TEXT_TOKENS


@dataclass(frozen=True)
class MediaTraining:
    """The train split of a ``mer prepare`` dataset, ready to join transcript data.

    Attributes:
        path: the dataset.
        samples: its train clips with raw text and their media features (no token ids).
        profile: its feature profile.
        d_in: feature width per media modality (``audio``, ``vision``) it holds.
    """

    path: Path
    samples: list[Sample]
    profile: FeatureProfile
    d_in: dict[str, int]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.d_in)


def load_media_training(path: str | Path) -> MediaTraining:
    """The train split of a ``mer prepare`` dataset.

    Raises:
        DatasetError: ``path`` is not a ``mer prepare`` dataset (no feature profile), holds no
            media features or no raw text, or its train split is empty.
    """
    from mercli.data.mmsa import load_mmsa

    path = Path(path)
    data = load_mmsa(path)
    profile = data.feature_profile
    if profile is None:
        raise DatasetError(
            path,
            "not a `mer prepare` dataset (it records no feature_profile); --extra-train takes "
            "label CSVs and datasets from `mer prepare`",
        )
    media = tuple(m for m in profile.modalities if m != "text")
    if not media:
        raise DatasetError(path, "holds no audio or vision features", key="feature_profile")
    samples = []
    for i in range(len(data.train)):
        s = data.train[i]
        if s.text is None:
            raise DatasetError(path, "holds no raw_text", split="train", key="raw_text")
        samples.append(
            Sample(
                features={m: s.features[m] for m in media},
                label=s.label,
                id=s.id,
                text=s.text,
                masks={m: x for m, x in s.masks.items() if m in media},
            )
        )
    if not samples:
        raise DatasetError(path, "the split is empty", split="train")
    return MediaTraining(path, samples, profile, {m: int(data.info.d_in[m]) for m in media})


def with_states_of(
    extra: MediaTraining,
    text_backbone: str,
    max_text_tokens: int = MAX_TEXT_TOKENS,
    log: Any = None,
    layers: int | None = None,
) -> MediaTraining:
    """``extra`` whose samples carry the frozen backbone's states of their text under
    ``features["text"]`` (computed once, cached: :mod:`mercli.data.text_states`; ``layers``
    as there)."""
    import numpy as np
    import torch

    from mercli.data.text_states import cached_states

    texts = [s.text or "" for s in extra.samples]
    states = cached_states(texts, text_backbone, max_text_tokens, log=log, layers=layers)
    samples = [
        replace(s, features={**s.features, "text": torch.from_numpy(np.ascontiguousarray(x))})
        for s, x in zip(extra.samples, states, strict=True)
    ]
    return replace(extra, samples=samples)


def media_profile(
    extras: list[MediaTraining], text_backbone: str, max_text_tokens: int = MAX_TEXT_TOKENS
) -> FeatureProfile:
    """The feature profile of transcripts mixed with ``extras``: their media extractors (which
    must agree) and the run's text backbone.

    Raises:
        DatasetError: two datasets whose media features were made differently.
    """
    first = extras[0]
    media = sorted({m for e in extras for m in e.modalities})
    for extra in extras[1:]:
        for m in media:
            theirs, ours = getattr(extra.profile, m), getattr(first.profile, m)
            if m in extra.modalities and m in first.modalities and theirs != ours:
                raise DatasetError(
                    extra.path,
                    f"its {m} features ({_shown(theirs)}) differ from those of {first.path} "
                    f"({_shown(ours)})",
                    key="feature_profile",
                )
    profile = first.profile
    for extra in extras[1:]:  # media the first lacks, from the first extra that has them
        for m in extra.modalities:
            if getattr(profile, m) is None:
                profile = replace(profile, **{m: getattr(extra.profile, m)})
    return replace(
        profile,
        text=TextProfile(text_backbone, max_text_tokens),
        modalities=("text", *media),
    )


def _shown(entry: Any) -> Any:
    return None if entry is None else entry.to_dict()


def with_media_training(
    data: SplitDatasets,
    extras: list[MediaTraining],
    text_backbone: str,
    repeat: int = 1,
    max_text_tokens: int = MAX_TEXT_TOKENS,
) -> SplitDatasets:
    """``data`` (transcripts) whose train split also holds the clips of ``extras``, each
    ``repeat`` times; its info gains their media widths and its feature profile becomes
    :func:`media_profile`. Validation and test stay ``data``'s.

    Raises:
        ValueError: ``repeat`` < 1.
        DatasetError: see :func:`media_profile`.
    """
    from torch.utils.data import ConcatDataset

    if repeat < 1:
        raise ValueError(f"the clips must be seen at least once per epoch, not {repeat} times")
    if not extras:
        return data
    d_in = dict(data.info.d_in)
    for extra in extras:
        d_in.update(extra.d_in)
    clips = [ListDataset(extra.samples) for extra in extras]
    train: ConcatDataset[Sample] = ConcatDataset([data.train, *(clips * repeat)])
    return replace(
        data,
        train=train,
        info=replace(data.info, d_in=d_in),
        feature_profile=media_profile(extras, text_backbone, max_text_tokens),
    )
