"""IAMD: invertible attention-mask disentanglement, one per modality (paper 2.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from mercli.model.invertible import InvertibleCore


def mlp(d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> nn.Sequential:
    """Two linear layers with a GELU between them."""
    return nn.Sequential(
        nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out)
    )


@dataclass
class Disentangled:
    """One modality's disentangled features, each shape = (B, d_half) unless noted."""

    shared: torch.Tensor  # r: task-related, consistent across modalities
    specific: torch.Tensor  # u: modality-specific
    latent: torch.Tensor  # h~ = [u~; r~], (B, 2 * d_half)
    restored: torch.Tensor | None  # F^-1([u; r]) (eq. 11), None without IAMD
    alpha: torch.Tensor | None  # mask weights of u^ on r^, (B, n_groups)
    beta: torch.Tensor | None  # mask weights of r^ on u^, (B, n_groups)


class AttentionMask(nn.Module):
    """Exchange between u^ and r^ (eqs. 7-9), computed inside each sample.

    Read literally, eq. 8 takes a softmax over the batch, so an utterance's prediction would
    depend on the other utterances in its batch. Here the tokens of the attention are channel
    groups of one sample: alpha and beta are the diagonals of (G x G) attention maps, one weight
    per channel group and per sample.
    """

    def __init__(self, d_half: int, n_groups: int, d_key: int):
        super().__init__()
        self.n_groups = n_groups
        d_group = d_half // n_groups
        self.query_u, self.key_u = nn.Linear(d_group, d_key), nn.Linear(d_group, d_key)
        self.query_r, self.key_r = nn.Linear(d_group, d_key), nn.Linear(d_group, d_key)
        self.value_u, self.value_r = nn.Linear(d_half, d_half), nn.Linear(d_half, d_half)
        self.scale = 1.0 / math.sqrt(d_key)

    def forward(
        self, u_hat: torch.Tensor, r_hat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """u_hat, r_hat: (B, d_half) -> u, r: (B, d_half), alpha, beta: (B, G)."""
        tokens_u = rearrange(u_hat, "b (g c) -> b g c", g=self.n_groups)  # (B, G, d_group)
        tokens_r = rearrange(r_hat, "b (g c) -> b g c", g=self.n_groups)
        alpha = self._diagonal_attention(self.query_u(tokens_u), self.key_r(tokens_r))  # (B, G)
        beta = self._diagonal_attention(self.query_r(tokens_r), self.key_u(tokens_u))
        value_u = rearrange(self.value_u(u_hat), "b (g c) -> b g c", g=self.n_groups)
        value_r = rearrange(self.value_r(r_hat), "b (g c) -> b g c", g=self.n_groups)
        a, b = alpha[..., None], beta[..., None]  # (B, G, 1): one weight per channel group
        r = (1 - a) * value_r + b * value_u
        u = (1 - b) * value_u + a * value_r
        return rearrange(u, "b g c -> b (g c)"), rearrange(r, "b g c -> b (g c)"), alpha, beta

    def _diagonal_attention(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        scores = torch.einsum("bgk,bhk->bgh", query, key) * self.scale  # (B, G, G)
        return scores.softmax(dim=-1).diagonal(dim1=1, dim2=2)  # (B, G)


class InvertibleDisentangler(nn.Module):
    """x (pooled encoder output) -> h~ = [u~; r~] -> core F -> attention mask -> [u; r]."""

    def __init__(
        self,
        d_model: int,
        d_half: int,
        n_reflections: int,
        n_groups: int,
        d_key: int,
        dropout: float,
        seed: int,
    ):
        super().__init__()
        self.to_specific = mlp(d_model, d_model, d_half, dropout)
        self.to_shared = mlp(d_model, d_model, d_half, dropout)
        self.core = InvertibleCore(2 * d_half, n_reflections, 2 * d_half, seed)
        self.mask = AttentionMask(d_half, n_groups, d_key)

    def forward(self, x: torch.Tensor) -> Disentangled:
        """x: (B, d_model)."""
        latent = torch.cat([self.to_specific(x), self.to_shared(x)], dim=-1)  # (B, 2 d_half)
        z, _ = self.core(latent)
        u_hat, r_hat = z.chunk(2, dim=-1)  # h^ = [u^; r^]
        u, r, alpha, beta = self.mask(u_hat, r_hat)
        restored = self.core.inverse(torch.cat([u, r], dim=-1))
        return Disentangled(r, u, latent, restored, alpha, beta)


class PlainDisentangler(nn.Module):
    """The 'without IAMD' ablation: u and r are plain MLP projections of x."""

    def __init__(self, d_model: int, d_half: int, dropout: float):
        super().__init__()
        self.to_specific = mlp(d_model, d_model, d_half, dropout)
        self.to_shared = mlp(d_model, d_model, d_half, dropout)

    def forward(self, x: torch.Tensor) -> Disentangled:
        u, r = self.to_specific(x), self.to_shared(x)
        return Disentangled(r, u, torch.cat([u, r], dim=-1), None, None, None)
