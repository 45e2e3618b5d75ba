"""A frozen text backbone's states of transcripts, for inference, cached on disk per text.

With a frozen backbone, an utterance's token states depend only on the backbone, the truncation
and the text. ``mer analyze`` reads them from this cache when it holds them, so re-analysing a
file whose features are cached imports no transformers and loads no backbone; on a miss the
backbone and tokenizer load once (started early by :meth:`TextStateCache.prefetch`, in a thread,
while the front end works; BERT and MPNet folders without transformers, see
:mod:`mercli.model.plain_encoder`) and the new states are stored. Stored states are the float32
arrays the model was fed, so a warm run's predictions equal the cold run's that wrote them.

Layout: ``$XDG_CACHE_HOME/mer/text_states/float32-<digest of backbone and truncation>/<key>.npy``
(default ``~/.cache/mer/...``), one file per text keyed as the training cache keys it
(:func:`mercli.data.text_states.text_key`), written atomically; a damaged file is removed and
its states computed again; a cache that cannot be written is a warning.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)


def cache_folder(backbone_name: str, max_tokens: int, layers: int | None = None) -> Path:
    """The folder of one backbone's float32 states at one truncation (and layer: see
    :func:`mercli.data.text_states.text_key`), beside the training cache's shards
    (:func:`mercli.data.text_states.cache_dir`)."""
    from mercli.data.text_states import cache_dir, states_source

    source = states_source(backbone_name, max_tokens, layers)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return cache_dir() / f"float32-{digest}"


class TextStateCache:
    """The last hidden states of a frozen backbone per text, from disk or computed.

    Args:
        backbone_name: the backbone (``ModelConfig.text_backbone``).
        max_tokens: tokenizer truncation (as in training).
        device: where the backbone runs when states must be computed.
        layers: the states after the backbone's first ``layers`` layers, for a model that
            tunes the top ones (``ModelConfig.tune_top_layers``); None: the last hidden state.
    """

    def __init__(
        self, backbone_name: str, max_tokens: int, device: str = "cpu", layers: int | None = None
    ) -> None:
        self.backbone_name = backbone_name
        self.max_tokens = max_tokens
        self.device = device
        self.layers = layers
        self._lock = threading.Lock()
        self._encoder: Future[tuple[Any, Any]] | None = None

    @property
    def folder(self) -> Path:
        return cache_folder(self.backbone_name, self.max_tokens, self.layers)

    def _load_encoder(self) -> tuple[Any, Any]:
        """(backbone, tokenizer): a BERT or MPNet folder read without transformers (the same
        states, without importing its model code), else through transformers."""
        from mercli.model.plain_encoder import load_plain_encoder
        from mercli.model.text_backbone import load_backbone, load_tokenizer, resolve_backbone

        plain = load_plain_encoder(resolve_backbone(self.backbone_name), self.layers)
        if plain is not None:
            return plain[0].to(self.device), plain[1]
        if self.layers is not None:
            raise ValueError(
                f"{self.backbone_name}: not a BERT / MPNet folder whose layers mer can split"
            )
        backbone = load_backbone(self.backbone_name).to(self.device).eval()
        return backbone, load_tokenizer(self.backbone_name)

    def prefetch(self) -> None:
        """Start loading the backbone and tokenizer in a thread, unless that has begun."""
        with self._lock:
            if self._encoder is None:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mer-text")
                self._encoder = pool.submit(self._load_encoder)
                pool.shutdown(wait=False)

    def encoder(self) -> tuple[Any, Any]:
        """(backbone, tokenizer), loaded on first use (waiting for :meth:`prefetch`'s load)."""
        with self._lock:
            if self._encoder is None:
                self._encoder = Future()
                try:
                    self._encoder.set_result(self._load_encoder())
                except BaseException as error:
                    self._encoder.set_exception(error)
        return self._encoder.result()

    def states(self, texts: list[str], use_cache: bool = True) -> list[np.ndarray]:
        """float32 ``(T_i, H)`` states per text; ``use_cache`` False neither reads nor writes."""
        from mercli.data.text_states import encode_texts, text_key

        keys = [text_key(self.backbone_name, self.max_tokens, t, self.layers) for t in texts]
        found = {k: s for k in set(keys) if (s := self._read(k)) is not None} if use_cache else {}
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            backbone, tokenizer = self.encoder()
            fresh = encode_texts(
                list(missing.values()), backbone, tokenizer, self.max_tokens, device=self.device
            )
            for key, states in zip(missing, fresh, strict=True):
                found[key] = states
                if use_cache:
                    self._write(key, states)
        return [found[k] for k in keys]

    def _read(self, key: str) -> np.ndarray | None:
        path = self.folder / f"{key}.npy"
        if not path.is_file():
            return None
        try:
            states = np.load(path, allow_pickle=False)
            if states.dtype != np.float32 or states.ndim != 2:
                raise ValueError(f"{states.dtype} {states.shape}, not float32 (T, H)")
        except Exception as error:
            from mercli.data.text_states import discard_damaged

            discard_damaged(path, error)
            return None
        return states

    def _write(self, key: str, states: np.ndarray) -> None:
        from mercli.atomic import write_atomically

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(self.folder / f"{key}.npy", lambda f: np.save(f, states))
        except OSError as error:
            _log.warning(
                "cannot write the text-state cache in %s (%s); states are not cached",
                self.folder,
                error.strerror or type(error).__name__,
            )
