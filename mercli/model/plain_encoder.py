"""BERT and MPNet encoders and their tokenizers without transformers, for frozen-backbone states.

Importing transformers' model code costs about 3.4 s of CPU on a 2-core laptop, most of a cold
``mer analyze`` beyond Whisper and faces. A frozen backbone only runs forward, which is a few
lines of torch: this module reads a backbone folder (``config.json``, ``model.safetensors``,
``tokenizer.json``) of the two families mer ships (``bert``: MiniLM; ``mpnet``: all-mpnet-base-v2)
and computes the same last hidden states as transformers' ``BertModel`` / ``MPNetModel`` in eval
mode (to float rounding, tests/test_plain_encoder.py), with the same token ids from the
``tokenizers`` library that transformers' fast tokenizers wrap. Any other folder is left to
transformers (:func:`load_plain_encoder` returns None).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

FAMILIES = ("bert", "mpnet")


class PlainTokenizer:
    """A ``tokenizer.json`` called as transformers' fast tokenizers are by
    :func:`mercli.model.text_backbone.tokenize` (right padding to the longest, truncation)."""

    def __init__(self, tokenizer: Any, pad_id: int) -> None:
        self.tokenizer = tokenizer
        self.pad_id = pad_id

    def __call__(
        self,
        texts: list[str],
        padding: str = "longest",
        truncation: bool = True,
        max_length: int = 512,
        return_tensors: str = "pt",
    ) -> dict[str, torch.Tensor]:
        self.tokenizer.no_padding()
        if truncation:
            self.tokenizer.enable_truncation(max_length=max_length)
        else:
            self.tokenizer.no_truncation()
        encoded = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        steps = max([len(ids) for ids in encoded] + [1])
        input_ids = torch.full((len(encoded), steps), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), steps), dtype=torch.long)
        for i, ids in enumerate(encoded):
            input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


class _Layer(nn.Module):
    def __init__(self, width: int, heads: int, inner: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.attention_norm = nn.LayerNorm(width, eps=eps)
        self.inner = nn.Linear(width, inner)
        self.outer = nn.Linear(inner, width)
        self.output_norm = nn.LayerNorm(width, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x ``(B, T, D)``; bias ``(B or 1, H or 1, T, T)`` added to the attention scores."""
        batch, steps, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, steps, self.heads, -1).transpose(1, 2)  # (B, H, T, d)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
        context = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, steps, width)
        x = self.attention_norm(self.o(context) + x)
        return self.output_norm(self.outer(F.gelu(self.inner(x))) + x)


class PlainEncoder(nn.Module):
    """A BERT or MPNet encoder's forward pass in eval mode: ``last_hidden_state`` only."""

    def __init__(self, config: dict[str, Any], n_layers: int | None = None) -> None:
        """Args:
        config: the backbone's ``config.json``.
        n_layers: run only the first ``n_layers`` layers (the frozen lower part of a backbone
            whose top layers are tuned, :class:`TopLayers`); None: all of them.
        """
        super().__init__()
        self.family = config["model_type"]
        width, eps = config["hidden_size"], config["layer_norm_eps"]
        self.width = width
        self.pad_id = config.get("pad_token_id", 1 if self.family == "mpnet" else 0)
        self.word = nn.Embedding(config["vocab_size"], width)
        self.position = nn.Embedding(config["max_position_embeddings"], width)
        self.token_type = (
            nn.Embedding(config.get("type_vocab_size", 2), width) if self.family == "bert" else None
        )
        self.embedding_norm = nn.LayerNorm(width, eps=eps)
        n_layers = config["num_hidden_layers"] if n_layers is None else n_layers
        self.layers = _layers(config, n_layers)
        self.buckets = config.get("relative_attention_num_buckets", 32)
        self.relative_bias = _relative_bias(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        steps = input_ids.shape[1]
        if self.family == "mpnet":  # positions count non-pad tokens, from pad_id + 1 (fairseq)
            real = input_ids.ne(self.pad_id).long()
            positions = torch.cumsum(real, dim=1) * real + self.pad_id
            x = self.word(input_ids) + self.position(positions)
        else:
            positions = torch.arange(steps, device=input_ids.device).unsqueeze(0)
            assert self.token_type is not None
            x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
        x = self.embedding_norm(x)
        x = _run_layers(self.layers, x, attention_mask, self.relative_bias, self.buckets)
        return SimpleNamespace(last_hidden_state=x)


class TopLayers(nn.Module):
    """The top ``n_layers`` layers of a BERT / MPNet encoder as trainable modules.

    They read the states the frozen lower part (:class:`PlainEncoder` with ``n_layers`` =
    depth - ``n_layers``) leaves, so those states can be computed once per text and cached,
    while these layers are trained. MPNet's relative position bias, shared by all its layers,
    is copied here too: the top layers add it to their attention scores as the lower ones do.
    """

    def __init__(self, config: dict[str, Any], n_layers: int) -> None:
        super().__init__()
        depth = config["num_hidden_layers"]
        if not 1 <= n_layers <= depth:
            raise ValueError(f"can tune 1 to {depth} top layers of this backbone, not {n_layers}")
        self.first = depth - n_layers  # index of the first tuned layer in the whole backbone
        self.width = config["hidden_size"]
        self.layers = _layers(config, n_layers)
        self.buckets = config.get("relative_attention_num_buckets", 32)
        self.relative_bias = _relative_bias(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The lower part's states x ``(B, T, D)`` and token mask ``(B, T)`` -> ``(B, T, D)``."""
        return _run_layers(self.layers, x, mask, self.relative_bias, self.buckets)


def _layers(config: dict[str, Any], n_layers: int) -> nn.ModuleList:
    width, eps = config["hidden_size"], config["layer_norm_eps"]
    return nn.ModuleList(
        _Layer(width, config["num_attention_heads"], config["intermediate_size"], eps)
        for _ in range(n_layers)
    )


def _relative_bias(config: dict[str, Any]) -> nn.Embedding | None:
    if config["model_type"] != "mpnet":
        return None
    buckets = config.get("relative_attention_num_buckets", 32)
    return nn.Embedding(buckets, config["num_attention_heads"])


def _run_layers(
    layers: nn.ModuleList,
    x: torch.Tensor,
    attention_mask: torch.Tensor,
    relative_bias: nn.Embedding | None,
    buckets: int,
) -> torch.Tensor:
    """x ``(B, T, D)`` through ``layers``, attending to the tokens ``attention_mask`` keeps."""
    dtype, steps = x.dtype, x.shape[1]
    bias = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
    if relative_bias is not None:
        bias = bias + _position_bias(relative_bias, buckets, steps, x.device)
    for layer in layers:
        x = layer(x, bias)
    return x


def _position_bias(
    relative_bias: nn.Embedding, buckets: int, steps: int, device: torch.device
) -> torch.Tensor:
    """MPNet's relative position bias ``(1, H, T, T)`` (T5-style log buckets)."""
    position = torch.arange(steps, dtype=torch.long, device=device)
    n = -(position[None, :] - position[:, None])  # (T, T): query minus key
    half = buckets // 2
    bucket = (n < 0).long() * half
    n = n.abs()
    exact = half // 2
    large = exact + (torch.log(n.float() / exact) / math.log(128 / exact) * (half - exact)).to(
        torch.long
    )
    large = torch.clamp(large, max=half - 1)
    bucket = bucket + torch.where(n < exact, n, large)
    return relative_bias(bucket).permute(2, 0, 1).unsqueeze(0)


def _state_dict(config: dict[str, Any], stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' weight names -> :class:`PlainEncoder`'s (KeyError when one is missing)."""
    family = config["model_type"]
    prefix = f"{family}." if f"{family}.embeddings.word_embeddings.weight" in stored else ""

    def get(name: str) -> torch.Tensor:
        return stored[prefix + name]

    state = {
        "word.weight": get("embeddings.word_embeddings.weight"),
        "position.weight": get("embeddings.position_embeddings.weight"),
        "embedding_norm.weight": get("embeddings.LayerNorm.weight"),
        "embedding_norm.bias": get("embeddings.LayerNorm.bias"),
    }
    if family == "bert":
        state["token_type.weight"] = get("embeddings.token_type_embeddings.weight")
        names = {
            "q": "attention.self.query",
            "k": "attention.self.key",
            "v": "attention.self.value",
            "o": "attention.output.dense",
            "attention_norm": "attention.output.LayerNorm",
        }
    else:
        state["relative_bias.weight"] = get("encoder.relative_attention_bias.weight")
        names = {
            "q": "attention.attn.q",
            "k": "attention.attn.k",
            "v": "attention.attn.v",
            "o": "attention.attn.o",
            "attention_norm": "attention.LayerNorm",
        }
    names |= {
        "inner": "intermediate.dense",
        "outer": "output.dense",
        "output_norm": "output.LayerNorm",
    }
    for i in range(config["num_hidden_layers"]):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                state[f"layers.{i}.{ours}.{kind}"] = get(f"encoder.layer.{i}.{theirs}.{kind}")
    return state


def _pad_token(folder: Path) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        try:
            token = json.loads((folder / name).read_text()).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            return token
    return None


def read_config(folder: str | Path) -> dict[str, Any] | None:
    """A backbone folder's ``config.json`` when it is a BERT / MPNet one this module can run
    (its weights and tokenizer present), else None."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(config, dict)
        or config.get("model_type") not in FAMILIES
        or config.get("hidden_act") != "gelu"
        or config.get("position_embedding_type", "absolute") != "absolute"
        or not (folder / "model.safetensors").is_file()
        or not (folder / "tokenizer.json").is_file()
    ):
        return None
    return config


def load_plain_encoder(
    folder: str | Path, n_layers: int | None = None
) -> tuple[PlainEncoder, PlainTokenizer] | None:
    """The encoder (eval mode, CPU) and tokenizer of a backbone folder, or None when the folder
    is not a BERT / MPNet one this module reads (then transformers loads it).

    Args:
        n_layers: the encoder runs only its first ``n_layers`` layers (None: all).
    """
    loaded = _load(folder, n_layers, n_top=0)
    return None if loaded is None else (loaded[0], loaded[1])


def load_split_encoder(
    folder: str | Path, n_top: int
) -> tuple[PlainEncoder, PlainTokenizer, TopLayers] | None:
    """A backbone folder as its frozen lower part (eval mode), its tokenizer and its top
    ``n_top`` layers (:class:`TopLayers`, initialised from the same weights, to be trained);
    None when the folder is not a BERT / MPNet one this module reads.

    Raises:
        ValueError: ``n_top`` is not between 1 and the backbone's depth.
    """
    loaded = _load(folder, None, n_top)
    if loaded is None:
        return None
    encoder, tokenizer, top = loaded
    assert top is not None
    return encoder, tokenizer, top


def _load(
    folder: str | Path, n_layers: int | None, n_top: int
) -> tuple[PlainEncoder, PlainTokenizer, TopLayers | None] | None:
    folder = Path(folder)
    config = read_config(folder)
    pad = _pad_token(folder)
    if config is None or pad is None:
        return None
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad_id = tokenizer.token_to_id(pad)
    if pad_id is None:
        return None
    depth = config["num_hidden_layers"]
    top = TopLayers(config, n_top) if n_top else None
    lower = depth - n_top if top is not None else n_layers
    encoder = PlainEncoder(config, lower)
    try:
        state = _state_dict(config, load_file(str(folder / "model.safetensors")))
        encoder.load_state_dict(_lower_state(state, encoder))
        if top is not None:
            top.load_state_dict(_top_state(state, top))
    except (KeyError, RuntimeError):  # other names or shapes: not a layout read here
        return None
    encoder.requires_grad_(False)
    return encoder.eval(), PlainTokenizer(tokenizer, pad_id), top


def _lower_state(state: dict[str, torch.Tensor], encoder: PlainEncoder) -> dict[str, torch.Tensor]:
    """The weights of ``state`` that the first ``len(encoder.layers)`` layers use."""
    n = len(encoder.layers)
    return {
        k: v for k, v in state.items() if not k.startswith("layers.") or int(k.split(".")[1]) < n
    }


def _top_state(state: dict[str, torch.Tensor], top: TopLayers) -> dict[str, torch.Tensor]:
    """The weights of ``top``'s layers (renumbered from 0) and of the relative position bias,
    copied so that training them leaves the lower part's untouched."""
    out = {}
    for key, value in state.items():
        if key.startswith("layers.") and int(key.split(".")[1]) >= top.first:
            _, index, rest = key.split(".", 2)
            out[f"layers.{int(index) - top.first}.{rest}"] = value.clone()
        elif key.startswith("relative_bias."):
            out[key] = value.clone()
    return out
