"""Auxiliary text supervision: SST-2 polarity (binary) and MELD sentiment (3 classes).

Neither set has a sentiment-intensity score, so their rows do not join the regression: each
feeds its own classification head on the text reading (:class:`~mercli.config.AuxTextConfig`),
and the rows carry text only (the model's presence mask scores them from the text).

SST-2's rows are phrases of parsed sentences: a phrase and the longer phrases it is part of
share words and label, so a random row split leaks. :func:`sst2_split` holds out whole
sentences (phrases no other row contains) and drops from training every phrase that is part of
a held-out sentence or holds one (word-level containment). Training keeps the remaining
whole sentences only (about 5,800 of the 67k rows): the most sentence-like rows, and a small
encoding bill. MELD is split by dialogue already; its test split is the held-out part.
"""

from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mercli.config import AUX_CLASSES
from mercli.data import DatasetError
from mercli.data.samples import Sample
from mercli.schema import Batch

MELD_SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class LabelledText:
    """One auxiliary row: a text and its class (SST-2: 0 negative, 1 positive; MELD: 0
    negative, 1 neutral, 2 positive)."""

    text: str
    label: int


@dataclass(frozen=True)
class AuxSplit:
    """An auxiliary set's training rows and its held-out rows (never trained on)."""

    name: str
    train: list[LabelledText]
    held_out: list[LabelledText]
    how_held_out: str


def read_sst2(folder: str | Path) -> dict[str, int]:
    """Every distinct phrase of ``train.tsv`` and ``dev.tsv`` (both from GLUE's train split)
    with its label; a phrase listed twice keeps its last label.

    Raises:
        DatasetError: a file is missing or a row is not ``phrase<TAB>0|1``.
    """
    folder = Path(folder)
    phrases: dict[str, int] = {}
    for name in ("train.tsv", "dev.tsv"):
        path = folder / name
        if not path.is_file():
            raise DatasetError(path, "no such file (SST-2 wants train.tsv and dev.tsv)")
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if line_no == 1:
                    continue  # header
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 2 or parts[1] not in ("0", "1"):
                    raise DatasetError(path, "not `phrase<TAB>0|1`", line=line_no)
                phrase = " ".join(parts[0].split())
                if phrase:
                    phrases[phrase] = int(parts[1])
    return phrases


def _spans(words: list[str]) -> set[str]:
    """Every contiguous word span of ``words`` shorter than the whole, space-joined."""
    n = len(words)
    return {" ".join(words[i:j]) for i in range(n) for j in range(i + 1, n + 1) if j - i < n}


def contained_phrases(phrases: list[str]) -> set[str]:
    """The phrases that are a word-level part of another phrase of ``phrases``."""
    known = set(phrases)
    inner: set[str] = set()
    for p in phrases:
        inner.update(s for s in _spans(p.split()) if s in known)
    return inner


def is_part(inner: str, outer: str) -> bool:
    """Whether ``inner`` is a contiguous word span of ``outer`` (equal counts)."""
    return f" {inner} " in f" {outer} "


def sst2_split(
    phrases: dict[str, int], n_held_out: int = 1000, min_words: int = 8, seed: int = 0
) -> AuxSplit:
    """Whole sentences held out, the other whole sentences trained on (see the module doc).

    Args:
        phrases: phrase -> label (:func:`read_sst2`).
        n_held_out: held-out sentences, drawn at random among the whole sentences of at least
            ``min_words`` words (at most a sixth of them, at least one).
        min_words: the shortest held-out sentence.
        seed: the draw's seed (fixed, so every run holds out the same sentences).
    """
    inner = contained_phrases(list(phrases))
    whole = sorted(p for p in phrases if p not in inner)
    candidates = [p for p in whole if len(p.split()) >= min_words]
    n = min(n_held_out, max(1, len(candidates) // 6)) if candidates else 0  # most still train
    held = set(random.Random(seed).sample(candidates, n))
    # a held-out sentence's parts, and any phrase that holds one, never train
    leaking: set[str] = set()
    for h in held:
        leaking.update(_spans(h.split()))
    train = [
        p
        for p in whole
        if p not in held and p not in leaking and held.isdisjoint(_spans(p.split()))
    ]
    return AuxSplit(
        "sst2",
        train=[LabelledText(p, phrases[p]) for p in train],
        held_out=[LabelledText(p, phrases[p]) for p in sorted(held)],
        how_held_out=(
            f"{len(held)} whole sentences (>= {min_words} words, drawn with seed {seed}); every "
            "phrase that is part of one or holds one is out of training"
        ),
    )


def read_meld(path: str | Path) -> list[LabelledText]:
    """The utterances of a MELD ``*_sent_emo.csv`` with their sentiment.

    Raises:
        DatasetError: the file is missing, lacks the ``Utterance``/``Sentiment`` columns, or a
            row has an unknown sentiment.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "no such file")
    rows: list[LabelledText] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        if not {"Utterance", "Sentiment"} <= set(reader.fieldnames or ()):
            raise DatasetError(path, "needs the columns Utterance and Sentiment")
        for line_no, row in enumerate(reader, start=2):
            sentiment = row["Sentiment"].strip()
            if sentiment not in MELD_SENTIMENTS:
                raise DatasetError(path, f"unknown sentiment {sentiment!r}", line=line_no)
            text = " ".join(row["Utterance"].replace("\u2019", "'").split())
            if text:
                rows.append(LabelledText(text, MELD_SENTIMENTS.index(sentiment)))
    return rows


def meld_split(folder: str | Path) -> AuxSplit:
    """MELD's train split to train on, its test split (other dialogues) held out."""
    folder = Path(folder)
    return AuxSplit(
        "meld",
        train=read_meld(folder / "train_sent_emo.csv"),
        held_out=read_meld(folder / "test_sent_emo.csv"),
        how_held_out="MELD's own test split (dialogues not in its train split)",
    )


def load_aux(name: str, folder: str | Path, max_train: int | None = None) -> AuxSplit:
    """The named auxiliary set (``sst2`` or ``meld``) from its folder.

    Args:
        max_train: keep at most this many training rows, drawn at random with a fixed seed (so
            that every run, and the text-state cache, sees the same ones); None keeps all.
    """
    if name == "sst2":
        split = sst2_split(read_sst2(folder))
        if not split.held_out or not split.train:
            raise DatasetError(
                folder, "too few whole sentences of >= 8 words to hold some out and train"
            )
    elif name == "meld":
        split = meld_split(folder)
    else:
        raise ValueError(f"unknown auxiliary text set {name!r}; known: {', '.join(AUX_CLASSES)}")
    if max_train is not None and len(split.train) > max_train:
        keep = sorted(random.Random(0).sample(range(len(split.train)), max_train))
        split = replace(split, train=[split.train[i] for i in keep])
    return split


# --- rows the training loop reads ------------------------------------------------------------


@dataclass(frozen=True)
class AuxBatch:
    """A batch of auxiliary rows: text only, class labels, and each row's set index."""

    batch: Batch  # labels: (B,) long class ids
    sets: torch.Tensor  # (B,) long, index into AuxTextData.names

    def to(self, device: torch.device | str) -> AuxBatch:
        return AuxBatch(self.batch.to(device), self.sets.to(device))


AuxItem = tuple[Sample, int]  # a row and its set index


@dataclass(frozen=True)
class AuxCollator:
    """``list[(Sample, set index)] -> AuxBatch`` through the main data's collator (so text
    reaches the model the same way: cached states, or token ids for a tuned backbone)."""

    collate: Callable[[list[Sample]], Batch]

    def __call__(self, items: Sequence[AuxItem]) -> AuxBatch:
        batch = self.collate([s for s, _ in items])
        labels = torch.tensor([int(s.label) for s, _ in items], dtype=torch.long)
        sets = torch.tensor([i for _, i in items], dtype=torch.long)
        return AuxBatch(replace(batch, labels=labels), sets)


@dataclass(frozen=True)
class AuxTextData:
    """The auxiliary sets of one run: training rows of all sets mixed, held-out rows per set.

    Attributes:
        names: the sets, in the order of their indices (= ``ModelConfig.aux_heads``).
        train: every set's training rows.
        held_out: per set, its held-out rows (never trained on).
        how_held_out: per set, how its held-out part was chosen.
        collate: items -> :class:`AuxBatch`.
    """

    names: tuple[str, ...]
    train: list[AuxItem]
    held_out: dict[str, list[AuxItem]]
    how_held_out: dict[str, str]
    collate: AuxCollator


def aux_text_data(
    splits: Sequence[AuxSplit],
    collate: Callable[[list[Sample]], Batch],
    states_of: Callable[[list[str]], list[np.ndarray]] | None = None,
) -> AuxTextData:
    """The rows of ``splits`` as model input.

    Args:
        collate: the main data's collator.
        states_of: texts -> frozen-backbone states (``features["text"]``), when the run reads
            cached states; None: rows carry raw text for the collator's tokenizer.
    """
    names = tuple(s.name for s in splits)

    def items(rows: list[LabelledText], index: int, tag: str) -> list[AuxItem]:
        states = states_of([r.text for r in rows]) if states_of is not None else None
        out = []
        for k, r in enumerate(rows):
            features = {} if states is None else {"text": torch.from_numpy(states[k])}
            out.append((Sample(features, r.label, f"{tag}/{k}", text=r.text), index))
        return out

    train: list[AuxItem] = []
    for i, split in enumerate(splits):
        train += items(split.train, i, f"{split.name}/train")
    return AuxTextData(
        names=names,
        train=train,
        held_out={s.name: items(s.held_out, i, f"{s.name}/held-out") for i, s in enumerate(splits)},
        how_held_out={s.name: s.how_held_out for s in splits},
        collate=AuxCollator(collate),
    )


def aux_batches(aux: AuxTextData, batch_size: int, seed: int) -> Iterator[AuxBatch]:
    """Endless shuffled batches of the training rows (a new order each pass, from ``seed``)."""
    from torch.utils.data import DataLoader

    if not aux.train:
        raise ValueError("no auxiliary training rows")
    size = min(batch_size, len(aux.train))
    for sweep in itertools.count():
        generator = torch.Generator().manual_seed(seed * 7919 + sweep)
        yield from DataLoader(
            aux.train,  # type: ignore[arg-type]
            size,
            shuffle=True,
            collate_fn=aux.collate,
            generator=generator,
            drop_last=True,
        )


@torch.no_grad()
def held_out_metrics(model: Any, aux: AuxTextData, device: str = "cpu") -> dict[str, float]:
    """Per set, on its held-out rows: ``<set>_acc`` (its ordinal head's class), and
    ``<set>_sign_acc`` (the sign of the score against the label, rows of neutral class left
    out) with ``<set>_n``, the rows counted."""
    from torch.utils.data import DataLoader

    model.eval()
    out: dict[str, float] = {}
    for name, rows in aux.held_out.items():
        if not rows:
            continue
        scores, labels = [], []
        for ab in DataLoader(rows, 128, collate_fn=aux.collate):  # type: ignore[arg-type]
            ab = ab.to(device)
            scores.append(model(ab.batch).prediction.float().cpu())
            labels.append(ab.batch.labels.cpu())
        score, label = torch.cat(scores), torch.cat(labels)
        heads = model.aux_heads
        if heads is not None and name in heads:
            predicted = heads[name].predict(score.to(device)).cpu()
            out[f"{name}_acc"] = float((predicted == label).float().mean())
        n_classes = AUX_CLASSES[name]
        positive, negative = label == n_classes - 1, label == 0
        polar = positive | negative
        right = ((score > 0) & positive) | ((score < 0) & negative)
        out[f"{name}_sign_acc"] = float(right[polar].float().mean()) if bool(polar.any()) else 0.0
        out[f"{name}_n"] = float(len(label))
    return out
