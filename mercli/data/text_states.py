"""Frozen-backbone text states, computed once per text and cached on disk.

With a frozen text backbone, running it in every epoch of every seed repeats the same work. The
states of each text are computed once, stored in the user's cache keyed by the backbone and the
texts, and the samples then carry ``(T_i, H)`` float states instead of raw text.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mercli.atomic import write_atomically
from mercli.data import SplitDatasets
from mercli.data.samples import Collator, ListDataset
from mercli.model.text_backbone import tokenize
from mercli.schema import MAX_TEXT_TOKENS

_log = logging.getLogger(__name__)


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(root) / "mer" / "text_states"


def _key(backbone_name: str, texts: list[str], max_tokens: int) -> str:
    digest = hashlib.sha256(f"{backbone_name}\0{max_tokens}\0".encode())
    for t in texts:
        digest.update(t.encode() + b"\0")
    return digest.hexdigest()[:24]


@torch.no_grad()
def encode_texts(
    texts: list[str],
    backbone: Any,
    tokenizer: Any,
    max_tokens: int = MAX_TEXT_TOKENS,
    batch_size: int = 64,
    device: str = "cpu",
) -> list[np.ndarray]:
    """The backbone's last hidden states of each text, one (T_i, H) float32 array per text."""
    backbone = backbone.to(device).eval()
    states: list[np.ndarray] = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together
    by_index: dict[int, np.ndarray] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = tokenize([texts[i] for i in chunk], tokenizer, max_tokens)
        hidden = backbone(
            input_ids=ids.to(device), attention_mask=mask.long().to(device)
        ).last_hidden_state
        for row, i in enumerate(chunk):
            by_index[i] = hidden[row, : int(mask[row].sum())].float().cpu().numpy()
    states = [by_index[i] for i in range(len(texts))]
    return states


def cached_states(
    texts: list[str],
    backbone_name: str,
    max_tokens: int = MAX_TEXT_TOKENS,
    device: str = "cpu",
    log: Any = None,
) -> list[np.ndarray]:
    """``encode_texts`` through an on-disk cache (``~/.cache/mer/text_states``), as float16
    (the collator widens them to float32)."""
    from mercli.model.text_backbone import load_backbone, load_tokenizer

    path = cache_dir() / f"{_key(backbone_name, texts, max_tokens)}.npz"
    cached = _read_states(path, len(texts))
    if cached is not None:
        return cached
    if log:
        log(f"encoding {len(texts)} texts with {backbone_name} (once; cached in {path.parent})")
    states = encode_texts(
        texts,
        load_backbone(backbone_name),
        load_tokenizer(backbone_name),
        max_tokens,
        device=device,
    )
    # float16 halves memory and disk (MOSI + MOSEI train through a 768-d backbone: 0.7 GB, not
    # 1.4 GB); its relative error (< 1e-3) is far below what the model's first layer resolves
    states = [s.astype(np.float16) for s in states]
    offsets = np.cumsum([0] + [len(s) for s in states])
    flat = np.concatenate(states)
    try:
        write_atomically(path, lambda f: np.savez(f, states=flat, offsets=offsets))
    except OSError as error:  # read-only or full: the states are used all the same
        _log.warning(
            "cannot write the text-state cache in %s (%s); states are not cached",
            path.parent,
            error.strerror or type(error).__name__,
        )
    return states


def _read_states(path: Path, n_texts: int) -> list[np.ndarray] | None:
    """The cached states of ``n_texts`` texts, or None when absent or damaged (then removed,
    with a warning: they are computed again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            flat, offsets = np.asarray(stored["states"]), np.asarray(stored["offsets"])
        if (
            flat.ndim != 2
            or offsets.shape != (n_texts + 1,)
            or offsets[0] != 0
            or offsets[-1] != len(flat)
            or np.any(np.diff(offsets) < 0)
        ):
            raise ValueError(f"states {flat.shape} and offsets {offsets.shape} do not fit")
    except Exception as error:
        with contextlib.suppress(OSError):
            path.unlink()
        _log.warning(
            "text-state cache entry %s is damaged (%s); computing the states again",
            path,
            type(error).__name__,
        )
        return None
    return [flat[offsets[i] : offsets[i + 1]] for i in range(n_texts)]


def with_text_states(
    data: SplitDatasets,
    backbone_name: str,
    max_tokens: int = MAX_TEXT_TOKENS,
    device: str = "cpu",
    log: Any = None,
) -> SplitDatasets:
    """The same splits whose samples carry frozen-backbone states under ``features["text"]``."""
    splits = {}
    width = 0
    for name in ("train", "valid", "test"):
        samples = [data.split(name)[i] for i in range(len(data.split(name)))]
        states = cached_states(
            [s.text or "" for s in samples], backbone_name, max_tokens, device, log
        )
        width = states[0].shape[1] if states else width
        splits[name] = ListDataset(
            [
                replace(
                    s, features={**s.features, "text": torch.from_numpy(np.ascontiguousarray(x))}
                )
                for s, x in zip(samples, states, strict=True)
            ]
        )
    info = replace(data.info, d_in={**data.info.d_in, "text": width})
    return SplitDatasets(
        **splits,
        info=info,
        collate=Collator(task=data.info.task),
        feature_profile=data.feature_profile,
    )
