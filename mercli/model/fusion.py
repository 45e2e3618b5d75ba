"""Fusion of the disentangled features: SGAFF (paper 2.4, eqs. 21-22) or plain concatenation.

Both take a per-sample presence mask: the features of a modality a sample lacks are replaced by
zeros before the heads, so a score comes from the modalities that are there, and the same
sample gets the same score whatever else is in its batch.
"""

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


def _kept(x: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
    """x (B, D) with the rows of absent samples set to zero (select, so NaN cannot leak)."""
    return x if present is None else torch.where(present[:, None], x, x.new_zeros(()))


class GatedFusion(nn.Module):
    """Semantic-guided adaptive fusion with a gated dual branch.

    Args:
        branches: ``both`` (the paper), or ``shared`` / ``specific`` alone (Table 8: one head,
            no gate).
        score_bound: when set (regression), each branch's output is ``b tanh(x / b)``, inside
            the label range [-b, b]; None keeps the paper's unbounded heads.
        normalize_gate_input: LayerNorm (without affine) of [u_g; r_e] before the gate MLP.
        gate_norm_over_present: that LayerNorm's statistics over the modalities a sample has
            (:func:`present_layer_norm`), so that a sample lacking one gets the gate of a
            model without it; otherwise over all of [u_g; r_e], zeros included.
    """

    def __init__(
        self,
        modalities: tuple[str, ...],
        d_half: int,
        d_out: int,
        dropout: float,
        *,
        branches: str = "both",
        score_bound: float | None = None,
        normalize_gate_input: bool = False,
        gate_norm_over_present: bool = False,
    ):
        super().__init__()
        self.modalities = modalities
        self.branches = branches
        self.score_bound = score_bound
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
        self.shared_head = (
            mlp(n * d_half, d_half, d_out, dropout) if branches != "specific" else None
        )
        self.specific_head = (
            mlp(n * d_half, d_half, d_out, dropout) if branches != "shared" else None
        )
        self.gate_norm = (
            nn.LayerNorm(2 * n * d_half, elementwise_affine=False)
            if normalize_gate_input
            else nn.Identity()
        )
        self.gate_norm_over_present = normalize_gate_input and gate_norm_over_present
        self.gate = mlp(2 * n * d_half, d_half, 1, dropout) if branches == "both" else None

    def _bounded(self, x: torch.Tensor) -> torch.Tensor:
        b = self.score_bound
        return x if b is None else b * torch.tanh(x / b)

    def forward(
        self,
        shared: dict[str, torch.Tensor],
        specific: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor] | None = None,
    ) -> Fused:
        """shared, specific: per modality (B, d_half); present: per modality (B,) bool."""
        present = present or {}
        enhanced = {m: shared[m] + self.enhance[m](shared[m]) for m in self.modalities}
        guided = {
            m: specific[m] + self.guide[m](torch.cat([specific[m], enhanced[m]], dim=-1))
            for m in self.modalities
        }
        r_e = torch.cat([_kept(enhanced[m], present.get(m)) for m in self.modalities], dim=-1)
        u_g = torch.cat([_kept(guided[m], present.get(m)) for m in self.modalities], dim=-1)
        g_shared = None if self.shared_head is None else self._bounded(self.shared_head(r_e))
        g_specific = None if self.specific_head is None else self._bounded(self.specific_head(u_g))
        if g_shared is None or g_specific is None or self.gate is None:
            only = g_shared if g_specific is None else g_specific
            assert only is not None
            return Fused(only, g_shared, g_specific, None)
        gate_input = torch.cat([u_g, r_e], dim=-1)  # (B, 2 n d_half)
        if self.gate_norm_over_present and any(present.get(m) is not None for m in self.modalities):
            columns = torch.stack([self._present(present, m, u_g) for m in self.modalities], 1)
            gate_input = present_layer_norm(gate_input, columns.repeat(1, 2))
        else:
            gate_input = self.gate_norm(gate_input)
        gamma = torch.sigmoid(self.gate(gate_input))  # (B, 1)
        prediction = gamma * g_shared + (1 - gamma) * g_specific
        return Fused(prediction, g_shared, g_specific, gamma)

    @staticmethod
    def _present(present: dict[str, torch.Tensor], m: str, like: torch.Tensor) -> torch.Tensor:
        mask = present.get(m)
        return torch.ones(len(like), dtype=torch.bool, device=like.device) if mask is None else mask


def present_layer_norm(x: torch.Tensor, blocks: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm (no affine) of each row of x over its present blocks; absent blocks give 0.

    Args:
        x: (B, K * D), K equal blocks of D columns.
        blocks: (B, K) bool, which blocks of each row are there (at least one per row).

    Equals ``nn.LayerNorm(K * D, elementwise_affine=False)`` on rows with every block there.
    """
    n_blocks = blocks.shape[1]
    keep = blocks.repeat_interleave(x.shape[1] // n_blocks, dim=1).to(x.dtype)  # (B, K * D)
    count = keep.sum(dim=1, keepdim=True).clamp(min=1.0)
    mean = (x * keep).sum(dim=1, keepdim=True) / count
    variance = (((x - mean) * keep) ** 2).sum(dim=1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(variance + eps) * keep


class ConcatFusion(nn.Module):
    """The 'without SGAFF' ablation and the plain baseline: [u; r] of all modalities -> MLP."""

    def __init__(self, modalities: tuple[str, ...], d_half: int, d_out: int, dropout: float):
        super().__init__()
        self.modalities = modalities
        self.head = mlp(2 * len(modalities) * d_half, d_half, d_out, dropout)

    def forward(
        self,
        shared: dict[str, torch.Tensor],
        specific: dict[str, torch.Tensor],
        present: dict[str, torch.Tensor] | None = None,
    ) -> Fused:
        present = present or {}
        h = torch.cat(
            [_kept(t, present.get(m)) for m in self.modalities for t in (specific[m], shared[m])],
            dim=-1,
        )
        return Fused(self.head(h), None, None, None)
