"""Checkpoints: ``weights.safetensors`` + ``checkpoint.json`` in one folder.

The JSON holds the model config (the source of truth for rebuilding the model), the training
config, the feature profile, metrics and versions. Neither file can run code when loaded.
A frozen text backbone is not stored: it is reloaded by name from ``config.text_backbone``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mercli.atomic import write_atomically

WEIGHTS_FILE = "weights.safetensors"
META_FILE = "checkpoint.json"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed, or does not fit the model it describes."""


@dataclass
class CheckpointMeta:
    """What ``checkpoint.json`` holds besides the weights."""

    model_config: dict[str, Any]
    train_config: dict[str, Any] | None = None
    feature_profile: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    import torch

    from mercli import __version__

    return {"mercli": __version__, "torch": torch.__version__, "format": str(FORMAT_VERSION)}


def _stored_state(model: Any) -> dict[str, Any]:
    """The state dict without a frozen backbone's tensors."""
    state = model.state_dict()
    if model.text_backbone is not None and not model.config.finetune_text_backbone:
        state = {k: v for k, v in state.items() if not k.startswith("text_backbone.")}
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def save_checkpoint(model: Any, directory: str | Path, meta: CheckpointMeta | None = None) -> Path:
    """Write ``model`` (an :class:`EmotionModel`) and ``meta`` into ``directory``.

    Each file is written to a temporary name first and then renamed, so a crash leaves the
    previous checkpoint whole.
    """
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = meta or CheckpointMeta(model_config=model.config.to_dict())
    meta.model_config = model.config.to_dict()
    meta.versions = _versions()
    weights = save(_stored_state(model))
    write_atomically(directory / WEIGHTS_FILE, lambda f: f.write(weights))
    text = json.dumps(meta.__dict__, indent=2, sort_keys=True, default=_json_default)
    write_atomically(directory / META_FILE, lambda f: f.write(text.encode()))
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
    return CheckpointMeta(**{k: v for k, v in data.items() if k in known})


def load_checkpoint(directory: str | Path, device: str = "cpu") -> tuple[Any, CheckpointMeta]:
    """Rebuild the model stored in ``directory``; returns (model in eval mode, metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from mercli.config import ModelConfig
    from mercli.model import EmotionModel

    meta = read_meta(directory)
    try:
        config = ModelConfig.from_dict(meta.model_config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{directory}/{META_FILE}: bad model_config ({err})") from err
    weights = Path(directory) / WEIGHTS_FILE
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{weights}: unreadable weights ({err})") from err
    model = EmotionModel(config)
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
