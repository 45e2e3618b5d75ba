"""Configuration dataclasses and per-dataset presets.

Every config is a frozen dataclass; a preset is a named set of changes to the defaults, made with
``dataclasses.replace``. Facts about a dataset (feature widths, task) are not hyperparameters: the
data adapter reports them and :meth:`ModelConfig.for_dataset` returns a new config from them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from mercli.schema import MODALITIES

Task = Literal["regression", "classification"]
# Auxiliary text sets the model can read besides its own labels (mercli.data.aux_text): name ->
# classes of its label (SST-2: negative / positive; MELD: negative / neutral / positive).
AUX_CLASSES: dict[str, int] = {"sst2": 2, "meld": 3}
MAX_STRIDE = 64  # EncoderConfig.stride: beyond this a 20 ms audio step would merge > 1 s
Branches = Literal["both", "shared", "specific"]


@dataclass(frozen=True)
class EncoderConfig:
    """One modality's temporal encoder (paper 2.1): Conv1D -> positional encoding -> Transformer."""

    d_in: int  # width of the input features (768 for BERT states, 5 for MOSI audio, ...)
    n_layers: int  # Transformer layers (paper Table 2: text/audio/vision = 3/2/2)
    n_heads: int  # attention heads (paper Table 2: 4/2/2)
    kernel_size: int = 1  # Conv1D projection width; 1 keeps padded steps out of valid ones
    # A sequence-shortening front (not in the paper, which projects every step): the projection
    # becomes a Conv1D of kernel and stride ``stride``, so the Transformers attend over
    # T / stride steps. MOSI's 375 audio / 500 vision steps make attention the bulk of the
    # model's own work (MISA reads at most 50); 1 keeps the paper's form.
    stride: int = 1


@dataclass(frozen=True)
class ModelConfig:
    """The IAMD + MIC + SGAFF model. Switches cover every ablation of paper Tables 5-7."""

    text: EncoderConfig = EncoderConfig(d_in=768, n_layers=3, n_heads=4)
    audio: EncoderConfig = EncoderConfig(d_in=5, n_layers=2, n_heads=2)
    vision: EncoderConfig = EncoderConfig(d_in=20, n_layers=2, n_heads=2)
    modalities: tuple[str, ...] = MODALITIES  # any non-empty subset (Table 5)
    # d_model, d_latent and d_mic are not in the paper; they are the widths whose parameter
    # counts fit its Table 6 best: full 8.60 M (paper 8.63), without IAMD 7.61 (7.28), without
    # MIC 5.68 (5.57), without SGAFF 7.14 (7.39), text backbone excluded (README).
    d_model: int = 152  # common width of the encoders
    n_shared_layers: int = 1  # the Transformer shared by all modalities after their own
    n_shared_heads: int = 4
    d_ff_mult: int = 4  # Transformer feed-forward width = d_ff_mult * d_model
    d_latent: int = 464  # width of h~ = [u~; r~]; u and r get half each
    n_householder: int = 3  # J reflections in the orthogonal mixing Q (paper: 3)
    n_mask_groups: int = 8  # channel groups = tokens of the per-sample attention mask
    d_key: int = 16  # query/key width of the attention mask
    d_mic: int = 464  # hidden width of the MI scoring nets and the CMI discriminator
    knn_k: int = 3  # neighbours of r whose labels give the CMI negatives z'
    dropout: float = 0.1  # paper Table 2: residual, feed-forward and head dropout
    # Dropout on the attention weights forces the unfused attention path (a T x T random mask
    # per head); at 0 the fused kernels run, about 30% faster per layer on 500-step sequences.
    attention_dropout: float = 0.0
    task: Task = "regression"  # MSE on a score (MOSI/MOSEI) or cross-entropy (UR-FUNNY)
    n_classes: int = 2  # used only when task == "classification"
    use_iamd: bool = True  # False: plain MLP projections to u and r, no invertible core
    use_mic: bool = True  # False: no MI estimators (and no L_MI)
    use_sgaff: bool = True  # False: concatenate [u; r] of all modalities -> one head
    # SGAFF's branch weights (gamma, 1 - gamma) must say how much each branch drove the score.
    # Trained in the paper's exact form (unbounded heads, raw gate input, no loss per branch:
    # the "paper-gate" ablation) the gate learned to restate the score's sign instead.
    bound_branches: bool = True  # each branch's score is b tanh(x / b), b = score_bound
    normalize_gate_input: bool = True  # LayerNorm (no affine) of [u_g; r_e] before the gate
    # That LayerNorm's mean and variance over the modalities a sample has, not over the zeros
    # of those it lacks: a sample without audio then gets the gate of a model without audio
    # (the same as the joint LayerNorm when every modality is there, or only one is read).
    gate_norm_over_present: bool = True
    fusion_branches: Branches = "both"  # Table 8: "shared" or "specific" branch alone
    score_bound: float = 3.0  # regression labels lie in [-score_bound, score_bound]
    text_backbone: str | None = None  # BERT-family name/path; None = text inputs are states
    finetune_text_backbone: bool = True  # False: the backbone is frozen
    # Frozen backbone only: its top ``tune_top_layers`` layers are trained after all (at
    # ``TrainConfig.text_lr``) while the lower part's states are computed once per text and
    # cached (BERT / MPNet folders, mercli.model.plain_encoder). Fine-tuning reads MOSI better
    # than freezing (README) but running all of all-mpnet-base-v2 in every step is too slow on
    # a CPU; the top layers cost a fraction of it. 0: the whole backbone is frozen.
    tune_top_layers: int = 0
    # Fine-tuned backbone only: keep no activations of its layers for backward and compute them
    # again there (Hugging Face gradient checkpointing). The same gradients; a bert-base at
    # batch 32 x 50 tokens peaks 760 MiB lower, 24% slower (benchmarks/train_throughput.py).
    use_backbone_checkpointing: bool = False
    # One ordinal head per auxiliary text set on the regression score (mercli.model.ordinal):
    # their class labels are not scores, so each gets a learned scale and ordered thresholds
    # on the score instead of a fake regression target. Empty: none (every earlier model).
    aux_heads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("ModelConfig.modalities must name at least one modality")
        unknown_aux = set(self.aux_heads) - set(AUX_CLASSES)
        if unknown_aux:
            raise ValueError(
                f"unknown auxiliary heads {sorted(unknown_aux)}; choose from {sorted(AUX_CLASSES)}"
            )
        if self.aux_heads and self.task != "regression":
            raise ValueError("auxiliary ordinal heads read a regression score")
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; choose from {MODALITIES}")
        if self.d_latent % 2:
            raise ValueError("d_latent must be even: it splits into u and r")
        if (self.d_latent // 2) % self.n_mask_groups:
            raise ValueError("d_latent / 2 must be divisible by n_mask_groups")
        if self.task == "classification" and self.n_classes < 2:
            raise ValueError("classification needs n_classes >= 2")
        for m in MODALITIES:
            encoder = self.encoder(m)
            if not 1 <= encoder.stride <= MAX_STRIDE:
                raise ValueError(f"{m}.stride must be in [1, {MAX_STRIDE}], got {encoder.stride}")
            if encoder.stride > 1 and encoder.kernel_size > 1:
                raise ValueError(f"{m}: a strided front (stride > 1) needs kernel_size 1")
        if self.tune_top_layers < 0:
            raise ValueError(f"tune_top_layers must be >= 0, not {self.tune_top_layers}")
        if self.tune_top_layers and self.finetune_text_backbone:
            raise ValueError(
                "tune_top_layers tunes the top of a frozen backbone; with "
                "finetune_text_backbone every layer is tuned already"
            )
        if self.fusion_branches not in ("both", "shared", "specific"):
            raise ValueError(
                f"fusion_branches must be both, shared or specific, not {self.fusion_branches!r}"
            )

    @property
    def d_half(self) -> int:
        return self.d_latent // 2

    @property
    def d_out(self) -> int:
        return 1 if self.task == "regression" else self.n_classes

    def encoder(self, modality: str) -> EncoderConfig:
        return getattr(self, modality)

    def for_dataset(self, info: DatasetInfo) -> ModelConfig:
        """A copy whose input widths and task come from the data, not from the preset."""
        encoders: dict[str, Any] = {
            m: replace(self.encoder(m), d_in=d) for m, d in info.d_in.items()
        }
        return replace(self, **encoders, task=info.task, n_classes=info.n_classes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """The config stored by ``to_dict``; a field older checkpoints lack takes the value
        that reproduces what they were trained as (the paper's exact gate)."""
        data = {**LEGACY_MODEL_FIELDS, **_checked(cls, data)}
        for m in MODALITIES:
            if isinstance(data.get(m), dict):
                data[m] = EncoderConfig(**_checked(EncoderConfig, data[m]))
        for key in ("modalities", "aux_heads"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


# Fields added after the first checkpoints, with the values those checkpoints were built with.
LEGACY_MODEL_FIELDS: dict[str, Any] = {
    "bound_branches": False,
    "normalize_gate_input": False,
    "gate_norm_over_present": False,
}
LEGACY_LOSS_FIELDS: dict[str, Any] = {"branch": 0.0, "gate_decorrelation": 0.0}


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset says about itself; read by the code that builds the model."""

    name: str
    d_in: dict[str, int]  # feature width per modality (text: token-state width or 768)
    task: Task = "regression"
    n_classes: int = 2


@dataclass(frozen=True)
class LossWeights:
    """lambda_1..lambda_5 of paper eq. 23; a weight of 0 removes the term (Table 6 ablations)."""

    invertibility: float = 0.1  # lambda_1, L_IN
    similarity: float = 0.05  # lambda_2, L_S (CMD between shared features)
    independence: float = 0.3  # lambda_3, L_H (HSIC)
    reconstruction: float = 0.2  # lambda_4, L_RE
    mutual_information: float = 0.1  # lambda_5, L_MI = L_R + L_C
    # Not in the paper: the task loss of each SGAFF branch alone, so that each branch is a
    # predictor of its own and the gate weighs evidence (0: the paper's exact objective).
    branch: float = 0.5
    # Not in the paper: squared Pearson correlation, within the batch, between the gate gamma
    # and the label, so that the weights cannot restate the score (0: no such constraint).
    # Without it gamma became a function of the score in every run (README, "Branch weights").
    gate_decorrelation: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AuxTextConfig:
    """Extra supervision of the text reading from labelled text of other corpora (SST-2, MELD).

    Every training step draws one more batch of their rows (text only) besides the main batch;
    its loss is each row's ordinal negative log-likelihood under its own set's head.
    """

    # Which sets (keys of AUX_CLASSES) are trained on; empty: none. Their paths are data, given
    # on the command line (``mer train --aux-text sst2=DIR``).
    sets: tuple[str, ...] = ()
    # Weight of the auxiliary loss beside the main loss. It trades the corpora's polarity
    # (written reviews, TV dialogue) against the main task's own scale; 0.5 is the one value
    # measured (README, "Text reading: extra supervision").
    weight: float = 0.5
    # Auxiliary rows per step; None: the main batch size. It sets the cost: each step runs one
    # more forward and backward over this many text-only rows.
    batch_size: int | None = None
    # Training rows per set at most (a fixed random draw); None: all. With a frozen backbone
    # every row is encoded once, and all-mpnet-base-v2 reads about 7.5 MOSI texts/s per CPU
    # thread: MELD's 9,989 train utterances alone would cost some 20 CPU minutes.
    max_train_rows: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.sets) - set(AUX_CLASSES)
        if unknown:
            raise ValueError(f"unknown auxiliary text sets {sorted(unknown)}")
        if self.weight < 0:
            raise ValueError(f"the auxiliary weight must be >= 0, not {self.weight}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"the auxiliary batch size must be >= 1, not {self.batch_size}")
        if self.max_train_rows is not None and self.max_train_rows < 1:
            raise ValueError(f"max_train_rows must be >= 1, not {self.max_train_rows}")


LR_SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and protocol (paper 3.2, Table 2)."""

    batch_size: int = 32
    lr: float = 6e-5  # everything but the text backbone
    text_lr: float = 2e-5  # the BERT-family backbone, when fine-tuned
    weight_decay: float = 5e-5
    max_epochs: int = 40
    patience: int = 8  # epochs without a better validation loss before stopping
    # "constant", or "linear": every learning rate falls linearly, step by step, to zero at the
    # end of ``max_epochs`` (the BERT fine-tuning schedule), so late epochs move the weights less.
    lr_schedule: str = "constant"
    # Decay of an exponential moving average of the trained weights (mercli/weight_average.py),
    # which validation, the choice of epoch and the checkpoint read; 0: off, the weights as
    # they are at the end of each epoch. 0.99 averages over about the last 100 steps.
    weight_average: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    # Batch utterances of similar lengths (less padding, faster epochs). Off by default: CMD,
    # HSIC, InfoNCE and the kNN negatives then see length-sorted batches, and on MOSI text
    # (benchmarks/batch_order.py, 3 seeds) random batches gave MAE 0.907 against 0.944.
    group_by_length: bool = False
    seeds: tuple[int, ...] = (42, 1, 11, 111, 1111)  # the paper's five seeds
    # A trained checkpoint (packaged name or folder) whose values the model starts from; the
    # modalities it lacks start fresh (mercli.model.graft). None: a random start.
    init: str | None = None
    # Keep every value taken from ``init`` that predictions read: only what it lacked trains,
    # so a sample without the added modalities gets exactly ``init``'s prediction.
    freeze_init: bool = False
    loss_weights: LossWeights = field(default_factory=LossWeights)
    aux_text: AuxTextConfig = field(default_factory=AuxTextConfig)  # none unless asked for

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, not {self.lr_schedule!r}")
        if not 0.0 <= self.weight_average < 1.0:
            raise ValueError(f"weight_average must lie in [0, 1), not {self.weight_average}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = _checked(cls, data)
        if isinstance(data.get("aux_text"), dict):
            aux = _checked(AuxTextConfig, data["aux_text"])
            data["aux_text"] = AuxTextConfig(**{**aux, "sets": tuple(aux.get("sets", ()))})
        if isinstance(data.get("loss_weights"), dict):
            stored = {**LEGACY_LOSS_FIELDS, **_checked(LossWeights, data["loss_weights"])}
            data["loss_weights"] = LossWeights(**stored)
        if "seeds" in data:
            data["seeds"] = tuple(data["seeds"])
        return cls(**data)


@dataclass(frozen=True)
class Preset:
    """A dataset's model and training configuration."""

    model: ModelConfig
    train: TrainConfig


_MOSEI_WEIGHTS = LossWeights(0.05, 0.05, 0.2, 0.1, 0.1)  # paper Table 2, MOSEI and UR-FUNNY

PRESETS: dict[str, Preset] = {
    "mosi": Preset(ModelConfig(), TrainConfig()),
    "mosei": Preset(
        ModelConfig(
            audio=EncoderConfig(d_in=74, n_layers=2, n_heads=2),  # COVAREP 74-d
            vision=EncoderConfig(d_in=35, n_layers=2, n_heads=2),  # FACET 35-d
        ),
        TrainConfig(loss_weights=_MOSEI_WEIGHTS),
    ),
    "urfunny": Preset(
        ModelConfig(
            task="classification",  # humour / not humour on the punchline
            audio=EncoderConfig(d_in=81, n_layers=2, n_heads=2),  # COVAREP 81-d
            vision=EncoderConfig(d_in=371, n_layers=2, n_heads=2),  # OpenFace V2
        ),
        TrainConfig(lr=4.5e-5, text_lr=5e-5, loss_weights=_MOSEI_WEIGHTS),
    ),
}


def from_name(name: str, **model_overrides: Any) -> Preset:
    """The preset called ``name`` with model fields replaced by ``model_overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    preset = PRESETS[name]
    _checked(ModelConfig, model_overrides)
    return replace(preset, model=replace(preset.model, **model_overrides))


ABLATIONS: dict[str, dict[str, Any]] = {
    # Table 6/7 switches as changes to (model, loss weights). Modality subsets go through
    # ModelConfig.modalities directly.
    "full": {},
    "no-iamd": {"model": {"use_iamd": False}},
    "no-mic": {"model": {"use_mic": False}},
    "no-sgaff": {"model": {"use_sgaff": False}},
    # The paper's exact SGAFF (eqs. 21-22 as written): unbounded heads, raw gate input, no loss
    # per branch.
    "paper-gate": {
        "model": {"bound_branches": False, "normalize_gate_input": False},
        "loss": {"branch": 0.0, "gate_decorrelation": 0.0},
    },
    # Table 8: one branch alone, no gate.
    "shared-only": {"model": {"fusion_branches": "shared"}},
    "specific-only": {"model": {"fusion_branches": "specific"}},
    "no-ls": {"loss": {"similarity": 0.0}},
    "no-lh": {"loss": {"independence": 0.0}},
    "no-lre": {"loss": {"reconstruction": 0.0}},
    "no-lin": {"loss": {"invertibility": 0.0}},
    "no-lmi": {"loss": {"mutual_information": 0.0}},
}


def apply_ablation(preset: Preset, ablation: str) -> Preset:
    """The preset with one named ablation of paper Tables 6-7 switched on."""
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; available: {', '.join(ABLATIONS)}")
    change = ABLATIONS[ablation]
    model = replace(preset.model, **change.get("model", {}))
    weights = replace(preset.train.loss_weights, **change.get("loss", {}))
    return Preset(model, replace(preset.train, loss_weights=weights))


def _checked(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` after refusing keys that ``cls`` does not have."""
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {', '.join(sorted(unknown))}")
    return dict(data)
