"""Checkpoints by name or path, as ``analyze`` uses them (whisper's ``load_model`` habit).

Named checkpoints ship inside the package under ``mercli/weights/<name>/`` (``weights.safetensors``
+ ``checkpoint.json``, see :mod:`mercli.checkpoint`). ``default`` is the one ``mer analyze`` uses
without ``--checkpoint``: a text-only model trained on CMU-MOSI/MOSEI transcripts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mercli.checkpoint import META_FILE, WEIGHTS_FILE, CheckpointError, CheckpointMeta, read_meta

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL = "default"


class ModelNotFoundError(CheckpointError):
    """Neither a packaged checkpoint of that name nor a checkpoint folder at that path."""


@dataclass
class LoadedModel:
    """A model ready for inference with what is needed to feed it.

    Attributes:
        model: the :class:`~mercli.model.EmotionModel`, eval mode, on ``device``.
        meta: the checkpoint's metadata (feature profile included).
        tokenizer: the text backbone's tokenizer (None when the model has no text).
        source: the name or path it was loaded from.
        device: where it runs.
    """

    model: Any
    meta: CheckpointMeta
    tokenizer: Any
    source: str
    device: str
    max_text_tokens: int = 50  # the truncation used in training (mercli.data.labels_csv)
    extra: dict[str, Any] = field(default_factory=dict)

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


def resolve_checkpoint(name_or_path: str) -> Path:
    """The checkpoint folder for a packaged name or a path.

    Raises:
        ModelNotFoundError: listing the available names, or saying what the default lacks.
    """
    path = Path(os.path.expanduser(name_or_path))
    if path.is_dir() and _is_checkpoint(path):
        return path
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
            f"{META_FILE} (a text-only model trained with `mer train`); until it ships, pass "
            "--checkpoint PATH to a checkpoint folder written by `mer train`"
        )
    names = ", ".join(available_models()) or "none installed"
    raise ModelNotFoundError(
        f"no checkpoint {name_or_path!r}: not a folder, and not a packaged model "
        f"(available: {names})"
    )


def read_model_meta(name_or_path: str) -> tuple[Path, CheckpointMeta]:
    """The checkpoint folder and its metadata, without loading any weights (cheap)."""
    directory = resolve_checkpoint(name_or_path)
    return directory, read_meta(directory)


def load_model(name_or_path: str, device: str = "cpu") -> LoadedModel:
    """Load a checkpoint for inference, with its text tokenizer.

    Args:
        name_or_path: a packaged name (see :func:`available_models`) or a checkpoint folder.
        device: ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        ModelNotFoundError: unknown name or path (the message lists the available names).
        CheckpointError: the checkpoint is malformed, or needs text states mer cannot compute.
    """
    from mercli.checkpoint import load_checkpoint

    directory = resolve_checkpoint(name_or_path)
    model, meta = load_checkpoint(directory, device)
    config = model.config
    tokenizer = None
    if "text" in config.modalities:
        if config.text_backbone is None:
            raise CheckpointError(
                f"{directory}: the model reads precomputed text states (no text_backbone in "
                "its config), which mer cannot compute from a transcript; train it with a text "
                "backbone (`mer train` on a transcript CSV)"
            )
        from mercli.model.text_backbone import load_tokenizer

        tokenizer = load_tokenizer(config.text_backbone)
    return LoadedModel(model, meta, tokenizer, str(name_or_path), device)
