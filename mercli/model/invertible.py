"""The invertible core of IAMD (paper 2.2, eqs. 3-6).

Every block maps ``x -> (z, logdet)`` and offers ``inverse(z) -> x``. Sign contract (as FrEIA):
``logdet`` is log|det dz/dx| of the forward map, per sample, shape = (B,); the inverse's
log-determinant is its negation.
"""

from __future__ import annotations

import torch
from torch import nn


class HouseholderMixing(nn.Module):
    """h' = Q h with Q = prod_j (I - 2 v_j v_j^T / ||v_j||^2), an orthogonal matrix (eq. 3)."""

    def __init__(self, dim: int, n_reflections: int):
        super().__init__()
        vectors = torch.empty(n_reflections, dim)
        if vectors.device.type != "meta":  # torch.randn's values; none on "meta" (size checks),
            nn.init.normal_(vectors)  # where drawing them imports torch's symbolic shapes (0.6 s)
        self.vectors = nn.Parameter(vectors)

    def _reflect(self, x: torch.Tensor, order: range) -> torch.Tensor:
        for j in order:
            v = self.vectors[j] / self.vectors[j].norm().clamp(min=1e-12)
            x = x - 2.0 * (x @ v)[:, None] * v  # (I - 2 v v^T) x, without building the matrix
        return x

    def matrix(self) -> torch.Tensor:
        """Q, shape = (D, D); for inspection, the forward pass never builds it."""
        dim = self.vectors.shape[1]
        return self.forward(torch.eye(dim, dtype=self.vectors.dtype, device=self.vectors.device))[
            0
        ].T

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Q h = H_1 H_2 H_3 h: the last reflection acts first.
        return self._reflect(x, range(len(self.vectors) - 1, -1, -1)), x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return self._reflect(z, range(len(self.vectors)))  # Q^-1 = Q^T = H_3 H_2 H_1


class ActNorm(nn.Module):
    """Per-channel affine normalisation, y = (x - bias) * exp(log_scale).

    The paper normalises with layer norm, which has no inverse; a learned affine map plays the
    same role and inverts exactly.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (x - self.bias) * self.log_scale.exp()
        return z, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z * (-self.log_scale).exp() + self.bias


class AdditiveCoupling(nn.Module):
    """u^ = u', r^ = r' + t(u') (eq. 4), inverse r' = r^ - t(u^) (eq. 5); t = Linear-GELU-Linear."""

    def __init__(self, d_half: int, d_hidden: int):
        super().__init__()
        self.shift = nn.Sequential(
            nn.Linear(d_half, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_half)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, r = x.chunk(2, dim=-1)
        return torch.cat([u, r + self.shift(u)], dim=-1), x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        u, r = z.chunk(2, dim=-1)
        return torch.cat([u, r - self.shift(u)], dim=-1)


class ChannelPermutation(nn.Module):
    """A fixed random channel permutation P (eq. 6); the inverse uses P^T."""

    order: torch.Tensor
    inverse_order: torch.Tensor

    def __init__(self, dim: int, seed: int = 0):
        super().__init__()
        # on the CPU generator's device even while a model is built on "meta" (size checks):
        # a "meta" randperm would import torch's symbolic shapes (0.6 s)
        order = torch.randperm(dim, generator=torch.Generator().manual_seed(seed), device="cpu")
        self.register_buffer("order", order)
        self.register_buffer("inverse_order", torch.argsort(order))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, self.order], x.new_zeros(x.shape[0])

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, self.inverse_order]


class InvertibleCore(nn.Module):
    """Q -> normalisation -> additive coupling -> permutation, on h~ = [u~; r~] of width D."""

    def __init__(self, dim: int, n_reflections: int, d_hidden: int, seed: int = 0):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                HouseholderMixing(dim, n_reflections),
                ActNorm(dim),
                AdditiveCoupling(dim // 2, d_hidden),
                ChannelPermutation(dim, seed),
            ]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, D) -> z: (B, D), logdet: (B,)."""
        logdet = x.new_zeros(x.shape[0])
        for block in self.blocks:
            x, block_logdet = block(x)
            logdet = logdet + block_logdet
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, D) -> x: (B, D)."""
        for block in reversed(self.blocks):
            z = block.inverse(z)  # type: ignore[operator]
        return z
