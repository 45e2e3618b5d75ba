"""Start a model from a trained checkpoint that reads fewer modalities (``mer train --init``).

The new model is built with the checkpoint's architecture and the run's modalities. Every
tensor the checkpoint has is copied; the fusion's first layers, whose inputs are the modalities'
features side by side, get the checkpoint's columns for its modalities and fresh ones for the
added modalities. With ``freeze`` the copied values that predictions read never change (the
MIC estimators, reconstructors and auxiliary heads, which only training reads, still train):
a sample without the added modalities then gets the checkpoint's own prediction, because an
absent modality's features reach the fusion as zeros and the gate's LayerNorm is taken over the
modalities a sample has (``ModelConfig.gate_norm_over_present``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mercli.config import ModelConfig
from mercli.model.emotion import EmotionModel

# Fusion layers whose input is the modalities' features side by side, and how many groups of
# modality blocks that input holds: the heads read [x_1 .. x_n], the gate [u_1 .. u_n, r_1 .. r_n].
BLOCK_INPUTS = {
    "fusion.shared_head.0.weight": 1,
    "fusion.specific_head.0.weight": 1,
    "fusion.gate.0.weight": 2,
}
# Config fields the new model takes from the run, not from the checkpoint.
RUN_FIELDS = ("modalities", "aux_heads", "gate_norm_over_present")


class GraftError(ValueError):
    """The checkpoint cannot start this model (names the checkpoint and the problem)."""


def grafted_config(run: ModelConfig, source: ModelConfig, where: str) -> ModelConfig:
    """The checkpoint's architecture with the run's modalities and their input widths.

    Raises:
        GraftError: the checkpoint reads a modality the run lacks, or does another task.
    """
    text_path = ("text_backbone", "tune_top_layers", "finetune_text_backbone")
    other_text = any(getattr(run, f) != getattr(source, f) for f in text_path)
    if "text" in source.modalities and other_text:
        top = f", its top {source.tune_top_layers} layers tuned" if source.tune_top_layers else ""
        raise GraftError(
            f"{where}: reads text through {source.text_backbone}{top}; train with the same "
            f"--text-backbone and --tune-top-layers"
        )
    lacking = [m for m in source.modalities if m not in run.modalities]
    if lacking:
        raise GraftError(f"{where}: reads {', '.join(lacking)}, which the data lacks")
    if (source.task, source.d_out) != (run.task, run.d_out):
        raise GraftError(f"{where}: a {source.task} model; the data is for {run.task}")
    changes: dict[str, Any] = {f: getattr(run, f) for f in RUN_FIELDS}
    changes.update({m: run.encoder(m) for m in run.modalities if m not in source.modalities})
    return replace(source, **changes)


def source_config(name_or_path: str) -> tuple[ModelConfig, Path]:
    """The model config and folder of a packaged name or checkpoint folder (no weights read)."""
    from mercli.checkpoint import model_config_of, open_checkpoint

    checkpoint = open_checkpoint(name_or_path)
    return model_config_of(checkpoint.directory, checkpoint.meta), checkpoint.directory


def graft(
    model: EmotionModel,
    source: ModelConfig,
    state: dict[str, torch.Tensor],
    where: str,
    freeze: bool = False,
) -> dict[str, torch.Tensor]:
    """Copy ``state`` (a model of ``source``) into ``model``; the modules only training reads
    (:func:`~mercli.checkpoint.training_only`) are copied when they fit, never frozen.

    Returns:
        per parameter name, a bool mask of the entries taken from ``state`` that predictions
        read; with ``freeze`` those parameters wholly taken no longer require a gradient and
        the others must keep the masked entries (:class:`Pins`).

    Raises:
        GraftError: a tensor of ``state`` that fits nowhere in ``model``.
    """
    from mercli.checkpoint import training_only

    target = model.config.modalities
    params = dict(model.named_parameters())
    own = model.state_dict()
    masks: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, value in state.items():
            if name not in own:
                if name.startswith("text_backbone."):  # a frozen backbone loads on its own
                    continue
                raise GraftError(f"{where}: its {name} has no place in the new model")
            mask = _copy(own[name], value, name, source.modalities, target, where)
            if name in params and not training_only(name):
                masks[name] = mask
    if freeze:
        for name, mask in masks.items():
            if bool(mask.all()):
                params[name].requires_grad_(False)
    return masks


def _copy(
    into: torch.Tensor,
    value: torch.Tensor,
    name: str,
    source: tuple[str, ...],
    target: tuple[str, ...],
    where: str,
) -> torch.Tensor:
    """Copy ``value`` into ``into`` (whole, or by modality blocks); the mask of what was set."""
    value = value.to(into.dtype)
    if name in BLOCK_INPUTS and into.shape != value.shape:
        groups = BLOCK_INPUTS[name]
        width = into.shape[1] // (groups * len(target))
        if value.shape != (into.shape[0], groups * len(source) * width):
            raise GraftError(f"{where}: its {name} {tuple(value.shape)} does not fit the model")
        mask = torch.zeros_like(into, dtype=torch.bool)
        for g in range(groups):
            for i, m in enumerate(source):
                j = g * len(target) + target.index(m)
                columns = slice(j * width, (j + 1) * width)
                into[:, columns] = value[:, (g * len(source) + i) * width :][:, :width]
                mask[:, columns] = True
        return mask
    if into.shape != value.shape:
        raise GraftError(
            f"{where}: its {name} {tuple(value.shape)} does not fit the model's {tuple(into.shape)}"
        )
    into.copy_(value)
    return torch.ones_like(into, dtype=torch.bool)


class Pins:
    """Keeps the frozen entries of partly frozen parameters: their gradient is zeroed (so that
    clipping sees only what trains) and their values are put back after each optimizer step
    (AdamW's weight decay would move them)."""

    def __init__(self, model: EmotionModel, masks: dict[str, torch.Tensor]):
        params = dict(model.named_parameters())
        self.kept: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []
        for name, mask in masks.items():
            p = params[name]
            if not p.requires_grad or not bool(mask.any()):
                continue
            self.kept.append((p, mask.to(p.device), p.detach().clone()))
            p.register_hook(_zero_where(mask.to(p.device)))

    def restore(self, *_: Any) -> None:
        with torch.no_grad():
            for p, mask, value in self.kept:
                p.copy_(torch.where(mask, value, p))


def _zero_where(mask: torch.Tensor) -> Any:
    def hook(grad: torch.Tensor) -> torch.Tensor:
        return grad.masked_fill(mask, 0.0)

    return hook
