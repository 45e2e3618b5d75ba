"""Small files with the exact layout of the benchmark data, for tests and smoke runs.

:func:`write_mmsa_pickle` writes an MMSA pickle shaped like CMU-MOSI or CMU-MOSEI (MMSA's
``unaligned_50.pkl`` layout, :mod:`mercli.data.mmsa`) and :func:`write_urfunny_pickles` a folder
of UR-FUNNY pickles. Steps past each recorded length hold garbage (large values and ``-inf``),
as real padding may, so masking is exercised.
With ``signal=True`` the label is learnable from all three modalities: a direction in the text
states, one audio channel and one vision channel, averaged over valid steps.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

SIGNAL_CHANNEL = 0  # the audio / vision channel that carries the label signal
INF_CHANNEL = -1  # a channel with some -inf inside the valid steps (real COVAREP has them)


@dataclass(frozen=True)
class MmsaLayout:
    """Sequence lengths and feature widths of one MMSA pickle."""

    t_text: int = 50  # BERT tokens, MMSA pads/truncates to 50
    d_text: int = 768  # bert-base hidden width
    t_audio: int = 375
    d_audio: int = 5
    t_vision: int = 500
    d_vision: int = 20


MMSA_LAYOUTS: dict[str, MmsaLayout] = {
    "mosi": MmsaLayout(),  # COVAREP 5-d, FACET 20-d (MMSA unaligned_50)
    "mosei": MmsaLayout(t_audio=500, d_audio=74, t_vision=500, d_vision=35),
}
SMALL_LAYOUT = MmsaLayout(t_text=12, d_text=16, t_audio=20, d_audio=5, t_vision=24, d_vision=6)


def write_mmsa_pickle(
    path: str | Path,
    kind: Literal["mosi", "mosei"] = "mosi",
    n_train: int = 32,
    n_valid: int = 8,
    n_test: int = 8,
    *,
    aligned: bool = False,
    seed: int = 0,
    signal: bool = True,
    layout: MmsaLayout | None = None,
) -> Path:
    """Write an MMSA pickle shaped like ``kind``.

    Args:
        path: where to write.
        kind: ``mosi`` (audio 5-d x 375, vision 20-d x 500) or ``mosei`` (74-d / 35-d x 500).
        n_train, n_valid, n_test: samples per split.
        aligned: an ``aligned_50`` file (all modalities 50 steps, no ``*_lengths`` keys).
        seed: random seed; the same arguments give the same file.
        signal: make the label a function of the features (else labels are independent noise).
        layout: other lengths and widths (e.g. :data:`SMALL_LAYOUT` for fast tests).

    Returns:
        ``path``.
    """
    layout = layout or MMSA_LAYOUTS[kind]
    if aligned:
        layout = MmsaLayout(
            layout.t_text,
            layout.d_text,
            layout.t_text,
            layout.d_audio,
            layout.t_text,
            layout.d_vision,
        )
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(layout.d_text).astype(np.float32)
    direction /= np.linalg.norm(direction)
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    data = {
        split: _mmsa_split(rng, split, n, layout, direction, aligned=aligned, signal=signal)
        for split, n in sizes.items()
    }
    path = Path(path)
    with path.open("wb") as f:
        pickle.dump(data, f, protocol=4)
    return path


def _mmsa_split(
    rng: np.random.Generator,
    split: str,
    n: int,
    layout: MmsaLayout,
    direction: np.ndarray,
    *,
    aligned: bool,
    signal: bool,
) -> dict[str, np.ndarray]:
    latent = rng.standard_normal((n, 3)).astype(np.float32)  # text, audio, vision factors
    if signal:
        labels = np.clip(1.2 * latent[:, 0] + 0.8 * latent[:, 1] + 0.8 * latent[:, 2], -3, 3)
    else:
        labels = rng.uniform(-3, 3, n)
    labels = np.round(labels.astype(np.float32) * 5) / 5  # MOSI scores are averages of 5 ratings

    t_len = rng.integers(4, layout.t_text + 1, n)  # includes [CLS] and [SEP]
    if aligned:
        a_len = v_len = t_len
    else:
        a_len = rng.integers(max(1, layout.t_audio // 5), layout.t_audio + 1, n)
        v_len = rng.integers(max(1, layout.t_vision // 5), layout.t_vision + 1, n)

    text = 0.5 * rng.standard_normal((n, layout.t_text, layout.d_text)).astype(np.float32)
    text += latent[:, None, 0:1] * direction  # the text factor along one direction
    audio = _sequence(rng, n, layout.t_audio, layout.d_audio, latent[:, 1], a_len)
    vision = _sequence(rng, n, layout.t_vision, layout.d_vision, latent[:, 2], v_len)
    _garble(rng, text, t_len)

    text_bert = np.zeros((n, 3, layout.t_text), dtype=np.float32)
    words = []
    for i, length in enumerate(t_len):
        ids = rng.integers(1000, 30000, length)
        ids[0], ids[-1] = 101, 102  # [CLS] ... [SEP]
        text_bert[i, 0, :length] = ids
        text_bert[i, 1, :length] = 1
        words.append(" ".join(f"w{k}" for k in ids[1:-1]))

    split_data: dict[str, np.ndarray] = {
        "raw_text": np.array(words, dtype=object),
        "audio": audio,
        "vision": vision,
        "id": np.array([f"{split}{i // 4:03d}$_${i % 4 + 1}" for i in range(n)], dtype=object),
        "text": text,
        "text_bert": text_bert,
        "annotations": np.array([_polarity(y) for y in labels], dtype=object),
        "classification_labels": np.sign(labels).astype(np.float32) + 1,  # 0 neg, 1 neu, 2 pos
        "regression_labels": labels,
    }
    if not aligned:
        split_data["audio_lengths"] = a_len.astype(np.int64)
        split_data["vision_lengths"] = v_len.astype(np.int64)
    return split_data


def _sequence(
    rng: np.random.Generator,
    n: int,
    n_steps: int,
    d: int,
    factor: np.ndarray,
    lengths: np.ndarray,
) -> np.ndarray:
    """Features ``(n, n_steps, d)`` whose signal channel averages to ``factor`` over valid steps."""
    x = rng.standard_normal((n, n_steps, d)).astype(np.float32)
    x[:, :, SIGNAL_CHANNEL] = factor[:, None] + 0.3 * x[:, :, SIGNAL_CHANNEL]
    if d > 1:  # some -inf inside the valid steps, away from the signal channel
        holes = rng.random((n, n_steps)) < 0.05
        x[:, :, INF_CHANNEL][holes] = -np.inf
    _garble(rng, x, lengths)
    return x


def _garble(rng: np.random.Generator, x: np.ndarray, lengths: np.ndarray) -> None:
    """Fill the steps past each length with large values and some -inf, in place."""
    for i, length in enumerate(lengths):
        tail = x[i, length:]
        tail[...] = 1e4 * rng.standard_normal(tail.shape)
        tail[rng.random(tail.shape) < 0.1] = -np.inf


def _polarity(score: float) -> str:
    return "Positive" if score > 0 else "Negative" if score < 0 else "Neutral"


def write_urfunny_pickles(
    directory: str | Path,
    n_train: int = 16,
    n_valid: int = 4,
    n_test: int = 4,
    *,
    version: Literal[1, 2] = 2,
    seed: int = 0,
    signal: bool = True,
    with_embeddings: bool = True,
    d_audio: int = 81,
    d_vision: int | None = None,
    d_word: int = 300,
    n_vocab: int = 40,
) -> Path:
    """Write UR-FUNNY's pickles (``data_folds``, language, COVAREP, OpenFace, labels) to a folder.

    Args:
        directory: created if absent.
        n_train, n_valid, n_test: segments per fold (``train``, ``dev``, ``test``).
        version: 2 writes ``language_sdk.pkl`` with sentences; 1 ``word_embedding_indexes_sdk.pkl``.
        seed: random seed.
        signal: humorous punchlines have a raised audio and vision signal channel.
        with_embeddings: also write ``word_embedding_list.pkl`` (GloVe-like, ``d_word`` wide).
        d_audio: COVAREP width (81).
        d_vision: OpenFace width; default 371 for V2 and 75 for V1.
        d_word: word-vector width (GloVe 300).
        n_vocab: words in the vocabulary.

    Returns:
        ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    d_vision = d_vision or (371 if version == 2 else 75)
    rng = np.random.default_rng(seed)
    n_total = n_train + n_valid + n_test
    ids = list(range(100, 100 + n_total))
    folds = {
        "train": ids[:n_train],
        "dev": ids[n_train : n_train + n_valid],
        "test": ids[n_train + n_valid :],
    }
    labels = {i: int(rng.integers(0, 2)) for i in ids}
    language, covarep, openface = {}, {}, {}
    for i in ids:
        n_words = [int(rng.integers(2, 9)) for _ in range(int(rng.integers(0, 4)) + 1)]
        lift = 1.0 if signal and labels[i] else 0.0
        indexes = [rng.integers(0, n_vocab, k).tolist() for k in n_words]
        audio = [_word_features(rng, k, d_audio, lift) for k in n_words]
        vision = [_word_features(rng, k, d_vision, lift) for k in n_words]
        language[i] = {
            "punchline_embedding_indexes": indexes[-1],
            "context_embedding_indexes": indexes[:-1],
        }
        if version == 2:
            sentences = [" ".join(f"word{w}" for w in s) for s in indexes]
            language[i] |= {
                "punchline_sentence": sentences[-1],
                "context_sentences": sentences[:-1],
                "punchline_intervals": _intervals(n_words[-1]),
                "context_intervals": [_intervals(k) for k in n_words[:-1]],
            }
        covarep[i] = {"punchline_features": audio[-1], "context_features": audio[:-1]}
        openface[i] = {"punchline_features": vision[-1], "context_features": vision[:-1]}
    language_file = "language_sdk.pkl" if version == 2 else "word_embedding_indexes_sdk.pkl"
    files = {
        "data_folds.pkl": folds,
        language_file: language,
        "covarep_features_sdk.pkl": covarep,
        "openface_features_sdk.pkl": openface,
        "humor_label_sdk.pkl": labels,
    }
    if with_embeddings:
        files["word_embedding_list.pkl"] = rng.standard_normal((n_vocab, d_word)).astype(np.float32)
    for name, content in files.items():
        with (directory / name).open("wb") as f:
            pickle.dump(content, f, protocol=4)
    return directory


def _word_features(rng: np.random.Generator, n_words: int, d: int, lift: float) -> np.ndarray:
    x = rng.standard_normal((n_words, d)).astype(np.float32)
    x[:, SIGNAL_CHANNEL] += lift
    return x


def _intervals(n_words: int) -> np.ndarray:
    starts = 0.3 * np.arange(n_words)
    return np.stack([starts, starts + 0.3], axis=1)
