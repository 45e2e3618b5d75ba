"""Who spoke when: voice embeddings -> clusters -> labelled spans, and their utterances.

As in whisperX, the two questions are answered by separate functions, each testable alone:

1. :func:`diarize`: the waveform and its speech regions -> :class:`SpeakerSpan` s ("who spoke
   when"). Sliding windows (``window_s`` long, every ``hop_s``) inside the speech regions are
   embedded by resemblyzer's GE2E voice encoder (:func:`embed_windows`), clustered
   (:func:`cluster_voices`: agglomerative, cosine, with a similarity rule that decides how many
   voices there are) and each instant of speech gets the label of the nearest window centre;
   each change of speaker is then placed with short windows (:func:`refine_changes`).
2. :func:`split_at_turns` then :func:`assign_speakers`: a Whisper utterance that spans a change
   of speaker is cut there, at the nearest word boundary; each utterance gets the speaker whose
   spans overlap it most (whisperX ``assign_word_speakers``).

Speakers are named ``S1``, ``S2``, ... in order of their first speech.

Limits: speech is taken from the transcript (what Whisper did not transcribe has no speaker);
overlapping speech gets one speaker; and GE2E embeddings do not separate every pair of voices
(the two callers of pyannote's telephone-quality sample are as alike to it, cosine 0.90, as one
voice is to itself: ``benchmarks/diarization.py``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mercli.features.asr import Utterance, Word, utterance_from_words

if TYPE_CHECKING:
    import torch

SAMPLE_RATE_HZ = 16000  # the voice encoder's rate (resemblyzer ``hparams.sampling_rate``)
MEL_HOP_S = 0.010  # resemblyzer: 25 ms windows every 10 ms, 40 mel channels
N_MELS = 40
D_EMBEDDING = 256


@dataclass(frozen=True)
class SpeakerConfig:
    """Diarization settings."""

    n_speakers: int | None = None  # None: decide how many (1 when there is a single voice)
    max_speakers: int = 8  # upper bound when deciding
    window_s: float = 1.5  # voice-encoder window (resemblyzer trains on 1.6 s partials)
    # Window step. Changes are placed by the short refinement windows, so 0.5 s loses nothing
    # against 0.25 s (same DER and voice counts on 10 composites) at 57% of the CPU time.
    hop_s: float = 0.5
    min_window_s: float = 0.5  # speech regions shorter than this get no window of their own
    max_gap_s: float = 0.5  # speech regions closer than this are one region
    # Auto: clusters whose mean embeddings are this alike (cosine) are one voice. On composites
    # of real speech, 0.70 found the right number of voices in 10 of 10 (1 to 3 voices); 0.75
    # split a variable voice (JFK's 1961 recording) in two.
    same_voice_similarity: float = 0.70
    refine_window_s: float = 0.8  # short windows that place each change (0: no refinement)
    # Their step (> 0): the resolution of change points. 0.2 s against 0.1 s on the composites of
    # benchmarks/diarization.py: changes within 0.35 s (0.30), DER 0.9 / 1.7 / 5.7% (0.6 / 1.7 /
    # 5.7%), at 76% of the CPU time.
    refine_step_s: float = 0.2
    min_cluster_frac: float = 0.05  # auto: smaller clusters (share of windows) are not voices
    min_turn_s: float = 0.4  # a speaker's piece of an utterance shorter than this is not split off

    def __post_init__(self) -> None:
        if self.n_speakers is not None and self.n_speakers < 1:
            raise ValueError(f"n_speakers must be >= 1, got {self.n_speakers}")
        if min(self.max_speakers, self.window_s, self.hop_s, self.refine_step_s) <= 0:
            raise ValueError("max_speakers, window_s, hop_s and refine_step_s must be positive")


def parse_speakers(value: str) -> int | None:
    """``auto`` -> None; ``N`` -> N (>= 1). Raises ValueError for anything else."""
    if value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"expected 'auto' or a number of speakers, got {value!r}") from None
    if n < 1:
        raise ValueError(f"the number of speakers must be >= 1, got {n}")
    return n


@dataclass(frozen=True)
class SpeakerSpan:
    """One stretch of one speaker's speech, seconds from the start of the audio."""

    start_s: float
    end_s: float
    speaker: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def speaker_name(index: int) -> str:
    """0 -> ``S1``, 1 -> ``S2``, ..."""
    return f"S{index + 1}"


# ---------------------------------------------------------------------------------------------
# voice encoder


def _voice_encoder_class() -> type[torch.nn.Module]:
    from torch import nn

    class VoiceEncoder(nn.Module):
        """resemblyzer's GE2E encoder: 3-layer LSTM (40 -> 256) + linear + ReLU, L2-normed.

        Rebuilt here so that only its weights are needed (resemblyzer's package imports
        webrtcvad at import time, which this use does not need).
        """

        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, D_EMBEDDING)

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            """mels ``(B, T, 40)`` -> embeddings ``(B, 256)``, non-negative, unit norm."""
            _, (hidden, _) = self.lstm(mels)
            raw = self.linear(hidden[-1]).relu()  # (B, 256)
            return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-8)

    return VoiceEncoder


def voice_encoder_weights() -> str:
    """Path of ``pretrained.pt`` inside the installed resemblyzer wheel (not imported)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "speaker diarization needs resemblyzer's voice encoder: "
            "pip install --no-deps resemblyzer==0.1.4"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise RuntimeError(f"resemblyzer is installed without its weights ({path} missing)")
    return str(path)


@functools.lru_cache(maxsize=2)
def load_voice_encoder(device: str = "cpu") -> torch.nn.Module:
    """The GE2E voice encoder with resemblyzer's packaged weights, in eval mode, cached."""
    import torch

    checkpoint = torch.load(voice_encoder_weights(), map_location="cpu", weights_only=True)
    state = {k: v for k, v in checkpoint["model_state"].items() if not k.startswith("similarity")}
    encoder = _voice_encoder_class()()
    encoder.load_state_dict(state)
    return encoder.to(device).eval()


def mel_frames(audio: np.ndarray) -> np.ndarray:
    """float32 ``(n_frames, 40)`` mel power frames every 10 ms (resemblyzer's input).

    The same numbers as resemblyzer's ``librosa.feature.melspectrogram`` call (25 ms Hann
    windows, centred with zero padding, power 2, Slaney mel filters), computed with one numpy
    FFT: librosa's own path costs a JIT compilation on its first call.
    """
    n_fft, hop = int(SAMPLE_RATE_HZ * 0.025), int(SAMPLE_RATE_HZ * MEL_HOP_S)
    y = np.pad(np.asarray(audio, np.float32), n_fft // 2)
    n_frames = 1 + (len(y) - n_fft) // hop if len(y) >= n_fft else 0
    if n_frames <= 0:
        return np.zeros((0, N_MELS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop][:n_frames]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)  # periodic Hann, as scipy's "hann"
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (n_frames, n_fft // 2 + 1)
    return (power @ _mel_filters().T).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    import librosa

    n_fft = int(SAMPLE_RATE_HZ * 0.025)
    return librosa.filters.mel(sr=SAMPLE_RATE_HZ, n_fft=n_fft, n_mels=N_MELS).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# 1. who spoke when


def speech_regions(
    utterances: Sequence[Utterance], max_gap_s: float = 0.5
) -> list[tuple[float, float]]:
    """Speech as (start_s, end_s) regions: the words of the utterances (the utterance spans
    where words are missing), joined across gaps shorter than ``max_gap_s``."""
    pieces = sorted(
        (w.start_s, w.end_s)
        for u in utterances
        for w in (u.words or [Word(u.text, u.start_s, u.end_s)])
        if w.end_s > w.start_s
    )
    regions: list[tuple[float, float]] = []
    for start, end in pieces:
        if regions and start - regions[-1][1] < max_gap_s:
            regions[-1] = (regions[-1][0], max(regions[-1][1], end))
        else:
            regions.append((start, end))
    return regions


def window_spans(
    regions: Sequence[tuple[float, float]], config: SpeakerConfig = SpeakerConfig()
) -> list[tuple[float, float]]:
    """Embedding windows (start_s, end_s) inside the regions, every ``hop_s``.

    A region shorter than ``window_s`` gets one window, itself (none below ``min_window_s``).
    """
    windows: list[tuple[float, float]] = []
    for start, end in regions:
        length = end - start
        if length < config.min_window_s:
            continue
        if length <= config.window_s:
            windows.append((start, end))
            continue
        n = int(np.floor((length - config.window_s) / config.hop_s)) + 1
        starts = start + config.hop_s * np.arange(n)
        if end - (starts[-1] + config.window_s) > config.hop_s / 2:  # cover the region's end
            starts = np.append(starts, end - config.window_s)
        windows.extend((float(s), float(s) + config.window_s) for s in starts)
    return windows


def embed_windows(
    audio: np.ndarray,
    windows: Sequence[tuple[float, float]],
    encoder: torch.nn.Module | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Voice embeddings of the windows.

    Args:
        audio: float32 16 kHz mono ``(n_samples,)``.
        windows: (start_s, end_s) per window.
        encoder: from :func:`load_voice_encoder` (default: cached CPU encoder).
        batch_size: windows per encoder call (windows of equal length are batched together).

    Returns:
        float32 ``(n_windows, 256)``, unit rows.
    """
    return embed_mel_windows(mel_frames(audio), windows, encoder, batch_size)


def embed_mel_windows(
    mels: np.ndarray,
    windows: Sequence[tuple[float, float]],
    encoder: torch.nn.Module | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """:func:`embed_windows` from the file's mel frames ``(n_frames, 40)`` (:func:`mel_frames`)."""
    import torch

    out = np.zeros((len(windows), D_EMBEDDING), np.float32)
    if not windows or not len(mels):
        return out
    encoder = encoder if encoder is not None else load_voice_encoder()
    device = next(encoder.parameters()).device
    slices = []
    for start_s, end_s in windows:
        first = min(round(start_s / MEL_HOP_S), len(mels) - 1)
        slices.append(slice(first, max(first + 1, min(round(end_s / MEL_HOP_S), len(mels)))))
    by_length: dict[int, list[int]] = {}
    for i, s in enumerate(slices):
        by_length.setdefault(s.stop - s.start, []).append(i)
    with torch.inference_mode(), _one_thread():
        for indices in by_length.values():
            for first in range(0, len(indices), batch_size):
                chunk = indices[first : first + batch_size]
                x = np.stack([mels[slices[i]] for i in chunk])  # (B, T, 40)
                out[chunk] = encoder(torch.from_numpy(x).to(device)).float().cpu().numpy()
    return out


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one thread for the duration (the previous count is restored after).

    The encoder's LSTM steps are (64 x 256) @ (256 x 1024) products, too small to share: on a
    busy 2-core machine two threads spent 12x the CPU time of one (6.8 s against 0.56 s for a
    19 s file), mostly waiting for each other.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _relabel_by_first(labels: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered 0, 1, ... in order of first occurrence."""
    order: dict[int, int] = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], dtype=int)


def _centroids(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit mean embedding per label 0 .. labels.max()."""
    return _normalised(np.stack([embeddings[labels == k].mean(0) for k in range(labels.max() + 1)]))


def merge_similar(
    embeddings: np.ndarray, labels: np.ndarray, min_similarity: float, n_clusters: int = 1
) -> np.ndarray:
    """Join the two clusters with the most alike centroids (cosine) while they are at least
    ``min_similarity`` alike and more than ``n_clusters`` remain.

    Returns:
        int ``(n,)`` labels 0 .. k-1 (in order of first occurrence).
    """
    labels = _relabel_by_first(labels)
    while labels.max() + 1 > n_clusters:
        sims = _centroids(embeddings, labels)
        sims = sims @ sims.T
        np.fill_diagonal(sims, -np.inf)
        a, b = np.unravel_index(int(np.argmax(sims)), sims.shape)
        if sims[a, b] < min_similarity:
            break
        labels = _relabel_by_first(np.where(labels == max(a, b), min(a, b), labels))
    return labels


def cluster_voices(embeddings: np.ndarray, config: SpeakerConfig = SpeakerConfig()) -> np.ndarray:
    """Speaker index per embedding, 0-based, numbered in order of first occurrence.

    With ``n_speakers`` given: agglomerative clustering (cosine, average linkage) into that
    many clusters. Otherwise the windows are first over-split (``max_speakers`` clusters),
    clusters whose centroids are at least ``same_voice_similarity`` alike are joined (most
    alike first) and clusters of fewer than ``min_cluster_frac`` of the windows are given to
    their nearest neighbour; one voice thus comes out as one cluster. Last, every window takes
    the label of its nearest centroid (cosine), a few times (k-means on the sphere).

    On composites of real speech (``benchmarks/diarization.py``) average linkage labelled
    0.90-0.96 of the windows right where spectral clustering (``spectralcluster``, eigen-gap
    auto-tuning) labelled 0.64-0.94, and over-split one voice more often.

    Args:
        embeddings: float ``(n, d)`` unit rows, time order.
        config: ``n_speakers``, ``max_speakers``, ``same_voice_similarity``.

    Returns:
        int ``(n,)``.
    """
    n = len(embeddings)
    wanted = config.n_speakers
    if n == 0:
        return np.zeros(0, int)
    if wanted == 1 or n < 2:
        return np.zeros(n, int)
    if wanted is None:
        labels = _agglomerative(embeddings, min(config.max_speakers, max(1, n // 3)))
        labels = merge_similar(embeddings, labels, config.same_voice_similarity)
        labels = _dissolve_small(embeddings, labels, max(3, int(config.min_cluster_frac * n)))
    else:
        labels = _agglomerative(embeddings, min(wanted, n))
    for _ in range(5):  # nearest-centroid refinement (k-means steps on the sphere)
        k = labels.max() + 1
        refined = _relabel_by_first(np.argmax(embeddings @ _centroids(embeddings, labels).T, 1))
        if refined.max() + 1 < k or np.array_equal(refined, labels):
            break
        labels = refined
    return labels


def _dissolve_small(embeddings: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Give the windows of clusters smaller than ``min_size`` to the nearest large cluster."""
    sizes = np.bincount(labels)
    large = np.flatnonzero(sizes >= min_size)
    if len(large) == 0 or len(large) == len(sizes):
        return labels
    centroids = _centroids(embeddings, labels)[large]
    small = ~np.isin(labels, large)
    labels = labels.copy()
    labels[small] = large[np.argmax(embeddings[small] @ centroids.T, axis=1)]
    return _relabel_by_first(labels)


def _agglomerative(embeddings: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    k = min(k, len(embeddings))
    clusterer = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average")
    return np.asarray(clusterer.fit_predict(embeddings), dtype=int)


def spans_from_windows(
    regions: Sequence[tuple[float, float]],
    windows: Sequence[tuple[float, float]],
    labels: Sequence[int],
) -> list[SpeakerSpan]:
    """Speaker spans: within each region, every instant takes the label of the nearest window
    centre of that region (so a change falls midway between the last window of one speaker
    and the first of the next); regions without a window take the nearest window overall."""
    if len(windows) == 0:
        return []
    centres = np.array([(s + e) / 2 for s, e in windows])
    spans: list[SpeakerSpan] = []
    for start, end in regions:
        inside = np.flatnonzero((centres >= start) & (centres <= end))
        if len(inside) == 0:
            nearest = int(np.argmin(np.abs(centres - (start + end) / 2)))
            pieces = [(start, end, labels[nearest])]
        else:
            cuts = (centres[inside][1:] + centres[inside][:-1]) / 2
            bounds = [start, *cuts.tolist(), end]
            pieces = [(bounds[j], bounds[j + 1], labels[int(i)]) for j, i in enumerate(inside)]
        for a, b, label in pieces:
            name = speaker_name(int(label))
            if spans and spans[-1].speaker == name and abs(spans[-1].end_s - a) < 1e-9:
                spans[-1] = SpeakerSpan(spans[-1].start_s, b, name)
            elif b > a:
                spans.append(SpeakerSpan(a, b, name))
    return spans


def refine_changes(
    mels: np.ndarray,
    spans: Sequence[SpeakerSpan],
    centroids: dict[str, np.ndarray],
    encoder: torch.nn.Module | None = None,
    config: SpeakerConfig = SpeakerConfig(),
) -> list[SpeakerSpan]:
    """Move each change of speaker between touching spans to where short windows agree best.

    The long windows that find the voices place a change only to about ``hop_s`` and drift
    towards the voice that dominates a straddling window. Around each change (``window_s`` / 2
    either side, inside the two spans) short windows (``refine_window_s``, every
    ``refine_step_s``) are scored by how much more they resemble the left voice's centroid
    than the right one's; the change goes where the left-minus-right total is largest.
    """
    out = list(spans)
    half = config.window_s / 2
    for k in range(len(out) - 1):
        left, right = out[k], out[k + 1]
        if left.speaker == right.speaker or abs(left.end_s - right.start_s) > 1e-6:
            continue
        lo = max(left.start_s, left.end_s - half)
        hi = min(right.end_s, right.start_s + half)
        centres = np.arange(lo, hi + 1e-9, config.refine_step_s)
        if len(centres) < 3:
            continue
        r = config.refine_window_s / 2
        short = [(max(c - r, 0.0), c + r) for c in centres]
        e = embed_mel_windows(mels, short, encoder)
        margin = e @ centroids[left.speaker] - e @ centroids[right.speaker]  # > 0: left voice
        # boundary after centre j: left of it should be the left voice, right of it the right
        gain = np.cumsum(margin)[:-1] - (np.sum(margin) - np.cumsum(margin)[:-1])
        j = int(np.argmax(gain))
        boundary = float((centres[j] + centres[j + 1]) / 2)
        out[k] = SpeakerSpan(left.start_s, boundary, left.speaker)
        out[k + 1] = SpeakerSpan(boundary, right.end_s, right.speaker)
    return out


def diarize(
    audio: np.ndarray,
    regions: Sequence[tuple[float, float]],
    encoder: torch.nn.Module | None = None,
    config: SpeakerConfig = SpeakerConfig(),
) -> list[SpeakerSpan]:
    """Who spoke when, within the given speech regions.

    Args:
        audio: float32 16 kHz mono ``(n_samples,)``.
        regions: (start_s, end_s) of speech (e.g. :func:`speech_regions` of the transcript).
        encoder: from :func:`load_voice_encoder` (default: cached CPU encoder).
        config: windows and the number of speakers.

    Returns:
        spans in time order, adjacent spans of one speaker merged; names ``S1``, ``S2``, ...
        in order of first speech.
    """
    windows = window_spans(regions, config)
    if not windows:
        return [SpeakerSpan(s, e, speaker_name(0)) for s, e in regions if e > s]
    encoder = encoder if encoder is not None else load_voice_encoder()
    mels = mel_frames(audio)
    embeddings = embed_mel_windows(mels, windows, encoder)
    labels = cluster_voices(embeddings, config)
    spans = spans_from_windows(regions, windows, labels.tolist())
    if labels.max() == 0 or config.refine_window_s <= 0:
        return spans
    centroids = _centroids(embeddings, labels)
    by_name = {speaker_name(k): centroids[k] for k in range(len(centroids))}
    return refine_changes(mels, spans, by_name, encoder, config)


# ---------------------------------------------------------------------------------------------
# 2. utterances <- spans


def _overlaps(start_s: float, end_s: float, spans: Sequence[SpeakerSpan]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for span in spans:
        overlap = min(end_s, span.end_s) - max(start_s, span.start_s)
        if overlap > 0:
            totals[span.speaker] = totals.get(span.speaker, 0.0) + overlap
    return totals


def speaker_of(start_s: float, end_s: float, spans: Sequence[SpeakerSpan]) -> str | None:
    """The speaker whose spans overlap [start_s, end_s] most; without overlap, the nearest
    span's speaker; None without spans."""
    if not spans:
        return None
    totals = _overlaps(start_s, end_s, spans)
    if totals:
        return max(totals, key=lambda s: (totals[s], -int(s[1:]) if s[1:].isdigit() else 0))
    mid = (start_s + end_s) / 2
    nearest = min(spans, key=lambda sp: min(abs(sp.start_s - mid), abs(sp.end_s - mid)))
    return nearest.speaker


def _word_speakers(words: Sequence[Word], spans: Sequence[SpeakerSpan]) -> list[str | None]:
    return [speaker_of(w.start_s, w.end_s, spans) for w in words]


def split_at_turns(
    utterances: Sequence[Utterance],
    spans: Sequence[SpeakerSpan],
    min_turn_s: float = 0.4,
) -> list[Utterance]:
    """Cut each utterance whose words belong to more than one speaker at the changes.

    Each word takes the speaker that overlaps it most; runs of words of one speaker become
    utterances. A run shorter than ``min_turn_s`` stays with its neighbour (a single word
    placed wrongly by a window that straddles the change does not make an utterance of its own).
    Utterances without word timestamps are kept whole.

    Returns:
        the utterances, time order, each with one speaker's words.
    """
    out: list[Utterance] = []
    for u in utterances:
        if len(u.words) < 2:
            out.append(u)
            continue
        owners = _word_speakers(u.words, spans)
        runs = _absorb_short(_runs(owners), u.words, min_turn_s)
        if len(runs) == 1:
            out.append(u)  # one speaker: the utterance as Whisper wrote it
            continue
        out.extend(utterance_from_words([u.words[i] for i in run], u) for _, run in runs)
    return out


def _runs(owners: Sequence[str | None]) -> list[tuple[str | None, list[int]]]:
    """Consecutive indices with the same owner."""
    runs: list[tuple[str | None, list[int]]] = []
    for i, owner in enumerate(owners):
        if runs and runs[-1][0] == owner:
            runs[-1][1].append(i)
        else:
            runs.append((owner, [i]))
    return runs


def _absorb_short(
    runs: list[tuple[str | None, list[int]]], words: Sequence[Word], min_s: float
) -> list[tuple[str | None, list[int]]]:
    """Give runs shorter than ``min_s`` to their longer neighbour, shortest first, joining
    neighbours of one speaker that then touch."""

    def length(run: tuple[str | None, list[int]]) -> float:
        return words[run[1][-1]].end_s - words[run[1][0]].start_s

    runs = list(runs)
    while len(runs) > 1:
        k = min(range(len(runs)), key=lambda j: length(runs[j]))
        if length(runs[k]) >= min_s:
            break
        if k == 0 or (k < len(runs) - 1 and length(runs[k + 1]) > length(runs[k - 1])):
            partner = k + 1
        else:
            partner = k - 1
        lo, hi = sorted((k, partner))
        runs[lo : hi + 1] = [(runs[partner][0], runs[lo][1] + runs[hi][1])]
        joined: list[tuple[str | None, list[int]]] = []
        for owner, indices in runs:
            if joined and joined[-1][0] == owner:
                joined[-1] = (owner, joined[-1][1] + indices)
            else:
                joined.append((owner, indices))
        runs = joined
    return runs


def assign_speakers(
    utterances: Sequence[Utterance], spans: Sequence[SpeakerSpan]
) -> list[str | None]:
    """The speaker of each utterance: most overlap with its words (its span without words);
    None only when there are no spans at all."""
    labels: list[str | None] = []
    for u in utterances:
        if u.words:
            totals: dict[str, float] = {}
            for w in u.words:
                for speaker, overlap in _overlaps(w.start_s, w.end_s, spans).items():
                    totals[speaker] = totals.get(speaker, 0.0) + overlap
            if totals:
                labels.append(max(sorted(totals), key=lambda s: totals[s]))
                continue
        labels.append(speaker_of(u.start_s, u.end_s, spans))
    return labels


# ---------------------------------------------------------------------------------------------
# evaluation


def diarization_error_rate(
    reference: Sequence[tuple[float, float, str]],
    hypothesis: Sequence[tuple[float, float, str]],
    collar_s: float = 0.25,
    step_s: float = 0.01,
) -> dict[str, float]:
    """Diarization error rate (NIST md-eval style, single speaker per instant), on a time grid.

    Speaker names are matched one to one to maximise agreement (Hungarian). Within
    ``collar_s`` of a reference boundary nothing is scored.

    Args:
        reference, hypothesis: (start_s, end_s, speaker) spans.
        collar_s: forgiveness either side of every reference span boundary.
        step_s: grid step.

    Returns:
        ``der``, ``missed``, ``false_alarm``, ``confusion`` (each a share of the scored
        reference speech) and ``speech_s`` (that scored speech, seconds).
    """
    from scipy.optimize import linear_sum_assignment

    end = max([e for _, e, _ in [*reference, *hypothesis]] + [0.0])
    n = int(np.ceil(end / step_s)) + 1
    t = (np.arange(n) + 0.5) * step_s

    def grid(spans: Sequence[tuple[float, float, str]]) -> tuple[np.ndarray, list[str]]:
        names = sorted({s for _, _, s in spans})
        labels = np.full(n, -1)
        for a, b, s in spans:
            labels[(t >= a) & (t < b)] = names.index(s)
        return labels, names

    ref, ref_names = grid(reference)
    hyp, hyp_names = grid(hypothesis)
    scored = np.ones(n, bool)
    for a, b, _ in reference:
        for edge in (a, b):
            scored &= np.abs(t - edge) >= collar_s
    ref, hyp = ref[scored], hyp[scored]
    speech = ref >= 0
    total = max(int(speech.sum()), 1)
    missed = int((speech & (hyp < 0)).sum())
    false_alarm = int(((ref < 0) & (hyp >= 0)).sum())
    both = speech & (hyp >= 0)
    agreement = np.zeros((len(ref_names), len(hyp_names)))
    np.add.at(agreement, (ref[both], hyp[both]), 1)
    rows, cols = linear_sum_assignment(-agreement) if agreement.size else ([], [])
    matched = float(agreement[rows, cols].sum()) if len(rows) else 0.0
    confusion = int(both.sum()) - matched
    return {
        "der": (missed + false_alarm + confusion) / total,
        "missed": missed / total,
        "false_alarm": false_alarm / total,
        "confusion": confusion / total,
        "speech_s": total * step_s,
    }


# ---------------------------------------------------------------------------------------------
# both steps


@dataclass
class Diarization:
    """Speaker spans and the utterances cut and labelled by them.

    Attributes:
        spans: who spoke when (:func:`diarize`).
        utterances: the transcript's utterances, cut at changes of speaker.
        speakers: the speaker of each utterance (same order).
    """

    spans: list[SpeakerSpan]
    utterances: list[Utterance]
    speakers: list[str | None]


def diarize_utterances(
    audio: np.ndarray,
    utterances: Sequence[Utterance],
    config: SpeakerConfig = SpeakerConfig(),
    device: str = "cpu",
) -> Diarization:
    """Diarize the speech of the utterances, cut them at changes of speaker and label them."""
    regions = speech_regions(utterances, config.max_gap_s)
    spans = diarize(audio, regions, load_voice_encoder(device), config)
    cut = split_at_turns(utterances, spans, config.min_turn_s)
    return Diarization(spans, cut, assign_speakers(cut, spans))
