"""A model that reads the voice relative to the speaker (``AudioProfile.normalise ==
"speaker"``): its profile, ``analyze``'s per-file and per-speaker reading, a lone utterance
scored without its voice, ``mer prepare --voice-relative`` and a live session's running
statistics."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mercli.cli import cli
from mercli.features.profile import (
    SPEAKER_NORM,
    FeatureProfile,
    ProfileError,
    check_profile,
    raw_profile,
)
from mercli.features.speaker_norm import RunningStats, normalise, relative
from tests.fakes import fake_features, tiny_models


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def loaded():
    from mercli.checkpoint import load_model

    return load_model(str(tiny_models()["relative"]))


def test_a_speaker_with_one_utterance_keeps_no_frames() -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(n, 3)).astype(np.float32) for n in (10, 12, 8, 0)]
    out = relative(arrays, ["a", "a", "b", "b"])  # b's second utterance has no frames
    np.testing.assert_array_equal(
        np.concatenate(out[:2]), np.concatenate(normalise(arrays[:2], [0, 0]))
    )
    assert out[2].shape == (0, 3) and out[3].shape == (0, 3)
    assert [o.shape for o in relative(arrays, ["a", "a", "b", "b"], min_utterances=1)][2] == (8, 3)


def test_running_statistics_end_where_the_whole_speakers_do() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.normal(2.0, 3.0, (n, 4)).astype(np.float32) for n in (15, 0, 30, 22)]
    running = RunningStats()
    running.add(arrays[0])
    assert running.relative(arrays[0]).shape == (0, 4)  # one utterance: nothing to read against
    for a in arrays[1:]:
        running.add(a)
    assert running.n_utterances == 3 and running.n_frames == 67
    whole = normalise(arrays, ["s"] * 4)
    for a, w in zip(arrays, whole, strict=True):
        np.testing.assert_allclose(running.relative(a), w, atol=1e-4)


def test_the_profile_records_the_normalisation_and_mer_refuses_one_it_does_not_know() -> None:
    profile = raw_profile("bert").with_modalities(("text", "audio"))
    profile = replace(profile, audio=replace(profile.audio, normalise=SPEAKER_NORM))
    stored = profile.to_dict()
    assert stored["audio"]["normalise"] == "speaker"
    assert FeatureProfile.from_dict(stored) == profile
    check_profile(profile)
    assert "normalise" not in raw_profile("bert").to_dict()["audio"]
    stored["audio"]["normalise"] = "channel"
    with pytest.raises(ProfileError, match="audio normalise 'channel'"):
        check_profile(FeatureProfile.from_dict(stored))
    stored["audio"]["normalise"] = 3
    with pytest.raises(ProfileError, match="normalise must be of type str"):
        FeatureProfile.from_dict(stored)


def _offset(u, gain: float, shift: float):
    return replace(u, audio=(u.audio * gain + shift).astype(np.float32))


def test_a_speakers_level_and_gain_do_not_move_the_score(loaded) -> None:
    """What the voice says is how each utterance departs from the speaker's others, so the same
    speech louder and brighter scores the same; a model reading frames as they are moves."""
    from mercli.checkpoint import load_model
    from mercli.pipeline import predict

    utterances = fake_features("a.mp4").utterances
    louder = [_offset(u, 2.5, 1.5) for u in utterances]
    before, after = predict(utterances, loaded), predict(louder, loaded)
    assert all(p.modalities_read == ("text", "audio") for p in before)
    np.testing.assert_allclose([p.score for p in before], [p.score for p in after], atol=1e-3)
    plain = load_model(str(tiny_models()["all"]))
    moved = [p.score for p in predict(louder, plain)]
    assert not np.allclose([p.score for p in predict(utterances, plain)], moved, atol=1e-3)
    # the voice-emotion descriptor and the batching read the utterances' own frames
    assert [p.descriptors for p in before] == [
        p.descriptors for p in predict(utterances, loaded, batch_size=1)
    ]


def test_each_speaker_is_read_against_their_own_utterances(loaded) -> None:
    from mercli.pipeline import predict

    two, one = fake_features("a.mp4").utterances, fake_features("b.mp4").utterances[:1]
    with_speakers = [replace(u, descriptors=replace(u.descriptors, speaker="S1")) for u in two]
    lone = replace(
        _offset(one[0], 3.0, -2.0), descriptors=replace(one[0].descriptors, speaker="S2")
    )
    *pair, alone = predict([*with_speakers, lone], loaded)
    assert [p.score for p in pair] == pytest.approx(
        [p.score for p in predict(two, loaded)], abs=1e-5
    )
    assert alone.modalities_read == ("text",) and alone.contributions["audio"] is None
    # the caller may say who spoke instead
    *_, together = predict([*two, lone], loaded, speakers=[0, 0, 0])
    assert together.modalities_read == ("text", "audio")


def test_analyze_says_when_a_lone_utterance_was_scored_without_its_voice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def extract(path, config, front_end=None, sha256=""):
        features = fake_features(str(path), sha256)
        if Path(path).name.startswith("short"):
            features.utterances = features.utterances[:1]
        return features

    monkeypatch.setattr("mercli.features.extract.extract", extract)
    talk, short = tmp_path / "talk.mp4", tmp_path / "short.mp4"
    talk.write_bytes(b"fake talk")
    short.write_bytes(b"fake short")
    model = str(tiny_models()["relative"])
    result = CliRunner().invoke(
        cli, ["analyze", str(talk), str(short), "--checkpoint", model, "--json"]
    )
    assert result.exit_code == 0, result.output
    files = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    assert [u["modalities_read"] for u in files["talk.mp4"]["utterances"]] == [
        ["text", "audio"]
    ] * 2
    (lone,) = files["short.mp4"]["utterances"]
    assert lone["modalities_read"] == ["text"] and lone["contributions"]["audio"] is None
    assert "short.mp4: the voice of 1 utterance(s) not read" in " ".join(result.stderr.split())
    assert "talk.mp4: the voice" not in result.stderr


def test_prepare_voice_relative_standardises_each_video_and_records_it(
    tmp_path: Path, monkeypatch
) -> None:
    from tests.fakes import tiny_backbone
    from tests.test_prepare import fake_window, make_raw_dir, run_prepare

    raw, labels = make_raw_dir(tmp_path)
    backbone = str(tiny_backbone(tmp_path / "bert"))
    monkeypatch.setattr("mercli.features.extract.window_vision", fake_window)
    plain, rel = tmp_path / "plain.pkl", tmp_path / "relative.pkl"
    assert run_prepare(raw, labels, plain, "--text-backbone", backbone).exit_code == 0
    result = run_prepare(raw, labels, rel, "--text-backbone", backbone, "--voice-relative")
    assert result.exit_code == 0, result.output
    before, after = (pickle.loads(p.read_bytes()) for p in (plain, rel))
    assert after["feature_profile"]["audio"]["normalise"] == "speaker"
    assert "normalise" not in before["feature_profile"]["audio"]

    def clips(data):
        return {
            str(i): data[s]["audio"][k, : data[s]["audio_lengths"][k]]
            for s in ("train", "valid", "test")
            for k, i in enumerate(data[s]["id"])
        }

    raw_audio, rel_audio = clips(before), clips(after)
    ids = sorted(raw_audio)
    videos = [i.split("$_$")[0] for i in ids]
    expected = relative([raw_audio[i] for i in ids], videos)
    for i, e in zip(ids, expected, strict=True):
        np.testing.assert_allclose(rel_audio[i], e, atol=1e-5)
        assert len(e)  # every prepared video here has two clips with audio


def test_a_live_session_reads_the_voice_against_its_speech_so_far(loaded) -> None:
    from tests.test_live import fed, session_for
    from tests.test_vad import SPANS, bursts

    session = session_for(loaded, early=None)
    out = fed(session, bursts(SPANS, 6.0), 1600)
    assert len(out) >= 2
    assert out[0].prediction.modalities_read == ("text",)
    assert all(u.prediction.modalities_read == ("text", "audio") for u in out[1:])
    assert session.voice.n_utterances == len(out)


def test_same_speaker_reads_short_files_against_each_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercli.checkpoint import load_model
    from mercli.pipeline import predict

    def extract(path, config, front_end=None, sha256=""):
        features = fake_features(str(path), sha256)
        k = int(Path(path).stem[-1])
        features.utterances = [_offset(features.utterances[k], 1.0, 0.5 * k)]
        return features

    monkeypatch.setattr("mercli.features.extract.extract", extract)
    paths = [tmp_path / f"clip{k}.wav" for k in (0, 1)]
    for p in paths:
        p.write_bytes(p.name.encode())
    model = str(tiny_models()["relative"])
    args = ["analyze", *map(str, paths), "--checkpoint", model, "--json"]
    apart = json.loads(CliRunner().invoke(cli, args).stdout)["files"]
    assert [f["utterances"][0]["modalities_read"] for f in apart] == [["text"], ["text"]]
    result = CliRunner().invoke(cli, [*args, "--same-speaker"])
    assert result.exit_code == 0, result.output
    together = json.loads(result.stdout)["files"]
    for i, p in enumerate(paths, start=1):  # each file's line, as when analysed one by one
        assert f"[{i}/2] {p}: ok, 1 utterances in" in " ".join(result.stderr.split())
    assert [f["path"] for f in together] == [str(p) for p in paths]
    assert [f["utterances"][0]["index"] for f in together] == [0, 0]
    utterances = [extract(p, None).utterances[0] for p in paths]
    expected = predict(utterances, load_model(model), speakers=[0, 0])
    for f, p in zip(together, expected, strict=True):
        assert f["utterances"][0]["modalities_read"] == ["text", "audio"]
        assert f["utterances"][0]["score"] == pytest.approx(p.score, abs=1e-4)
    refused = CliRunner().invoke(cli, [*args, "--same-speaker", "--workers", "2"])
    assert refused.exit_code == 2 and "--same-speaker" in refused.output
