"""Voice features relative to the speaker: every frame of a speaker standardised by that
speaker's own mean and spread over all their speech (mean and variance normalisation per
speaker, as speech recognisers do per speaker or per channel).

A voice model trained on 16 RAVDESS actors learns their voices as much as their emotions, and a
new voice moves its score before any emotion does: ``voice-preview`` scores the demo's
synthetic voice -2.29 on the audio alone. Read relative to the speaker, what is left is how an
utterance departs from that speaker's usual voice. Tried on ``voice-preview``'s recipe (seeds
42, 1 and 11, ``benchmarks/speaker_norm_trial.py``, README "The voice relative to the
speaker"): RAVDESS's held-out actors, each normalised over their own 60 clips, sign accuracy
0.875 and Pearson r 0.784 on the mean of the seeds (without: 0.763 and 0.685); the demo's
positive sentence +2.05 to +2.63 instead of -0.00 (its audio -2.29), each file normalised over
its own utterances. The model is not shipped: which frames make a speaker at inference (a file,
a diarised speaker, a live session so far) is still to be settled, and a file of one utterance
has no other speech to be relative to.

Pure functions; the caller says which arrays belong to one speaker.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

EPS = 1e-3  # added to each standard deviation: a feature that never moves is centred, not blown up


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
