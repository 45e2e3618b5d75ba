"""EmotionModel: encoders -> IAMD per modality -> SGAFF (paper Fig. 1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from mercli.config import AUX_CLASSES, ModelConfig
from mercli.model.disentangle import Disentangled, InvertibleDisentangler, PlainDisentangler
from mercli.model.encoder import (
    ModalityEncoder,
    attention_padding_mask,
    masked_mean,
    transformer,
)
from mercli.model.fusion import ConcatFusion, GatedFusion
from mercli.model.mic import MutualInformationEstimators
from mercli.model.ordinal import OrdinalHead
from mercli.model.plain_encoder import TopLayers
from mercli.schema import Batch


@dataclass
class ModelOutput:
    """Everything the losses, the reports and ``analyze`` need from one forward pass."""

    prediction: torch.Tensor  # (B,) score for regression, (B, n_classes) logits
    shared_branch: torch.Tensor | None  # g(s), same shape as prediction; None without SGAFF
    specific_branch: torch.Tensor | None  # g(p)
    gate: torch.Tensor | None  # (B,) gamma, weight of the shared branch; None without SGAFF
    features: dict[str, Disentangled]  # per modality: r, u, h~, F^-1([u; r]), alpha, beta
    pooled: dict[str, torch.Tensor]  # per modality x_m, (B, d_model): the encoders' output
    # per modality x_m rebuilt from [u; r] (eq. 10); empty from an inference-only model
    reconstructed: dict[str, torch.Tensor]
    # per modality (B,) bool: which samples have it; absent ones reach neither fusion nor losses
    present: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def shared(self) -> dict[str, torch.Tensor]:
        return {m: f.shared for m, f in self.features.items()}

    @property
    def specific(self) -> dict[str, torch.Tensor]:
        return {m: f.specific for m, f in self.features.items()}


# Top-level modules only training reads (state-dict key prefixes): left out of a model built
# with ``inference_only`` and of an inference-only checkpoint.
TRAINING_ONLY = ("mic", "reconstructors", "aux_heads")


class EmotionModel(nn.Module):
    """The IAMD + MIC + SGAFF model, built from a :class:`ModelConfig`."""

    def __init__(
        self,
        config: ModelConfig,
        backbone: nn.Module | None = None,
        text_states_width: int | None = None,
        inference_only: bool = False,
    ):
        """Args:
        config: the architecture; every ablation is a field of it.
        backbone: an already loaded text transformer; loaded from ``config.text_backbone``
            when None and the config names one.
        text_states_width: the hidden size of the frozen backbone whose states the caller
            will feed as text (``(B, T, H)``): the backbone is then not loaded at all. With
            ``config.tune_top_layers``, the states of its lower part (the top layers are the
            model's own, built from the backbone's ``config.json`` and left to be loaded).
        inference_only: leave out the modules only training uses (:data:`TRAINING_ONLY`: the
            MIC estimators, the reconstructors, auxiliary heads); ``forward`` then returns no
            reconstructions, and the predictions are the same.
        """
        super().__init__()
        self.config = config
        modalities = config.modalities
        self.text_states_width = text_states_width
        self.text_backbone: nn.Module | None = None
        # the backbone's top layers, trained (ModelConfig.tune_top_layers); None: none is
        self.text_top: TopLayers | None = None
        if "text" in modalities and config.tune_top_layers and config.text_backbone is not None:
            if backbone is not None:
                raise ValueError("a model that tunes the backbone's top layers loads it itself")
            self.text_backbone, self.text_top = _split_backbone(
                config.text_backbone, config.tune_top_layers, text_states_width is None
            )
        elif "text" in modalities and text_states_width is None:
            self.text_backbone = self._backbone(config, backbone)
        d_ff = config.d_ff_mult * config.d_model
        self.encoders = nn.ModuleDict(
            {
                m: ModalityEncoder(
                    self._encoder_config(m),
                    config.d_model,
                    d_ff,
                    config.dropout,
                    config.attention_dropout,
                )
                for m in modalities
            }
        )
        self.shared_encoder = transformer(
            config.d_model,
            config.n_shared_layers,
            config.n_shared_heads,
            d_ff,
            config.dropout,
            config.attention_dropout,
        )
        self.disentanglers = nn.ModuleDict(
            {m: self._disentangler(i) for i, m in enumerate(modalities)}
        )
        self.inference_only = inference_only
        self.reconstructors = (
            None
            if inference_only
            else nn.ModuleDict({m: nn.Linear(config.d_latent, config.d_model) for m in modalities})
        )
        self.fusion: nn.Module
        if config.use_sgaff:
            bounded = config.bound_branches and config.task == "regression"
            self.fusion = GatedFusion(
                modalities,
                config.d_half,
                config.d_out,
                config.dropout,
                branches=config.fusion_branches,
                score_bound=config.score_bound if bounded else None,
                normalize_gate_input=config.normalize_gate_input,
                gate_norm_over_present=config.gate_norm_over_present,
            )
        else:
            self.fusion = ConcatFusion(modalities, config.d_half, config.d_out, config.dropout)
        self.mic = (
            MutualInformationEstimators(modalities, config.d_half, config.d_mic, config.d_out)
            if config.use_mic and not inference_only
            else None
        )
        # labels of other corpora read off the score (training only; see mercli.model.ordinal)
        self.aux_heads = (
            nn.ModuleDict({n: OrdinalHead(AUX_CLASSES[n]) for n in config.aux_heads})
            if config.aux_heads and not inference_only
            else None
        )

    @staticmethod
    def _backbone(config: ModelConfig, backbone: nn.Module | None) -> nn.Module | None:
        if backbone is None and config.text_backbone is not None:
            from mercli.model.text_backbone import load_backbone

            backbone = load_backbone(config.text_backbone)
        if backbone is not None and not config.finetune_text_backbone:
            backbone.requires_grad_(False)
        elif backbone is not None and config.use_backbone_checkpointing:  # in train mode only
            # transformers 5 renamed it (the old name warns); 4.x has only the old one
            enable = getattr(backbone, "activation_checkpointing_enable", None)
            enable = enable or backbone.gradient_checkpointing_enable
            enable({"use_reentrant": False})  # type: ignore[operator]
        return backbone

    def _encoder_config(self, modality: str) -> Any:
        cfg = self.config.encoder(modality)
        if modality == "text" and self.text_backbone is not None:
            from dataclasses import replace

            width = getattr(self.text_backbone, "width", None)  # a PlainEncoder's
            width = width or self.text_backbone.config.hidden_size  # type: ignore[union-attr]
            return replace(cfg, d_in=int(width))  # type: ignore[arg-type]
        if modality == "text" and self.text_states_width is not None:
            from dataclasses import replace

            return replace(cfg, d_in=self.text_states_width)
        return cfg

    def _disentangler(self, index: int) -> nn.Module:
        c = self.config
        if not c.use_iamd:
            return PlainDisentangler(c.d_model, c.d_half, c.dropout)
        return InvertibleDisentangler(
            c.d_model, c.d_half, c.n_householder, c.n_mask_groups, c.d_key, c.dropout, seed=index
        )

    def train(self, mode: bool = True) -> EmotionModel:
        super().train(mode)
        if self.text_backbone is not None and not self.config.finetune_text_backbone:
            self.text_backbone.eval()  # a frozen backbone keeps its dropout off
        return self

    @property
    def dtype(self) -> torch.dtype:
        return next(self.shared_encoder.parameters()).dtype

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per modality the pooled utterance vector x_m, (B, d_model); zeros where absent."""
        pooled = {}
        for m in self.config.modalities:
            if m not in batch.inputs:  # a batch without this modality at all
                anchor = next(iter(batch.masks.values()))
                pooled[m] = torch.zeros(
                    len(anchor), self.config.d_model, dtype=self.dtype, device=anchor.device
                )
                continue
            x, mask = self._modality_input(batch, m)  # (B, T_m, d_m), (B, T_m)
            rows = mask.any(dim=1)  # (B,) samples that have m
            if bool(rows.all()) or not bool(rows.any()):
                pooled[m] = self._pool(m, x, mask)
                continue
            # Samples without m (transcripts mixed with speech clips) skip its encoders: their
            # pooled vector is zero either way, and each sample is encoded on its own.
            index = rows.nonzero()[:, 0]
            present = self._pool(m, x[index], mask[index])  # (B_m, d_model)
            pooled[m] = present.new_zeros(len(rows), present.shape[1]).index_copy(0, index, present)
        return pooled

    def _pool(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, d_m), mask (B, T) -> (B, d_model): modality and shared encoders, pooled."""
        encoder = cast(ModalityEncoder, self.encoders[m])
        h = encoder(x, mask)  # (B, T_m / stride, d_model)
        mask = encoder.step_mask(mask)  # (B, T_m / stride)
        h = self.shared_encoder(h, src_key_padding_mask=attention_padding_mask(mask))
        return masked_mean(h, mask)  # (B, d_model)

    def _modality_input(self, batch: Batch, m: str) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask = batch.inputs[m], batch.masks[m].bool()
        # Text arrives as token ids (B, T) for the backbone, or as its states (B, T, H) when a
        # frozen backbone's outputs were computed once ahead of training.
        if m == "text" and self.text_backbone is not None and x.dim() == 2:
            # A sample without text still gets one attended token, so that the backbone never
            # sees an all-masked row; its states are discarded by the encoder and pooling.
            attended = mask | ~mask.any(dim=1, keepdim=True)
            with torch.set_grad_enabled(
                torch.is_grad_enabled() and self.config.finetune_text_backbone
            ):
                x = self.text_backbone(
                    input_ids=x.long(), attention_mask=attended.long()
                ).last_hidden_state
        elif m == "text" and x.dim() == 2 and self.text_states_width is not None:
            raise ValueError("this model was built without its text backbone: feed its states")
        x = x.to(self.dtype)  # float32 inputs into a float64 model are cast up
        if m == "text" and self.text_top is not None:  # the lower part's states -> the last
            x = self.text_top(x, mask | ~mask.any(dim=1, keepdim=True))
        return x, mask

    def forward(self, batch: Batch) -> ModelOutput:
        pooled = self.encode(batch)
        present = {m: batch.presence(m) for m in self.config.modalities}
        features = {m: self.disentanglers[m](x) for m, x in pooled.items()}
        shared = {m: f.shared for m, f in features.items()}
        specific = {m: f.specific for m, f in features.items()}
        fused = self.fusion(shared, specific, present)
        reconstructors = self.reconstructors
        reconstructed = (
            {}
            if reconstructors is None
            else {
                m: reconstructors[m](torch.cat([f.specific, f.shared], dim=-1))
                for m, f in features.items()
            }
        )
        squeeze = self.config.task == "regression"
        return ModelOutput(
            prediction=fused.prediction[:, 0] if squeeze else fused.prediction,
            shared_branch=_squeeze(fused.shared_branch, squeeze),
            specific_branch=_squeeze(fused.specific_branch, squeeze),
            gate=None if fused.gate is None else fused.gate[:, 0],
            features=features,
            pooled=pooled,
            reconstructed=reconstructed,
            present=present,
        )

    def prediction_without(self, output: ModelOutput, modality: str) -> torch.Tensor:
        """The prediction of ``output`` had ``modality`` been absent from every sample.

        Modalities are encoded and disentangled independently, so only the fusion runs again.
        """
        present = {m: p & (m != modality) for m, p in output.present.items()}
        fused = self.fusion(output.shared, output.specific, present)
        return fused.prediction[:, 0] if self.config.task == "regression" else fused.prediction

    def count_parameters(self, include_text_backbone: bool = True) -> int:
        backbone = (
            set()
            if self.text_backbone is None
            else {id(p) for p in self.text_backbone.parameters()}
        )
        return sum(
            p.numel() for p in self.parameters() if include_text_backbone or id(p) not in backbone
        )


def _split_backbone(name: str, n_top: int, with_lower: bool) -> tuple[nn.Module | None, TopLayers]:
    """Backbone ``name``'s frozen lower part (None unless ``with_lower``) and its top ``n_top``
    layers: initialised from its weights when they are loaded (``with_lower``), else built
    from its ``config.json`` alone, for a checkpoint's weights to fill."""
    from mercli.model.plain_encoder import load_split_encoder, read_config
    from mercli.model.text_backbone import resolve_backbone

    folder = resolve_backbone(name)
    if with_lower:
        loaded = load_split_encoder(folder, n_top)
        if loaded is not None:
            return loaded[0], loaded[2]
    else:
        config = read_config(folder)
        if config is not None:
            return None, TopLayers(config, n_top)
    raise ValueError(f"{name}: not a BERT / MPNet folder whose top layers mer can tune")


def _squeeze(x: torch.Tensor | None, squeeze: bool) -> torch.Tensor | None:
    return x[:, 0] if x is not None and squeeze else x
