"""One utterance as a loader hands it out, and the collation of utterances into a Batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from mercli.config import Task
from mercli.schema import MAX_TEXT_TOKENS, MODALITIES, Batch


@dataclass(frozen=True)
class Sample:
    """One utterance, each modality already cut to its valid steps.

    Attributes:
        features: per modality float features ``(T_m, d_m)`` or, for text given as token ids,
            ``(T_t,)`` long. Text is absent here when it is tokenised at collate time. A
            modality the utterance lacks (no audio, no face) is left out, or has no steps.
        label: a score (regression) or a class id (classification).
        id: the sample's identifier.
        text: the raw transcript, when the data holds one.
        masks: per modality bool ``(T_m,)``, False on steps inside the valid length that carry
            no data (frames without a face); absent modalities have every step valid.
    """

    features: dict[str, torch.Tensor]
    label: float | int
    id: str
    text: str | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)


class ListDataset(Dataset[Sample]):
    """A map-style dataset over samples built in memory."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


def pad_sequences(sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad along time to the longest sequence (at least one step).

    Args:
        sequences: B tensors of shape ``(T_i, *rest)``.

    Returns:
        ``(padded, mask)``: ``padded`` shape = (B, T, *rest), ``mask`` shape = (B, T) bool, True on
        the first ``T_i`` steps of row i. A row with ``T_i = 0`` is all False.
    """
    lengths = torch.tensor([len(x) for x in sequences], dtype=torch.long)  # (B,)
    n_steps = max(1, int(lengths.max()) if len(lengths) else 1)
    first = sequences[0]
    padded = first.new_zeros((len(sequences), n_steps, *first.shape[1:]))  # (B, T, ...)
    for row, x in enumerate(sequences):
        padded[row, : len(x)] = x
    mask = torch.arange(n_steps)[None, :] < lengths[:, None]  # (B, T)
    return padded, mask


@dataclass(frozen=True)
class Collator:
    """``list[Sample] -> Batch``: pad each modality to the longest sample in the batch.

    Attributes:
        task: regression gives float labels ``(B,)``, classification long labels ``(B,)``.
        tokenizer: when set, text comes from ``Sample.text`` through this Hugging Face tokenizer
            (padding to the longest in the batch) instead of from ``Sample.features["text"]``.
        max_text_tokens: truncation length for the tokenizer.
    """

    task: Task = "regression"
    tokenizer: Any = field(default=None, compare=False)
    max_text_tokens: int = MAX_TEXT_TOKENS

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        inputs: dict[str, torch.Tensor] = {}
        masks: dict[str, torch.Tensor] = {}
        for m in MODALITIES:
            if m == "text" and self.tokenizer is not None:
                from mercli.model.text_backbone import tokenize

                inputs[m], masks[m] = tokenize(
                    [s.text or "" for s in samples], self.tokenizer, self.max_text_tokens
                )
            elif any(m in s.features for s in samples):
                # A sample without this modality gets a row with no valid step: absent.
                template = next(s.features[m] for s in samples if m in s.features)
                empty = template.new_zeros((0, *template.shape[1:]))
                inputs[m], masks[m] = pad_sequences([s.features.get(m, empty) for s in samples])
                if any(m in s.masks for s in samples):
                    masks[m] &= _step_masks(samples, m, masks[m].shape[1])
                if inputs[m].dtype == torch.float16:  # stored half precision to save memory
                    inputs[m] = inputs[m].float()
        dtype = torch.float32 if self.task == "regression" else torch.long
        labels = torch.tensor([s.label for s in samples], dtype=dtype)  # (B,)
        return Batch(inputs=inputs, masks=masks, labels=labels, ids=[s.id for s in samples])


def _step_masks(samples: Sequence[Sample], m: str, n_steps: int) -> torch.Tensor:
    """``(B, n_steps)`` bool: each sample's own step mask of ``m``, True where it has none."""
    out = torch.ones(len(samples), n_steps, dtype=torch.bool)
    for row, s in enumerate(samples):
        if m in s.masks:
            mask = s.masks[m][:n_steps]
            out[row, : len(mask)] = mask
    return out
