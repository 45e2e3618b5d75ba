"""Per-modality temporal encoders (paper 2.1, eq. 1) and masked pooling."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from mercli.config import EncoderConfig


def sinusoidal_positions(
    n_steps: int, d_model: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Fixed sinusoidal position codes, shape = (n_steps, d_model)."""
    position = torch.arange(n_steps, device=device, dtype=dtype)[:, None]
    rate = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=dtype) * (-math.log(10000.0) / d_model)
    )
    codes = torch.zeros(n_steps, d_model, device=device, dtype=dtype)
    codes[:, 0::2] = torch.sin(position * rate)
    codes[:, 1::2] = torch.cos(position * rate[: d_model // 2])
    return codes


def attention_padding_mask(mask: torch.Tensor) -> torch.Tensor:
    """The key-padding mask for ``nn.TransformerEncoder`` (True = ignore), shape = (B, T).

    A sample with no valid step at all would make every attention row empty and give NaN;
    such a sample attends over all its steps instead, and pooling later discards the result.
    """
    empty = ~mask.any(dim=1, keepdim=True)  # (B, 1)
    return ~(mask | empty)


def transformer(
    d_model: int, n_layers: int, n_heads: int, d_ff: int, dropout: float, attention_dropout: float
) -> nn.Module:
    layer = nn.TransformerEncoderLayer(
        d_model, n_heads, d_ff, dropout, activation="gelu", batch_first=True, norm_first=True
    )
    layer.self_attn.dropout = attention_dropout
    # Nested tensors would make eval outputs depend on the padding of other samples.
    return nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)


class ModalityEncoder(nn.Module):
    """Conv1D projection -> positional encoding -> Transformer, for one modality.

    With ``cfg.stride`` s > 1 the projection is strided (kernel s, stride s): output step t
    encodes input steps [t s, (t + 1) s), and the Transformer runs over ceil(T / s) steps whose
    mask is :meth:`step_mask`.
    """

    def __init__(
        self, cfg: EncoderConfig, d_model: int, d_ff: int, dropout: float, attention_dropout: float
    ):
        super().__init__()
        self.stride = cfg.stride
        if cfg.stride > 1:
            self.projection = nn.Conv1d(
                cfg.d_in, d_model, cfg.stride, stride=cfg.stride, bias=False
            )
        else:
            self.projection = nn.Conv1d(
                cfg.d_in, d_model, cfg.kernel_size, padding=cfg.kernel_size // 2, bias=False
            )
        self.scale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)
        self.transformer = transformer(
            d_model, cfg.n_layers, cfg.n_heads, d_ff, dropout, attention_dropout
        )

    def step_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """mask (B, T) -> (B, ceil(T / stride)): an output step is valid when any of its input
        steps is."""
        if self.stride == 1:
            return mask
        pad = -mask.shape[1] % self.stride
        windows = F.pad(mask, (0, pad)).view(mask.shape[0], -1, self.stride)  # (B, T', s)
        return windows.any(dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_in), mask: (B, T) bool -> (B, T', d_model), T' = ceil(T / stride)."""
        # Padding holds anything, NaN and inf included: select, never multiply (NaN * 0 = NaN).
        x = torch.where(mask[..., None], x, x.new_zeros(()))
        if self.stride > 1:  # zero steps up to a whole window
            x = F.pad(x, (0, 0, 0, -x.shape[1] % self.stride))  # (B, s T', d_in)
        h = self.projection(x.transpose(1, 2)).transpose(1, 2)  # (B, T', d_model)
        h = h * self.scale + sinusoidal_positions(h.shape[1], h.shape[2], h.device, h.dtype)
        padding = attention_padding_mask(self.step_mask(mask))  # (B, T')
        return self.transformer(self.dropout(h), src_key_padding_mask=padding)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid steps: x (B, T, D), mask (B, T) -> (B, D); zeros where nothing is valid."""
    weights = mask.to(x.dtype)[..., None]  # (B, T, 1)
    total = (x * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp(min=1.0)
