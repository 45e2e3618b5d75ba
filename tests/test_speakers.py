"""Diarization: spans, their assignment to utterances, clustering, DER, and the wiring into
``mer analyze --speakers``. Fast tests use synthetic spans and embeddings; real voices are slow."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mercli.descriptors import Descriptors
from mercli.features.asr import Utterance, Word
from mercli.features.speakers import (
    SpeakerConfig,
    SpeakerSpan,
    assign_speakers,
    cluster_voices,
    diarization_error_rate,
    parse_speakers,
    spans_from_windows,
    speech_regions,
    split_at_turns,
    window_spans,
)
from mercli.prediction import FileResult, Prediction


def words(*items: tuple[str, float, float]) -> list[Word]:
    return [Word(t, a, b) for t, a, b in items]


def utterance(ws: list[Word]) -> Utterance:
    return Utterance(ws[0].start_s, ws[-1].end_s, " ".join(w.text for w in ws), ws)


SPANS = [SpeakerSpan(0.0, 2.05, "S1"), SpeakerSpan(2.05, 5.0, "S2")]


def test_an_utterance_across_a_change_is_cut_at_the_word_boundary() -> None:
    u = utterance(
        words(
            ("so", 0.0, 0.5),
            ("we", 0.6, 1.0),
            ("agree", 1.1, 2.0),
            ("no", 2.1, 2.6),
            ("we", 2.7, 3.0),
            ("don't", 3.1, 3.6),
        )
    )
    cut = split_at_turns([u], SPANS)
    assert [(c.text, c.start_s, c.end_s) for c in cut] == [
        ("so we agree", 0.0, 2.0),
        ("no we don't", 2.1, 3.6),
    ]
    assert assign_speakers(cut, SPANS) == ["S1", "S2"]


def test_a_short_stray_run_stays_with_its_neighbour() -> None:
    # one 0.2 s word of S2 inside S1's speech is a window error, not a turn
    spans = [SpeakerSpan(0, 1.0, "S1"), SpeakerSpan(1.0, 1.2, "S2"), SpeakerSpan(1.2, 3, "S1")]
    u = utterance(words(("a", 0.0, 0.9), ("b", 1.0, 1.2), ("c", 1.3, 2.5)))
    cut = split_at_turns([u], spans, min_turn_s=0.4)
    assert [c.text for c in cut] == ["a b c"]
    assert assign_speakers(cut, spans) == ["S1"]


def test_assign_takes_the_most_overlapping_speaker_and_the_nearest_without_overlap() -> None:
    plain = Utterance(1.5, 3.0, "no words")  # 0.55 s of S1, 0.95 s of S2
    outside = Utterance(6.0, 7.0, "after the last span")
    assert assign_speakers([plain, outside], SPANS) == ["S2", "S2"]
    assert assign_speakers([plain], []) == [None]


def test_speech_regions_join_close_words_and_windows_cover_them() -> None:
    u1 = utterance(words(("a", 0.0, 1.0), ("b", 1.2, 3.0)))
    u2 = utterance(words(("c", 5.0, 5.3)))
    regions = speech_regions([u1, u2], max_gap_s=0.5)
    assert regions == [(0.0, 3.0), (5.0, 5.3)]
    config = SpeakerConfig(window_s=1.5, hop_s=0.25, min_window_s=0.5)
    windows = window_spans(regions, config)
    assert windows[0] == (0.0, 1.5) and windows[-1] == (1.5, 3.0)  # the end is covered
    assert all(a >= 0.0 and b <= 3.0 for a, b in windows)  # the 0.3 s region gets none


def test_spans_change_midway_between_window_centres() -> None:
    windows = [(0.0, 1.0), (0.5, 1.5), (1.0, 2.0), (1.5, 2.5)]  # centres 0.5 1.0 1.5 2.0
    spans = spans_from_windows([(0.0, 2.5)], windows, [0, 0, 1, 1])
    assert spans == [SpeakerSpan(0.0, 1.25, "S1"), SpeakerSpan(1.25, 2.5, "S2")]


def _voices(centres: list[int], n_each: int, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(max(centres) + 1, 64))
    x = np.concatenate([base[c] + spread * rng.normal(size=(n_each, 64)) for c in centres])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_auto_finds_one_two_and_three_voices() -> None:
    one = cluster_voices(_voices([0, 0, 0], 10))
    assert set(one.tolist()) == {0}
    two = cluster_voices(_voices([0, 1, 0, 1], 10))
    assert two.tolist() == [0] * 10 + [1] * 10 + [0] * 10 + [1] * 10  # named by first speech
    three = cluster_voices(_voices([0, 1, 2, 0], 10))
    assert len(set(three.tolist())) == 3 and three[0] == three[-1]


def test_a_given_number_of_speakers_is_kept() -> None:
    labels = cluster_voices(_voices([0, 1, 2], 8), SpeakerConfig(n_speakers=2))
    assert len(set(labels.tolist())) == 2
    assert cluster_voices(_voices([0, 1], 8), SpeakerConfig(n_speakers=1)).max() == 0


def test_der_is_zero_for_renamed_speakers_and_counts_each_error() -> None:
    ref = [(0.0, 4.0, "A"), (4.0, 8.0, "B")]
    assert diarization_error_rate(ref, [(0.0, 4.0, "x"), (4.0, 8.0, "y")])["der"] == 0.0
    one = diarization_error_rate(ref, [(0.0, 8.0, "x")], collar_s=0.0)
    assert one["confusion"] == pytest.approx(0.5, abs=0.01)
    half = diarization_error_rate(ref, [(0.0, 4.0, "x")], collar_s=0.0)
    assert half["missed"] == pytest.approx(0.5, abs=0.01) and half["confusion"] == 0.0


def test_parse_speakers() -> None:
    assert parse_speakers("auto") is None and parse_speakers("3") == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError):
            parse_speakers(bad)


def test_speaker_summaries_in_the_json() -> None:
    p = [
        Prediction(0, 0.0, 2.0, "a", 1.0, 1, None, Descriptors(1.0, "happy", 0.9, speaker="S1")),
        Prediction(1, 2.0, 3.0, "b", -2.0, -2, None, Descriptors(0.5, "sad", 0.8, speaker="S2")),
        Prediction(2, 3.0, 5.0, "c", 2.0, 2, None, Descriptors(0.0, speaker="S1")),
    ]
    doc = FileResult("x.mp4", "ok", predictions=p).to_dict()
    assert [u["speaker"] for u in doc["utterances"]] == ["S1", "S2", "S1"]
    s1, s2 = doc["speakers"]
    assert s1 == {
        "speaker": "S1",
        "speaking_s": 4.0,
        "n_utterances": 2,
        "mean_score": 1.5,
        "mean_label_name": "positive",
        "expression": "happy",
        "face_coverage": 0.5,
    }
    assert s2["speaker"] == "S2" and s2["mean_score"] == -2.0 and s2["expression"] == "sad"
    assert FileResult("y.mp4", "ok", predictions=[p[0]]).to_dict()["speakers"] is not None
    no_speakers = [Prediction(0, 0.0, 1.0, "a", 0.0, 0, None)]
    assert FileResult("z.mp4", "ok", predictions=no_speakers).to_dict()["speakers"] is None


def test_extract_cuts_and_labels_utterances_with_speakers_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercli.features.extract import ExtractConfig, FrontEnd, extract
    from tests.fakes import make_media

    media = make_media(tmp_path / "talk.mp4", duration_s=4.0, video=False)
    said = utterance(
        words(("one", 0.2, 0.8), ("two", 0.9, 1.8), ("three", 2.2, 3.0), ("four", 3.1, 3.8))
    )
    seen = {}

    def fake_diarize(audio, regions, encoder, config):
        seen["regions"], seen["n"] = regions, config.n_speakers
        return [SpeakerSpan(0.2, 2.0, "S1"), SpeakerSpan(2.0, 3.8, "S2")]

    monkeypatch.setattr("mercli.features.speakers.diarize", fake_diarize)
    monkeypatch.setattr("mercli.features.speakers.load_voice_encoder", lambda device: None)
    config = ExtractConfig(use_faces=False, use_speakers=True, n_speakers=2)
    result = extract(media, config, FrontEnd(config, transcriber=lambda audio: [said]))
    assert [(u.text, u.descriptors.speaker) for u in result.utterances] == [
        ("one two", "S1"),
        ("three four", "S2"),
    ]
    assert seen == {"regions": [(0.2, 3.8)], "n": 2}
    assert "speakers" in result.timings_s
    off = extract(media, ExtractConfig(use_faces=False), FrontEnd(config, lambda audio: [said]))
    assert [u.descriptors.speaker for u in off.utterances] == [None]


def test_cache_keys_without_speakers_do_not_change() -> None:
    from mercli.features.extract import ExtractConfig

    assert "use_speakers" not in ExtractConfig().cache_fields()
    on = ExtractConfig(use_speakers=True).cache_fields()
    assert on["use_speakers"] is True and on["n_speakers"] is None
    assert on != ExtractConfig(use_speakers=True, n_speakers=2).cache_fields()


def test_the_voice_encoder_version_is_in_the_speaker_cache_key(monkeypatch) -> None:
    from mercli.features import extract
    from mercli.features.extract import ExtractConfig

    before = ExtractConfig(use_speakers=True).cache_fields()
    monkeypatch.setattr(extract, "package_version", lambda name: f"{name}-99")
    after = ExtractConfig(use_speakers=True).cache_fields()
    assert after != before and after["voice_encoder"] == "resemblyzer-99"
    assert "voice_encoder" not in ExtractConfig().cache_fields()


def test_cli_rejects_a_bad_speaker_count(tmp_path: Path) -> None:
    from mercli.cli import cli

    (tmp_path / "a.mp4").write_bytes(b"x")
    result = CliRunner().invoke(cli, ["analyze", str(tmp_path / "a.mp4"), "--speakers", "0"])
    assert result.exit_code == 2 and "--speakers" in result.output


@pytest.fixture
def labelled_front_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    """A fake front end whose utterances alternate S1, S2 when speakers are on; returns the
    list of the configs it was called with."""
    from tests.fakes import FakeExtractor

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fake = FakeExtractor()
    configs: list = []

    def labelled(path, config, front_end=None, sha256=""):
        configs.append(config)
        features = fake(path, config, front_end, sha256)
        for i, u in enumerate(features.utterances):
            speaker = f"S{i % 2 + 1}" if config.use_speakers else None
            u.descriptors = replace(u.descriptors, speaker=speaker)
        return features

    monkeypatch.setattr("mercli.features.extract.extract", labelled)
    return configs


def test_cli_table_and_json_carry_speakers(tmp_path: Path, labelled_front_end: list) -> None:
    from mercli.cli import cli
    from tests.fakes import tiny_models

    configs = labelled_front_end
    video = tmp_path / "a.mp4"
    video.write_bytes(b"fake video")
    model = str(tiny_models()["text"])
    runner = CliRunner()
    result = runner.invoke(
        cli, ["analyze", str(video), "--checkpoint", model, "--speakers", "auto", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert configs[-1].use_speakers and configs[-1].n_speakers is None
    doc = json.loads(result.stdout)["files"][0]
    assert [u["speaker"] for u in doc["utterances"]] == ["S1", "S2"]
    assert [s["speaker"] for s in doc["speakers"]] == ["S1", "S2"]
    table = runner.invoke(cli, ["analyze", str(video), "--checkpoint", model, "--speakers", "2"])
    assert table.exit_code == 0 and configs[-1].n_speakers == 2
    assert "speaker" in table.stdout and "S2" in table.stdout


# ---------------------------------------------------------------------------------------------
# real voices (slow): composites of ../shared/media clips


@pytest.mark.slow
@pytest.mark.parametrize("turns_name", ["MAN_WOMAN", "WOMAN_WOMAN", "MAN_MAN"])
def test_change_points_of_real_voices_within_half_a_second(shared_dir, turns_name) -> None:
    from mercli.features.speakers import diarize
    from tests import composites

    audio, reference = composites.voice_composite(
        getattr(composites, turns_name), shared_dir / "media"
    )
    regions = [(reference[0].start_s, reference[-1].end_s)]
    spans = diarize(audio, regions)
    assert len({s.speaker for s in spans}) == 2
    truth = [r.end_s for r in reference[:-1]]
    found = [s.end_s for s in spans[:-1]]
    assert len(found) == len(truth)
    assert np.max(np.abs(np.array(found) - truth)) <= 0.5, (found, truth)
    one, _ = composites.voice_composite(
        [composites.Turn("A", composites.WOMAN_2, 0.0, 8.0)], shared_dir / "media"
    )
    assert {s.speaker for s in diarize(one, [(0.1, 7.9)])} == {"S1"}


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory) -> tuple[Path, list]:
    from tests import composites
    from tests.conftest import SHARED

    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    media = SHARED / "media"
    out = tmp_path_factory.mktemp("composite") / "left_right.mp4"
    reference = composites.face_composite(
        media / composites.MAN_1, media / composites.WOMAN_2, composites.LEFT_RIGHT, out
    )
    return out, reference


@pytest.mark.slow
def test_each_speaker_gets_the_face_whose_mouth_moves(side_by_side) -> None:
    from mercli.features.extract import ExtractConfig, FrontEnd
    from mercli.features.speaker_faces import speaker_vision

    path, reference = side_by_side
    windows = [(r.start_s, r.end_s) for r in reference]
    speakers = ["S1" if r.speaker == "left" else "S2" for r in reference]
    visuals = speaker_vision(path, windows, speakers, FrontEnd(ExtractConfig()))
    for r, visual in zip(reference, visuals, strict=True):
        seen = [o for o in visual.observations if o is not None]
        assert len(seen) >= 0.8 * len(visual.observations)
        side = "left" if np.median([o.centre[0] for o in seen]) < 240 else "right"
        assert side == r.speaker, (r, side)


@pytest.mark.slow
def test_analyze_with_speakers_on_two_faces_taking_turns(side_by_side) -> None:
    from mercli.features.extract import ExtractConfig, FrontEnd, extract

    path, reference = side_by_side
    config = ExtractConfig(use_speakers=True)
    result = extract(path, config, FrontEnd(config))
    speakers = [u.descriptors.speaker for u in result.utterances]
    assert set(speakers) == {"S1", "S2"}
    for u in result.utterances:  # one speaker per utterance, the one of the reference
        overlap: dict[str, float] = {}
        for r in reference:
            shared = max(0.0, min(u.end_s, r.end_s) - max(u.start_s, r.start_s))
            overlap[r.speaker] = overlap.get(r.speaker, 0.0) + shared
        inside = max(overlap.values())
        assert inside >= u.end_s - u.start_s - 0.5, (u.start_s, u.end_s, u.text)
    pairs = zip(result.utterances, result.utterances[1:], strict=False)
    changes = [a.end_s for a, b in pairs if a.descriptors.speaker != b.descriptors.speaker]
    truth = [r.end_s for r in reference[:-1]]
    assert len(changes) == len(truth)
    for found, true in zip(changes, truth, strict=True):  # a pause may hold the change
        assert found <= true + 0.5
    assert all(
        (c := u.descriptors.face_coverage) is not None and c > 0.8 for u in result.utterances
    )


def test_timeline_colours_speakers(tmp_path: Path) -> None:
    from matplotlib.colors import to_rgba

    from mercli.plot import SPEAKER_COLOURS, plot_timeline

    p = [
        Prediction(0, 0.0, 2.0, "a", 1.0, 1, None, Descriptors(speaker="S1")),
        Prediction(1, 2.0, 4.0, "b", -1.0, -1, None, Descriptors(speaker="S2")),
    ]
    path = plot_timeline(FileResult("x.mp4", "ok", predictions=p, duration_s=4.0),
                         tmp_path / "t.png")  # fmt: skip
    import matplotlib.image

    pixels = matplotlib.image.imread(path)[..., :3].reshape(-1, 3)

    def count(name: str) -> int:  # the strip's spans are drawn at alpha 0.6 on white
        blended = 0.6 * np.array(to_rgba(name)[:3]) + 0.4
        return int((np.abs(pixels - blended).max(axis=1) < 0.02).sum())

    assert count(SPEAKER_COLOURS[0]) > 100 and count(SPEAKER_COLOURS[1]) > 100
    assert count("tab:purple") < 10  # the colour of speech without speakers


def test_cli_extract_carries_speakers(tmp_path: Path, labelled_front_end: list) -> None:
    from mercli.cli import cli
    from mercli.features.cache import read_features

    configs = labelled_front_end
    video, out = tmp_path / "a.mp4", tmp_path / "a.npz"
    video.write_bytes(b"fake video")
    result = CliRunner().invoke(cli, ["extract", str(video), "-o", str(out), "--speakers", "2"])
    assert result.exit_code == 0, result.output
    assert configs[-1].use_speakers and configs[-1].n_speakers == 2
    assert [u["speaker"] for u in json.loads(result.stdout)["utterances"]] == ["S1", "S2"]
    assert [u.descriptors.speaker for u in read_features(out).utterances] == ["S1", "S2"]
    plain = CliRunner().invoke(cli, ["extract", str(video), "-o", str(out), "--no-cache"])
    assert "speaker" not in json.loads(plain.stdout)["utterances"][0]
