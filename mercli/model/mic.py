"""The learnable parts of MIC, the mutual-information constraints (paper 2.3, eqs. 16-20).

The estimates themselves are loss functions in :mod:`mercli.losses`; this module holds the
label embedding z = Linear(y), the InfoNCE scoring networks f and h, and one CMI
discriminator phi(u, z, r) per modality.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mercli.model.disentangle import mlp


def discriminator(d_half: int, d_hidden: int) -> nn.Sequential:
    """phi: three linear layers with ReLU, then a linear output giving one logit (eq. 18)."""
    return nn.Sequential(
        nn.Linear(3 * d_half, d_hidden),
        nn.ReLU(),
        nn.Linear(d_hidden, d_hidden),
        nn.ReLU(),
        nn.Linear(d_hidden, d_hidden),
        nn.ReLU(),
        nn.Linear(d_hidden, 1),
    )


class MutualInformationEstimators(nn.Module):
    """z = Linear(y); s(x, y) = f(x)^T h(y); phi_m(u_m, z, r_m) per modality."""

    def __init__(self, modalities: tuple[str, ...], d_half: int, d_hidden: int, d_label: int):
        super().__init__()
        self.d_label = d_label  # 1 for a regression score, n_classes for one-hot classes
        self.label_embedding = nn.Linear(d_label, d_half)
        self.score_x = mlp(d_half, d_hidden, d_hidden)  # f
        self.score_y = mlp(d_half, d_hidden, d_hidden)  # h
        self.discriminators = nn.ModuleDict(
            {m: discriminator(d_half, d_hidden) for m in modalities}
        )

    def embed_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """labels: (B,) scores or class ids -> z: (B, d_half)."""
        dtype = self.label_embedding.weight.dtype  # float64 models stay float64
        if self.d_label == 1:
            y = labels.to(dtype)[:, None]
        else:
            y = F.one_hot(labels.long(), self.d_label).to(dtype)
        return self.label_embedding(y)

    def scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """s(x_i, y_j) for all pairs: x, y (B, d_half) -> (B, B)."""
        return self.score_x(x) @ self.score_y(y).T
