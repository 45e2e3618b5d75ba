"""Names and containers shared by every part of mer.

The three modalities are always named, never passed as a positional triple.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
# Text tokens per utterance, unless a feature profile records its own (MMSA: text_bert (N, 3, 50)).
MAX_TEXT_TOKENS = 50


@dataclass
class Batch:
    """A batch of utterances, one entry per modality.

    Attributes:
        inputs: per modality either float features ``(B, T_m, d_m)`` or, for text through a
            transformer backbone, token ids ``(B, T_t)`` (long).
        masks: per modality ``(B, T_m)`` bool, True where a step holds data. A sample whose
            row has no True step lacks that modality (see :meth:`presence`).
        labels: ``(B,)`` float scores for regression or long class ids for classification;
            None at inference.
        ids: optional sample identifiers, kept for reports.
    """

    inputs: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    labels: torch.Tensor | None = None
    ids: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            inputs={m: x.to(device, non_blocking=True) for m, x in self.inputs.items()},
            masks={m: x.to(device, non_blocking=True) for m, x in self.masks.items()},
            labels=None if self.labels is None else self.labels.to(device, non_blocking=True),
            ids=self.ids,
        )

    def __len__(self) -> int:
        return next(iter(self.masks.values())).shape[0]

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.inputs)

    def presence(self, modality: str) -> torch.Tensor:
        """``(B,)`` bool: which samples have ``modality`` (at least one valid step).

        A modality the batch does not hold at all is absent from every sample.
        """
        import torch

        if modality not in self.masks:
            first = next(iter(self.masks.values()))
            return torch.zeros(first.shape[0], dtype=torch.bool, device=first.device)
        return self.masks[modality].bool().any(dim=1)
