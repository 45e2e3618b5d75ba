"""Early emission inside a stretch of speech: local agreement of successive transcripts.

A stretch of speech without a long enough pause is one endpointed segment
(:mod:`mercli.features.vad`); the utterances Whisper finds early in it would wait for the whole
stretch to end. Instead the live session re-transcribes the stretch's uncommitted tail at a fixed
cadence, and an utterance becomes final as soon as two successive transcripts agree on it: the
LocalAgreement-2 policy of ufal/whisper_streaming (Machacek et al., 2023), which commits the
longest common prefix of successive hypotheses. Here the prefix runs over the words (compared
without case and punctuation; what is emitted is the newer transcript's text) of the
utterances with a boundary token between utterances, so an utterance is final when both
transcripts hold all its words *and* end it at the same word, with more speech after it; or, one
check sooner, when both hold all its words, its last word ends a sentence (``.``, ``?``, ``!``)
and the newer transcript starts another utterance after it; or when the older transcript's
window ended in a pause that the voice-activity detector saw (``pad_s`` of silence after its
last word: :class:`mercli.features.vad.Pause`) and the newer one holds all its words and ends
it there, or ends a sentence there and runs on in the same utterance (:func:`split_at_pause`),
or holds the same words and nothing after them, both transcripts ending the sentence there
(:func:`held_sentence`: the newer window read on past the pause and heard no word yet).
The tail then starts in the pause after it: later transcripts never see its audio again, so a
final utterance is never re-emitted or changed.

Everything here is pure: :func:`n_agreed` and :func:`split_at_pause` compare two hypotheses,
:class:`LocalAgreement` keeps the previous hypothesis and the tail's start over one stretch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mercli.features.asr import Utterance, ends_sentence, utterance_from_words

BOUNDARY = "\x00"  # the token between two utterances of a hypothesis (never a word)
_PUNCTUATION = ".,?!;:\"'()[]-…"


def hypothesis_tokens(utterances: Sequence[Utterance]) -> list[str]:
    """The words of ``utterances`` in order, with :data:`BOUNDARY` between utterances (not after
    the last one: the end of the window is not a boundary). Utterances without word timings
    contribute their text split on spaces. Words are compared without case and punctuation
    (:func:`word_key`): successive drafts often differ only there ("American," / "american")."""
    tokens: list[str] = []
    for i, u in enumerate(utterances):
        if i:
            tokens.append(BOUNDARY)
        words = [w.text for w in u.words] if u.words else u.text.split()
        tokens.extend(word_key(w) for w in words)
    return tokens


def word_key(word: str) -> str:
    """``word`` lowercased, without the punctuation around it ("Flynn," -> "flynn")."""
    return word.strip(_PUNCTUATION).lower() or word


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def n_agreed(
    previous: Sequence[Utterance], current: Sequence[Utterance], previous_paused: bool = False
) -> int:
    """How many leading utterances of ``current`` are final: their words lie in the common
    prefix of both hypotheses' tokens (:func:`hypothesis_tokens`), and so does the boundary
    after each, or the utterance ends a sentence. ``previous_paused``: ``previous``'s window
    ended in a pause, which counts as a boundary after its last utterance.

    The last utterance of ``current`` is never final (nothing follows it in the window, so its
    end is not known), so the result is at most ``len(current) - 1``; it is 0 when the
    hypotheses disagree before the end of the first utterance.
    """
    before = hypothesis_tokens(previous)
    if previous_paused and before:
        before.append(BOUNDARY)
    agreed = common_prefix(before, hypothesis_tokens(current))
    n, position = 0, 0
    for u in current[:-1]:
        position += len(u.words) if u.words else len(u.text.split())
        # the boundary token after ``u`` is at index ``position``: both agree on it, or both
        # hold all of ``u``'s words and the sentence ends there
        if not (position < agreed or (position <= agreed and ends_sentence(u))):
            break
        n += 1
        position += 1
    return n


def split_at_pause(
    previous: Sequence[Utterance],
    current: Sequence[Utterance],
    min_s: float = 1.0,
    min_words: int = 3,
) -> tuple[list[Utterance], list[Utterance]] | None:
    """``current`` cut where ``previous``'s window ended in a pause, when ``current`` holds all
    of ``previous``'s words (:func:`hypothesis_tokens`), its word before the pause ends a
    sentence, and more words follow *in the same utterance*: Whisper often keeps the start of
    the next sentence in one segment with the last one (or ``merge_short`` joins it) until it
    is long enough to stand alone, while the voice-activity detector heard the pause between
    them. Returns (the utterances up to the pause, the rest), or None when ``current``
    disagrees, ends at the pause, already has a boundary there (the case of
    :func:`n_agreed`), lacks word timings, has no sentence end there (cutting at any pause
    cut sentences in two on the shared speech clips: "the standard of probable cause | of
    crime"), or when the piece before the pause would be a fragment (shorter than ``min_s``
    or with fewer than ``min_words`` words: :func:`mercli.features.asr.merge_short` would not
    keep it alone)."""
    before, tokens = hypothesis_tokens(previous), hypothesis_tokens(current)
    k = len(before)  # the index of the first word after the pause
    if not before or k >= len(tokens) or tokens[k] == BOUNDARY:
        return None
    if common_prefix(before, tokens) < k:
        return None
    i, position = 0, 0  # the utterance that holds token k, and its first token
    while position + _n_words(current[i]) <= k:
        position += _n_words(current[i]) + 1
        i += 1
    u, j = current[i], k - position  # j: its word after the pause (> 0: no boundary at k - 1)
    if len(u.words) != _n_words(u) or j <= 0:
        return None
    head, rest = utterance_from_words(u.words[:j], u), utterance_from_words(u.words[j:], u)
    if head.duration_s < min_s or len(head.words) < min_words or not ends_sentence(head):
        return None
    return [*current[:i], head], [rest, *current[i + 1 :]]


def held_sentence(previous: Sequence[Utterance], current: Sequence[Utterance]) -> bool:
    """Both transcripts end their last utterance with a sentence end (the caller has checked
    that they hold the same words): with ``previous``'s window ending in a pause and
    ``current``'s reading on past it without another word, the sentence ends at the pause."""
    return bool(previous and current) and ends_sentence(previous[-1]) and ends_sentence(current[-1])


def _n_words(u: Utterance) -> int:
    return len(u.words) if u.words else len(u.text.split())


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
        previous_paused: its window ended in a pause (see :func:`n_agreed`).
        use_pause_split: also cut the newer transcript at such a pause when it holds all the
            older one's words, ends a sentence there and goes on in the same utterance
            (:func:`split_at_pause`).
    """

    start_s: float
    previous: list[Utterance] = field(default_factory=list)
    previous_paused: bool = False
    use_pause_split: bool = False
    previous_end_s: float | None = None  # where ``previous``'s window ended, when known

    def update(
        self,
        hypothesis: Sequence[Utterance],
        paused: bool = False,
        window_end_s: float | None = None,
    ) -> list[Utterance]:
        """Take a new transcript of the tail (``paused``: its window ends in a pause, at
        ``window_end_s`` of stream time when given); returns the utterances that became final
        (time order, possibly none) and moves ``start_s`` past them."""
        hypothesis = list(hypothesis)
        n = n_agreed(self.previous, hypothesis, self.previous_paused)
        split = None
        if self.use_pause_split and self.previous_paused:
            split = split_at_pause(self.previous, hypothesis)
        if split is not None and len(split[0]) > n:
            final, hypothesis = split
            self.start_s = max(self.start_s, cut_point_s(final[-1], hypothesis[0]))
            self.previous, self.previous_paused = hypothesis, paused
            self.previous_end_s = window_end_s
            return final
        if n:
            self.start_s = max(self.start_s, cut_point_s(hypothesis[n - 1], hypothesis[n]))
        elif self.previous_paused and hypothesis_tokens(hypothesis) == hypothesis_tokens(
            self.previous
        ):
            if self.use_pause_split and held_sentence(self.previous, hypothesis):
                # the newer window heard more audio after the pause and no word in it: both
                # end the sentence at the pause, which is the boundary
                end_s = self.previous_end_s
                self.start_s = max(self.start_s, hypothesis[-1].end_s if end_s is None else end_s)
                self.previous, self.previous_paused = [], False
                return hypothesis
            paused = True  # the same words and nothing after the pause yet: it still holds
            window_end_s = self.previous_end_s  # ... and so does where its window ended
        self.previous, self.previous_paused = hypothesis[n:], paused
        self.previous_end_s = window_end_s
        return hypothesis[:n]
