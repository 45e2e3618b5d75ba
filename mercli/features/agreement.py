"""Early emission inside a stretch of speech: local agreement of successive transcripts.

A stretch of speech without a long enough pause is one endpointed segment
(:mod:`mercli.features.vad`); the utterances Whisper finds early in it would wait for the whole
stretch to end. Instead the live session re-transcribes the stretch's uncommitted tail at a fixed
cadence, and an utterance becomes final as soon as two successive transcripts agree on it: the
LocalAgreement-2 policy of ufal/whisper_streaming (Machacek et al., 2023), which commits the
longest common prefix of successive hypotheses. Here the prefix runs over the words of the
utterances with a boundary token between utterances, so an utterance is final when both
transcripts hold all its words *and* end it at the same word, with more speech after it; or, one
check sooner, when both hold all its words, its last word ends a sentence (``.``, ``?``, ``!``)
and the newer transcript starts another utterance after it. The tail
then starts in the pause after it: later transcripts never see its audio again, so a final
utterance is never re-emitted or changed.

Everything here is pure: :func:`n_agreed` compares two hypotheses, :class:`LocalAgreement` keeps
the previous hypothesis and the tail's start over one stretch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mercli.features.asr import Utterance

BOUNDARY = "\x00"  # the token between two utterances of a hypothesis (never a word)
SENTENCE_END = (".", "?", "!")


def hypothesis_tokens(utterances: Sequence[Utterance]) -> list[str]:
    """The words of ``utterances`` in order, with :data:`BOUNDARY` between utterances (not after
    the last one: the end of the window is not a boundary). Utterances without word timings
    contribute their text split on spaces."""
    tokens: list[str] = []
    for i, u in enumerate(utterances):
        if i:
            tokens.append(BOUNDARY)
        tokens.extend(w.text for w in u.words) if u.words else tokens.extend(u.text.split())
    return tokens


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def n_agreed(previous: Sequence[Utterance], current: Sequence[Utterance]) -> int:
    """How many leading utterances of ``current`` are final: their words lie in the common
    prefix of both hypotheses' tokens (:func:`hypothesis_tokens`), and so does the boundary
    after each, or the utterance ends a sentence.

    The last utterance of ``current`` is never final (nothing follows it in the window, so its
    end is not known), so the result is at most ``len(current) - 1``; it is 0 when the
    hypotheses disagree before the end of the first utterance.
    """
    agreed = common_prefix(hypothesis_tokens(previous), hypothesis_tokens(current))
    n, position = 0, 0
    for u in current[:-1]:
        position += len(u.words) if u.words else len(u.text.split())
        # the boundary token after ``u`` is at index ``position``: both agree on it, or both
        # hold all of ``u``'s words and the sentence ends there
        if not (position < agreed or (position <= agreed and _ends_sentence(u))):
            break
        n += 1
        position += 1
    return n


def _ends_sentence(u: Utterance) -> bool:
    return u.text.rstrip().endswith(SENTENCE_END)


def cut_point_s(final: Utterance, following: Utterance) -> float:
    """Where the tail starts after ``final``: the middle of the pause before ``following``
    (at ``final``'s end when the two touch or overlap)."""
    return max(final.end_s, (final.end_s + following.start_s) / 2)


@dataclass
class LocalAgreement:
    """The agreement over one stretch of speech.

    Attributes:
        start_s: where the uncommitted tail starts (stream seconds); the caller transcribes from
            here and passes the utterances with stream times to :meth:`update`.
        previous: the last hypothesis of the tail (what the next one is compared with).
    """

    start_s: float
    previous: list[Utterance] = field(default_factory=list)

    def update(self, hypothesis: Sequence[Utterance]) -> list[Utterance]:
        """Take a new transcript of the tail; returns the utterances that became final (time
        order, possibly none) and moves ``start_s`` past them."""
        hypothesis = list(hypothesis)
        n = n_agreed(self.previous, hypothesis)
        if n:
            self.start_s = max(self.start_s, cut_point_s(hypothesis[n - 1], hypothesis[n]))
        self.previous = hypothesis[n:]
        return hypothesis[:n]
