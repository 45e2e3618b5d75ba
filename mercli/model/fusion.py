"""Fusion of the disentangled features: SGAFF (paper 2.4, eqs. 21-22) or plain concatenation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mercli.model.disentangle import mlp


@dataclass
class Fused:
    """Heads' outputs, each shape = (B, d_out) unless noted."""

    prediction: torch.Tensor  # y^ = gamma * g(s) + (1 - gamma) * g(p)
    shared_branch: torch.Tensor | None  # g(s), from the enhanced shared features r_e
    specific_branch: torch.Tensor | None  # g(p), from the guided specific features u_g
    gate: torch.Tensor | None  # gamma, (B, 1): the weight of the shared branch


class GatedFusion(nn.Module):
    """Semantic-guided adaptive fusion with a gated dual branch."""

    def __init__(self, modalities: tuple[str, ...], d_half: int, d_out: int, dropout: float):
        super().__init__()
        self.modalities = modalities
        n = len(modalities)
        # r_e = r + FFN(Linear(r)), per modality.
        self.enhance = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(d_half, d_half), mlp(d_half, 2 * d_half, d_half))
                for m in modalities
            }
        )
        # u_g = u + W [u; r_e] (eq. 21), per modality.
        self.guide = nn.ModuleDict({m: nn.Linear(2 * d_half, d_half) for m in modalities})
        self.shared_head = mlp(n * d_half, d_half, d_out, dropout)
        self.specific_head = mlp(n * d_half, d_half, d_out, dropout)
        self.gate = mlp(2 * n * d_half, d_half, 1, dropout)

    def forward(self, shared: dict[str, torch.Tensor], specific: dict[str, torch.Tensor]) -> Fused:
        """shared, specific: per modality (B, d_half)."""
        enhanced = {m: shared[m] + self.enhance[m](shared[m]) for m in self.modalities}
        guided = {
            m: specific[m] + self.guide[m](torch.cat([specific[m], enhanced[m]], dim=-1))
            for m in self.modalities
        }
        r_e = torch.cat([enhanced[m] for m in self.modalities], dim=-1)  # (B, n * d_half)
        u_g = torch.cat([guided[m] for m in self.modalities], dim=-1)
        g_shared, g_specific = self.shared_head(r_e), self.specific_head(u_g)  # (B, d_out)
        gamma = torch.sigmoid(self.gate(torch.cat([u_g, r_e], dim=-1)))  # (B, 1)
        prediction = gamma * g_shared + (1 - gamma) * g_specific
        return Fused(prediction, g_shared, g_specific, gamma)


class ConcatFusion(nn.Module):
    """The 'without SGAFF' ablation and the plain baseline: [u; r] of all modalities -> MLP."""

    def __init__(self, modalities: tuple[str, ...], d_half: int, d_out: int, dropout: float):
        super().__init__()
        self.modalities = modalities
        self.head = mlp(2 * len(modalities) * d_half, d_half, d_out, dropout)

    def forward(self, shared: dict[str, torch.Tensor], specific: dict[str, torch.Tensor]) -> Fused:
        h = torch.cat([t for m in self.modalities for t in (specific[m], shared[m])], dim=-1)
        return Fused(self.head(h), None, None, None)
