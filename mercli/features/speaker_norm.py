"""Voice features relative to the speaker: every frame of a speaker standardised by that
speaker's own mean and spread over all their speech (mean and variance normalisation per
speaker, as speech recognisers do per speaker or per channel).

A voice model trained on 16 RAVDESS actors learns their voices as much as their emotions, and a
new voice moves its score before any emotion does: read as they are, the demo's synthetic voice
scores -2.29 on the audio alone. Read relative to the speaker, what is left is how an utterance
departs from that speaker's usual voice (README, "The voice relative to the speaker"; RAVDESS's
held-out actors, each over their own 60 clips, sign accuracy 0.875 and Pearson r 0.784 on the
mean of three seeds against 0.763 and 0.685 read as they are).

A model records it in its feature profile (``AudioProfile.normalise == "speaker"``); then a
speaker is the utterances scored together: a file's (each diarised speaker's with
``--speakers``), a training video's clips, a live session's so far (:class:`RunningStats`). A
speaker with fewer than :data:`MIN_UTTERANCES` utterances has no other speech to be read
against: a single RAVDESS clip read against itself gives sign accuracy 0.43-0.64 and r <= 0.18,
two clips together 0.72-0.77 and r 0.50-0.56 (three seeds), so with one utterance the model does
not read the voice at all and says so.

Pure functions and a running counterpart; the caller says which arrays belong to one speaker.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

EPS = 1e-3  # added to each standard deviation: a feature that never moves is centred, not blown up
MIN_UTTERANCES = 2  # a speaker's utterances with audio before their voice is read (see above)


def speaker_stats(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (plus :data:`EPS`) of each feature over every frame of
    ``arrays`` (one speaker's utterances, each ``(n_frames, d)``; empty ones are skipped).

    Raises:
        ValueError: no frame at all.
    """
    frames = [a for a in arrays if len(a)]
    if not frames:
        raise ValueError("no frames to take a speaker's statistics from")
    stacked = np.concatenate(frames).astype(np.float64)
    return stacked.mean(axis=0), stacked.std(axis=0) + EPS


def normalise(arrays: Sequence[np.ndarray], groups: Sequence[Hashable]) -> list[np.ndarray]:
    """``arrays`` (``(n_frames, d)`` each) with each one's frames standardised by the
    statistics of its group (``groups[i]``: the speaker of ``arrays[i]``); float32, same
    shapes, empty arrays as they are."""
    if len(arrays) != len(groups):
        raise ValueError(f"{len(arrays)} arrays but {len(groups)} groups")
    members: dict[Hashable, list[np.ndarray]] = {}
    for a, g in zip(arrays, groups, strict=True):
        if len(a):
            members.setdefault(g, []).append(a)
    stats = {g: speaker_stats(frames) for g, frames in members.items()}
    out = []
    for a, g in zip(arrays, groups, strict=True):
        if not len(a):
            out.append(a)
            continue
        mean, std = stats[g]
        out.append(((a - mean) / std).astype(np.float32))
    return out


def relative(
    arrays: Sequence[np.ndarray],
    groups: Sequence[Hashable],
    min_utterances: int = MIN_UTTERANCES,
) -> list[np.ndarray]:
    """:func:`normalise`, with the arrays of a group that has fewer than ``min_utterances``
    non-empty arrays left empty (``(0, d)``: the model then does not read them)."""
    if len(arrays) != len(groups):
        raise ValueError(f"{len(arrays)} arrays but {len(groups)} groups")
    counts: dict[Hashable, int] = {}
    for a, g in zip(arrays, groups, strict=True):
        counts[g] = counts.get(g, 0) + bool(len(a))
    out = normalise(arrays, groups)
    return [o if counts[g] >= min_utterances else o[:0] for o, g in zip(out, groups, strict=True)]


class RunningStats:
    """One speaker's statistics over the utterances seen so far (a live session's): what
    :func:`relative` does over a whole file, in constant memory. Early utterances are read
    against less speech than a file's, so their scores differ from the file's."""

    def __init__(self, min_utterances: int = MIN_UTTERANCES) -> None:
        self.min_utterances = min_utterances
        self.n_utterances = 0
        self.n_frames = 0
        self._sum: np.ndarray | None = None  # (d,) float64
        self._squares: np.ndarray | None = None

    def add(self, array: np.ndarray) -> None:
        """Count an utterance's ``(n_frames, d)`` frames (an empty one counts for nothing)."""
        if not len(array):
            return
        frames = array.astype(np.float64)
        if self._sum is None or self._squares is None:
            self._sum, self._squares = np.zeros(frames.shape[1]), np.zeros(frames.shape[1])
        self._sum += frames.sum(axis=0)
        self._squares += (frames**2).sum(axis=0)
        self.n_frames += len(frames)
        self.n_utterances += 1

    def relative(self, array: np.ndarray) -> np.ndarray:
        """``array`` standardised by the statistics so far; empty until ``min_utterances``
        utterances with frames were added."""
        if self.n_utterances < self.min_utterances or self._sum is None or self._squares is None:
            return array[:0]
        mean = self._sum / self.n_frames
        std = np.sqrt(np.maximum(self._squares / self.n_frames - mean**2, 0.0)) + EPS
        return ((array - mean) / std).astype(np.float32)
