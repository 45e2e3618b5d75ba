"""Ordinal heads: class labels of other corpora read off the model's sentiment score.

A set with C ordered classes (SST-2: negative < positive; MELD: negative < neutral < positive)
gets a cumulative-link head on the score y: P(class > k) = sigmoid(s (y - t_k)), with a learned
scale s > 0 and thresholds t_1 < ... < t_{C-1}. The labels thus shape the score itself (its
sign and order) without pretending that a class id is a score.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class OrdinalHead(nn.Module):
    """Scale and ordered thresholds of one set's cumulative-link model on the score."""

    def __init__(self, n_classes: int, spread: float = 2.0, scale: float = 2.0):
        """Args:
        n_classes: C >= 2 ordered classes.
        spread: initial distance between the first and last threshold (centred on 0); with
            the initial ``scale``, a score of 0 is then most likely the middle class.
        scale: initial s.
        """
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"an ordinal head needs >= 2 classes, not {n_classes}")
        self.n_classes = n_classes
        # stored through softplus^-1, so that s stays positive
        self.raw_scale = nn.Parameter(torch.tensor(_softplus_inverse(scale)))
        n_gaps = n_classes - 2
        self.first = nn.Parameter(torch.tensor(-spread / 2 if n_gaps else 0.0))
        gap = spread / max(n_gaps, 1)
        # stored through softplus^-1, so that the thresholds start ``gap`` apart
        self.raw_gaps: nn.Parameter | None = None  # a binary head has one threshold, no gap
        if n_gaps:
            self.raw_gaps = nn.Parameter(torch.full((n_gaps,), _softplus_inverse(gap)))

    def thresholds(self) -> torch.Tensor:
        """(C - 1,) increasing thresholds."""
        if self.raw_gaps is None:
            return self.first.reshape(1)
        gaps = F.softplus(self.raw_gaps)
        return torch.cat([self.first.reshape(1), self.first + torch.cumsum(gaps, 0)])

    def log_probs(self, score: torch.Tensor) -> torch.Tensor:
        """score (B,) -> (B, C) log-probabilities of each class."""
        scale = F.softplus(self.raw_scale)
        above = torch.sigmoid(scale * (score[:, None] - self.thresholds()[None, :]))  # (B, C-1)
        ones = above.new_ones(len(score), 1)
        zeros = above.new_zeros(len(score), 1)
        cumulative = torch.cat([ones, above, zeros], dim=1)  # P(class > k - 1), k = 0..C
        probs = cumulative[:, :-1] - cumulative[:, 1:]  # (B, C)
        return probs.clamp(min=1e-7).log()

    def predict(self, score: torch.Tensor) -> torch.Tensor:
        """(B,) the most probable class of each score."""
        return self.log_probs(score).argmax(dim=1)


def _softplus_inverse(x: float) -> float:
    return math.log(math.expm1(x))


def ordinal_loss(
    heads: nn.ModuleDict,
    names: tuple[str, ...],
    score: torch.Tensor,
    sets: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Mean negative log-likelihood over the rows that carry an auxiliary label.

    Args:
        heads: name -> :class:`OrdinalHead`.
        names: the set of index i is ``names[i]``.
        score: (B,) the model's scores.
        sets: (B,) long, each row's set index; -1 for a row without an auxiliary label (it
            adds nothing and gets no gradient).
        labels: (B,) long class ids (read only where ``sets`` >= 0).

    Returns:
        a scalar; 0 (with a graph) when no row is labelled.
    """
    total = score.sum() * 0.0
    n = 0
    for i, name in enumerate(names):
        rows = sets == i
        count = int(rows.sum())
        if not count:
            continue
        head = heads[name]
        log_probs = head.log_probs(score[rows])  # type: ignore[operator]
        total = total + F.nll_loss(log_probs, labels[rows].long(), reduction="sum")
        n += count
    return total / max(n, 1)
