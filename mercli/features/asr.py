"""Speech recognition with Whisper, and the cut of its segments into utterances.

Whisper's segments are the utterances (the unit the model scores), after three pure steps that
are testable with fake segments: drop hallucinations of silence, split segments longer than
``max_s`` at the best word boundary, merge fragments that are too short to carry sentiment into a
neighbour.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16000  # whisper.audio.SAMPLE_RATE
_CLAUSE_END = tuple(".?!;:")
_PHRASE_END = (",", "\u2014", "-")
SENTENCE_END = (".", "?", "!")


class Word(NamedTuple):
    """One recognised word with its time span in seconds from the start of the audio."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Utterance:
    """A stretch of speech: the unit the model scores.

    Attributes:
        start_s, end_s: span in seconds from the start of the audio.
        text: transcript, words separated by single spaces.
        words: the words in order, with their own spans (empty without word timestamps).
        no_speech_prob: Whisper's probability that the window held no speech (max over the
            merged segments).
        avg_logprob: mean token log-probability of the decoded text (duration-weighted over
            merged segments); low values mean an unsure transcript.
    """

    start_s: float
    end_s: float
    text: str
    words: list[Word] = field(default_factory=list)
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


# ---------------------------------------------------------------------------------------------
# Whisper output -> utterances


def utterance_from_segment(segment: Mapping[str, Any]) -> Utterance:
    """Convert one of ``whisper.transcribe()``'s segment dicts."""
    words = [
        Word(str(w["word"]).strip(), float(w["start"]), float(w["end"]))
        for w in segment.get("words") or ()
        if str(w["word"]).strip()
    ]
    return Utterance(
        start_s=float(segment["start"]),
        end_s=float(segment["end"]),
        text=" ".join(str(segment["text"]).split()),
        words=words,
        no_speech_prob=float(segment.get("no_speech_prob", 0.0)),
        avg_logprob=float(segment.get("avg_logprob", 0.0)),
    )


def is_hallucination(
    utterance: Utterance, no_speech_threshold: float = 0.6, logprob_threshold: float = -1.0
) -> bool:
    """Whisper's own silence rule: likely no speech *and* an unsure decode; or no text at all."""
    if not any(ch.isalnum() for ch in utterance.text):
        return True
    return (
        utterance.no_speech_prob > no_speech_threshold and utterance.avg_logprob < logprob_threshold
    )


def fails_thresholds(
    utterance: Utterance, logprob_threshold: float = -1.0, compression_threshold: float = 2.4
) -> bool:
    """Whether Whisper's temperature fallback would decode this again: an unsure decode
    (``avg_logprob`` below ``logprob_threshold``) or a repetitive one (its text compresses by
    more than ``compression_threshold`` with zlib), Whisper's and faster-whisper's defaults."""
    import zlib

    data = utterance.text.encode()
    ratio = len(data) / len(zlib.compress(data)) if data else 0.0
    return utterance.avg_logprob < logprob_threshold or ratio > compression_threshold


def drop_hallucinations(
    utterances: Iterable[Utterance],
    no_speech_threshold: float = 0.6,
    logprob_threshold: float = -1.0,
) -> list[Utterance]:
    """Remove segments that Whisper invented over silence or noise."""
    kept = []
    for utterance in utterances:
        if is_hallucination(utterance, no_speech_threshold, logprob_threshold):
            log.debug(
                "dropping likely hallucination %.2f-%.2f s: %r",
                utterance.start_s,
                utterance.end_s,
                utterance.text,
            )
        else:
            kept.append(utterance)
    return kept


def utterance_from_words(words: Sequence[Word], parent: Utterance) -> Utterance:
    """``parent`` narrowed to ``words`` (a non-empty run of its words): times, text, words."""
    return replace(
        parent,
        start_s=words[0].start_s,
        end_s=words[-1].end_s,
        text=" ".join(w.text for w in words),
        words=list(words),
    )


def _boundary_score(words: Sequence[Word], i: int) -> float:
    """How good a cut before ``words[i]`` is: pause length plus punctuation, centre preferred."""
    gap_s = max(0.0, words[i].start_s - words[i - 1].end_s)
    previous = words[i - 1].text
    punctuation = 0.0
    if previous.endswith(_CLAUSE_END):
        punctuation = 1.0
    elif previous.endswith(_PHRASE_END):
        punctuation = 0.4
    # A mild pull to the middle keeps both halves long enough to stand alone.
    span_s = words[-1].end_s - words[0].start_s
    centre = 1.0 - abs((words[i].start_s - words[0].start_s) / max(span_s, 1e-6) - 0.5) * 2
    return gap_s + punctuation + 0.3 * centre


def split_long(utterances: Iterable[Utterance], max_s: float = 15.0) -> list[Utterance]:
    """Cut utterances longer than ``max_s`` at their best word boundaries, recursively.

    An utterance without word timestamps cannot be cut and is kept whole.
    """
    result: list[Utterance] = []
    for utterance in utterances:
        result.extend(_split_one(utterance, max_s))
    return result


def _split_one(utterance: Utterance, max_s: float) -> list[Utterance]:
    words = utterance.words
    if utterance.duration_s <= max_s or len(words) < 2:
        return [utterance]
    cut = max(range(1, len(words)), key=lambda i: _boundary_score(words, i))
    left, right = (
        utterance_from_words(words[:cut], utterance),
        utterance_from_words(words[cut:], utterance),
    )
    return _split_one(left, max_s) + _split_one(right, max_s)


def _is_fragment(utterance: Utterance, min_s: float, min_words: int) -> bool:
    n_words = len(utterance.words) if utterance.words else len(utterance.text.split())
    return utterance.duration_s < min_s or n_words < min_words


def merge_pair(first: Utterance, second: Utterance) -> Utterance:
    """Join two consecutive utterances into one spanning both."""
    duration_first, duration_second = max(first.duration_s, 1e-3), max(second.duration_s, 1e-3)
    logprob = (first.avg_logprob * duration_first + second.avg_logprob * duration_second) / (
        duration_first + duration_second
    )
    return Utterance(
        start_s=min(first.start_s, second.start_s),
        end_s=max(first.end_s, second.end_s),
        text=f"{first.text} {second.text}".strip(),
        words=[*first.words, *second.words],
        no_speech_prob=max(first.no_speech_prob, second.no_speech_prob),
        avg_logprob=logprob,
    )


def ends_sentence(u: Utterance) -> bool:
    """Whether ``u``'s text ends with a full stop, a question mark or an exclamation mark."""
    return u.text.rstrip().endswith(SENTENCE_END)


def join_unfinished(
    utterances: Sequence[Utterance], max_s: float = 15.0, max_gap_s: float = 0.5
) -> list[Utterance]:
    """Join each utterance whose text does not end a sentence (``.``, ``?``, ``!``) with the
    next one, when the pause between them is at most ``max_gap_s`` and the joined utterance
    lasts at most ``max_s``: Whisper ends segments mid-sentence ("... probable cause that" |
    "the target is associated ..."), and a sentence is the better unit to score."""
    joined: list[Utterance] = []
    for u in utterances:
        last = joined[-1] if joined else None
        if (
            last is not None
            and not ends_sentence(last)
            and u.start_s - last.end_s <= max_gap_s
            and u.end_s - last.start_s <= max_s
        ):
            joined[-1] = merge_pair(last, u)
        else:
            joined.append(u)
    return joined


def merge_short(
    utterances: Sequence[Utterance],
    min_s: float = 1.0,
    min_words: int = 3,
    max_gap_s: float = 2.0,
) -> list[Utterance]:
    """Merge fragments (shorter than ``min_s`` or with fewer than ``min_words``) into a neighbour.

    The fragment joins the neighbour separated from it by the shorter pause, provided the pause is
    at most ``max_gap_s``; an isolated fragment ("Thanks." after a long silence) stays on its own.
    Repeats until no fragment can be merged.
    """
    merged = list(utterances)
    while (i := _next_mergeable(merged, min_s, min_words, max_gap_s)) is not None:
        j = _merge_partner(merged, i)
        a, b = sorted((i, j))
        merged[a : b + 1] = [merge_pair(merged[a], merged[b])]
    return merged


def _gap_s(utterances: Sequence[Utterance], i: int, j: int) -> float:
    if not 0 <= j < len(utterances):
        return float("inf")
    first, second = sorted((utterances[i], utterances[j]), key=lambda u: u.start_s)
    return max(0.0, second.start_s - first.end_s)


def _merge_partner(utterances: Sequence[Utterance], i: int) -> int:
    before, after = _gap_s(utterances, i, i - 1), _gap_s(utterances, i, i + 1)
    return i - 1 if before <= after else i + 1


def _next_mergeable(
    utterances: Sequence[Utterance], min_s: float, min_words: int, max_gap_s: float
) -> int | None:
    for i, utterance in enumerate(utterances):
        if not _is_fragment(utterance, min_s, min_words):
            continue
        if _gap_s(utterances, i, _merge_partner(utterances, i)) <= max_gap_s:
            return i
    return None


def segment_utterances(
    segments: Iterable[Mapping[str, Any]],
    max_s: float = 15.0,
    min_s: float = 1.0,
    min_words: int = 3,
    max_gap_s: float = 2.0,
) -> list[Utterance]:
    """Whisper segment dicts -> utterances: drop hallucinations, split long, merge short."""
    return cut_utterances(
        (utterance_from_segment(s) for s in segments), max_s, min_s, min_words, max_gap_s
    )


def cut_utterances(
    segments: Iterable[Utterance],
    max_s: float = 15.0,
    min_s: float = 1.0,
    min_words: int = 3,
    max_gap_s: float = 2.0,
) -> list[Utterance]:
    """Any ASR backend's segments (as utterances) -> the utterances the model scores: drop
    hallucinations, split long, merge short."""
    utterances = drop_hallucinations(segments)
    utterances = split_long(utterances, max_s)
    return merge_short(utterances, min_s, min_words, max_gap_s)


def language_code(language: str) -> str:
    """Whisper's code for a language given by code or English name ("de", "German" -> "de").

    Raises:
        ValueError: a language Whisper does not know.
    """
    language = language.strip().lower()
    if language == "en":  # the default: no need to load whisper's tables
        return language
    from whisper.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

    if language in LANGUAGES:
        return language
    if language in TO_LANGUAGE_CODE:
        return TO_LANGUAGE_CODE[language]
    raise ValueError(f"unknown language {language!r}; Whisper knows e.g. en, de, fr, es, zh, ja")


def speech_input(audio: np.ndarray) -> np.ndarray | None:
    """The waveform as a contiguous float32 array for any ASR backend; None when it is empty or
    all zeros (nothing to transcribe).

    Raises:
        ValueError: not mono, shape (n_samples,).
    """
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono, shape (n_samples,); got {audio.shape}")
    if audio.size == 0 or not np.any(audio):
        return None
    return audio


def transcribe(
    audio: np.ndarray,
    model: Any,
    language: str | None = None,
    max_s: float = 15.0,
    min_s: float = 1.0,
    min_words: int = 3,
) -> list[Utterance]:
    """Transcribe a waveform into utterances with word timings.

    The decoded array goes to Whisper directly (``whisper.load_audio`` would call an ``ffmpeg``
    from PATH, which fresh machines lack). Each 30 s window is decoded independently
    (``condition_on_previous_text=False``), which stops one hallucination from propagating.

    Args:
        audio: 16 kHz mono waveform, shape = (n_samples,), float32 in [-1, 1].
        model: a ``whisper.Whisper`` (see :func:`mercli.features.whisper_offline.load_whisper`).
        language: e.g. ``"en"``; ``None`` lets a multilingual model detect it (from the first
            30 s). English-only models (``*.en``) always transcribe English.
        max_s, min_s, min_words: segmentation limits, see :func:`segment_utterances`.

    Returns:
        utterances in time order; empty when there is no speech.
    """
    speech = speech_input(audio)
    if speech is None:
        return []
    if not model.is_multilingual:
        language = "en"
    result = model.transcribe(
        speech,
        language=language,
        word_timestamps=True,
        condition_on_previous_text=False,
        fp16=model.device.type == "cuda",
        verbose=None,  # None: no printing to stdout and no progress bar
    )
    return segment_utterances(result["segments"], max_s=max_s, min_s=min_s, min_words=min_words)


# ---------------------------------------------------------------------------------------------
# word error rate

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}\u2018\u2019\u201c\u201d\u2014\u2013]")


def normalize_text(text: str) -> list[str]:
    """Lowercase, drop punctuation (apostrophes included: "don't" -> "dont"), split on space.

    Hyphens and dashes separate words ("well-known" -> "well known").
    """
    text = re.sub(r"[-\u2014\u2013]", " ", text.lower())
    return _PUNCTUATION.sub("", text).split()


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_word != hyp_word),  # substitution or match
                )
            )
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` after :func:`normalize_text`.

    Returns:
        edits / reference words (can exceed 1); for an empty reference 0.0 if the hypothesis is
        empty too, else 1.0.
    """
    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)
