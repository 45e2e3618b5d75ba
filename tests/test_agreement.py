"""Local agreement of successive transcripts (early emission inside a stretch of speech)."""

from __future__ import annotations

import pytest

from mercli.features.agreement import (
    BOUNDARY,
    LocalAgreement,
    common_prefix,
    cut_point_s,
    hypothesis_tokens,
    n_agreed,
    split_at_pause,
)
from mercli.features.asr import Utterance, Word


def said(start_s: float, text: str, word_s: float = 0.3) -> Utterance:
    """An utterance of ``text`` from ``start_s``, one word every ``word_s``."""
    words = [
        Word(w, start_s + i * word_s, start_s + (i + 1) * word_s - 0.05)
        for i, w in enumerate(text.split())
    ]
    return Utterance(words[0].start_s, words[-1].end_s, text, words)


A = said(0.0, "the camera is great")  # 0.0-1.15
B = said(1.5, "but the battery dies fast")  # 1.5-2.95
C = said(3.4, "so i sent it back")  # 3.4-4.55


def test_tokens_are_the_words_with_a_boundary_between_utterances() -> None:
    words_a, words_b = A.text.split(), B.text.split()
    assert hypothesis_tokens([A, B]) == [*words_a, BOUNDARY, *words_b]
    assert hypothesis_tokens([Utterance(0.0, 1.0, "no word timings")]) == ["no", "word", "timings"]
    assert common_prefix(["a", "b", "c"], ["a", "b", "x", "c"]) == 2
    assert common_prefix([], ["a"]) == 0


def test_utterances_both_transcripts_hold_and_end_alike_are_final() -> None:
    partial = said(3.4, "so i")  # the window ended inside C
    assert n_agreed([A, B, partial], [A, B, C]) == 2
    assert n_agreed([A, said(1.5, "but the")], [A, B, C]) == 1  # B itself still grows


def test_nothing_is_final_when_the_transcripts_disagree() -> None:
    assert n_agreed([said(0.0, "a camera is great"), B], [A, B]) == 0  # first word differs
    assert n_agreed([], [A, B, C]) == 0  # no previous transcript
    # same words, but the first transcript did not end an utterance after "great"
    merged = said(0.0, "the camera is great but the battery dies fast")
    assert n_agreed([merged, C], [A, B, C]) == 0
    assert n_agreed([A, B, C], [merged, C]) == 0


def test_a_sentence_end_needs_no_second_boundary() -> None:
    sentence = said(0.0, "the camera is great.")
    # the older transcript ended with the sentence, the newer one goes on after it
    assert n_agreed([sentence], [sentence, B]) == 1
    assert n_agreed([A], [A, B]) == 0  # no sentence end: the boundary must be agreed on
    assert n_agreed([said(0.0, "the camera is")], [sentence, B]) == 0  # words not all agreed
    assert n_agreed([sentence], [sentence]) == 0  # nothing follows it yet


def test_a_window_that_ended_in_a_pause_counts_as_a_boundary() -> None:
    # the older window ended in a pause the VAD saw after A; the newer one ends A there
    assert n_agreed([A], [A, B], previous_paused=True) == 1
    assert n_agreed([A, B], [A, B, C], previous_paused=True) == 2
    assert n_agreed([said(0.0, "the camera is")], [A, B], previous_paused=True) == 0
    merged = said(0.0, "the camera is great but the battery dies fast")
    assert n_agreed([A], [merged, C], previous_paused=True) == 0  # no boundary there now
    assert n_agreed([A], [A], previous_paused=True) == 0  # the last is still never final
    agreement = LocalAgreement(start_s=0.0)
    assert agreement.update([A], paused=True) == [] and agreement.previous_paused
    assert agreement.update([A, said(1.5, "but")]) == [A]
    assert not agreement.previous_paused
    # a later window that adds no word after the pause keeps it; one that differs does not
    agreement = LocalAgreement(start_s=0.0)
    agreement.update([A], paused=True)
    agreement.update([said(0.0, "The camera is great,")])
    assert agreement.previous_paused
    assert agreement.update([said(0.0, "the camera is grey")]) == []
    assert not agreement.previous_paused
    assert n_agreed([said(0.0, "The Camera, is great.")], [A, B], previous_paused=True) == 1


def test_a_sentence_both_windows_end_at_a_pause_is_final() -> None:
    sentence = said(0.0, "the camera is great.")  # 0.0-1.15; the pause's window ends at 1.4
    agreement = LocalAgreement(start_s=0.0, use_pause_split=True)
    assert agreement.update([sentence], paused=True, window_end_s=1.4) == []
    # the next window read on past the pause and heard no word: the sentence ended there
    newer = said(0.0, "The camera is great.")
    assert agreement.update([newer]) == [newer]
    assert agreement.start_s == 1.4 and agreement.previous == []
    # it waits without a sentence end in both, without the pause, or without the rule
    for older, current, paused, rule in (
        (A, A, True, True),
        (sentence, said(0.0, "the camera is great"), True, True),
        (sentence, sentence, False, True),
        (sentence, sentence, True, False),
    ):
        agreement = LocalAgreement(start_s=0.0, use_pause_split=rule)
        agreement.update([older], paused=paused, window_end_s=1.4)
        assert agreement.update([current]) == []
        assert agreement.start_s == 0.0


def test_the_last_utterance_is_never_final() -> None:
    assert n_agreed([A], [A]) == 0  # the window's end is no boundary
    assert n_agreed([A, B], [A, B]) == 1


def test_the_tail_starts_in_the_pause_after_the_final_utterance() -> None:
    assert cut_point_s(A, B) == pytest.approx((A.end_s + B.start_s) / 2)
    overlapping = said(1.0, "but the battery")
    assert cut_point_s(A, overlapping) == A.end_s


def test_a_final_utterance_is_never_emitted_again_nor_changed() -> None:
    agreement = LocalAgreement(start_s=0.0)
    # transcripts of a growing window; later ones start where the tail starts
    assert agreement.update([A, said(1.5, "but the")]) == []
    assert agreement.start_s == 0.0 and agreement.previous == [A, said(1.5, "but the")]
    final = agreement.update([A, B, said(3.4, "so")])
    assert final == [A]
    assert agreement.start_s == pytest.approx((A.end_s + B.start_s) / 2)
    assert agreement.previous == [B, said(3.4, "so")]  # only the uncommitted rest is kept
    # the next window starts after A: A cannot come out again, whatever is decoded now
    assert agreement.update([B, said(3.4, "so i sent")]) == [B]
    cut_b = agreement.start_s
    assert cut_b == pytest.approx((B.end_s + C.start_s) / 2)
    assert agreement.update([said(3.4, "so i said it back")]) == []  # one utterance: not final
    assert agreement.update([C, said(5.0, "okay")]) == []  # disagrees with the last transcript
    assert agreement.start_s == cut_b  # nothing moves without agreement
    assert agreement.update([C, said(5.0, "okay then")]) == [C]
    assert agreement.start_s > C.end_s


def test_agreement_holds_only_the_last_transcript() -> None:
    agreement = LocalAgreement(start_s=0.0)
    for n in range(1, 30):  # a long stretch, transcribed again and again
        words = " ".join(f"w{i}" for i in range(n))
        agreement.update([said(0.0, words)])
        assert len(agreement.previous) == 1


def test_a_newer_transcript_that_runs_on_past_the_pause_is_cut_there() -> None:
    # the older window ended in a pause after "...great."; the newer one keeps the next
    # phrase in the same utterance (Whisper does until that phrase stands alone)
    sentence = said(0.0, "the camera is great.")
    merged = said(0.0, "the camera is great. but the")
    final, rest = split_at_pause([sentence], [merged])
    assert [u.text for u in final] == ["the camera is great."]
    assert final[0].end_s == merged.words[3].end_s
    assert [u.text for u in rest] == ["but the"] and rest[0].start_s == merged.words[4].start_s
    # earlier utterances come with it; the tokens must all agree
    assert split_at_pause([A, sentence], [A, merged])[0] == [A, final[0]]
    assert split_at_pause([said(0.0, "the camera was great.")], [merged]) is None
    # a boundary there already (n_agreed's case), nothing after the pause, no word timings
    assert split_at_pause([sentence], [sentence, B]) is None
    assert split_at_pause([sentence], [sentence]) is None
    untimed = Utterance(0.0, 2.0, "the camera is great. but the")
    assert split_at_pause([sentence], [untimed]) is None


def test_a_cut_at_a_pause_needs_a_sentence_end_and_leaves_no_fragment() -> None:
    short = said(0.0, "great.")  # one word: merge_short would not keep it alone
    assert split_at_pause([short], [said(0.0, "great. but the battery")]) is None
    # no sentence end at the pause: the next words may finish the sentence ("cause | of crime")
    assert split_at_pause([A], [said(0.0, "the camera is great but the")]) is None
    assert split_at_pause([A], [said(0.0, "the camera is great, but the")]) is None
    assert split_at_pause([A], [said(0.0, "the camera is great! but")]) is not None


def test_agreement_cuts_at_a_pause_only_when_told_to() -> None:
    sentence, merged = said(0.0, "the camera is great."), said(0.0, "the camera is great. but the")
    for use_pause_split, expected in ((False, []), (True, ["the camera is great."])):
        agreement = LocalAgreement(start_s=0.0, use_pause_split=use_pause_split)
        agreement.update([sentence], paused=True)
        assert [u.text for u in agreement.update([merged])] == expected
    # the tail then starts in the pause; the rest is the previous transcript
    assert agreement.start_s == pytest.approx((merged.words[3].end_s + merged.words[4].start_s) / 2)
    assert [u.text for u in agreement.previous] == ["but the"]
    # without a pause at the older window's end there is nothing to cut at
    agreement = LocalAgreement(start_s=0.0, use_pause_split=True)
    agreement.update([sentence])
    assert agreement.update([merged]) == []
