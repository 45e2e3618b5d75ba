"""Whisper's encoder states as the audio input: windows, profiles, and prepare -> train ->
analyze with them (the real tiny.en encoder, carried by a dependency; synthetic media)."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mercli.cli import cli
from mercli.features import whisper_states
from mercli.features.extract import ExtractConfig, FrontEnd
from mercli.features.profile import (
    AUDIO_EXTRACTOR,
    WHISPER_AUDIO_EXTRACTOR,
    ProfileError,
    check_profile,
    raw_profile,
)
from mercli.features.whisper_states import (
    D_STATES,
    STATES_VERSION,
    WINDOW_S,
    encoder_states,
    load_states_model,
    window_s,
)

RATE = 16_000


@pytest.fixture(scope="module")
def states_model():
    return load_states_model()


def voiced(seconds: float, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A vowel-like buzz (harmonics of a gliding f0) under an amplitude envelope, plus noise."""
    t = np.arange(round(seconds * RATE)) / RATE
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (0.1 * wave * envelope + noise).astype(np.float32)


def test_one_row_per_20_ms_and_each_15_s_piece_encoded_alone(states_model) -> None:
    audio = voiced(17.3)
    states = encoder_states(audio, states_model)
    assert states.shape == (865, D_STATES) and states.dtype == np.float32
    assert np.all(np.isfinite(states))
    first = encoder_states(audio[: 15 * RATE], states_model)
    rest = encoder_states(audio[15 * RATE :], states_model)
    assert first.shape == (750, D_STATES) and rest.shape == (115, D_STATES)
    np.testing.assert_array_equal(states, np.concatenate([first, rest]))


def test_each_piece_is_encoded_in_a_window_just_longer_than_itself(
    states_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [window_s(d) for d in (0.3, 2.0, 3.2, 4.0, 9.5, 12.9, 13.0, 14.5, 15.0)] == [
        6.0,
        6.0,
        6.0,
        6.0,
        12.0,
        15.0,
        15.0,
        15.0,
        15.0,
    ]
    assert all(window_s(d) - d >= 2.0 for d in np.linspace(0.01, 13.0, 200))
    assert all(window_s(d) <= WINDOW_S for d in np.linspace(0.01, 15.0, 200))
    # the window is padding: states of the same audio in a 15 s window differ a little
    audio = voiced(3.0)
    fitted = encoder_states(audio, states_model)
    monkeypatch.setattr(whisper_states, "window_s", lambda duration_s: WINDOW_S)
    wide = encoder_states(audio, states_model)
    assert wide.shape == fitted.shape
    cosine = (
        np.sum(fitted * wide, 1) / np.linalg.norm(fitted, axis=1) / np.linalg.norm(wide, axis=1)
    )
    assert 0.9 < cosine.mean() < 0.99999


def test_a_window_is_its_samples_cut_out(states_model) -> None:
    audio = voiced(4.0)
    window = encoder_states(audio, states_model, start_s=1.0, end_s=2.5)
    np.testing.assert_array_equal(window, encoder_states(audio[RATE:40_000], states_model))
    assert window.shape == (75, D_STATES)
    assert encoder_states(audio, states_model, 3.0, 9.0).shape == (50, D_STATES)  # clipped
    assert encoder_states(audio, states_model, 2.0, 2.0).shape == (0, D_STATES)


def test_the_states_follow_the_voice(states_model) -> None:
    low = encoder_states(voiced(2.0, f0=110.0), states_model)
    high = encoder_states(voiced(2.0, f0=260.0, seed=1), states_model)
    silence = encoder_states(np.zeros(2 * RATE, np.float32), states_model)
    assert low.shape == high.shape == silence.shape == (100, D_STATES)
    mean_gap = np.linalg.norm(low.mean(0) - high.mean(0))
    assert mean_gap > 0.1 * np.linalg.norm(low.mean(0))
    assert np.linalg.norm(low.mean(0) - silence.mean(0)) > mean_gap / 4


def test_profile_config_and_cache_key_name_the_extractor() -> None:
    whisper = raw_profile("backbone", audio_extractor=WHISPER_AUDIO_EXTRACTOR)
    assert whisper.audio is not None and whisper.audio.d == D_STATES == 384
    assert whisper.audio.hop_s == 0.02
    check_profile(whisper)
    wrong_width = replace(whisper, audio=replace(whisper.audio, d=35))
    with pytest.raises(ProfileError, match="audio d 35"):
        check_profile(wrong_width)
    with pytest.raises(ValueError, match="unknown audio extractor"):
        raw_profile("backbone", audio_extractor="opensmile")
    with pytest.raises(ValueError, match="audio_extractor"):
        ExtractConfig(audio_extractor="opensmile")

    assert ExtractConfig.for_profile(whisper).audio_extractor == WHISPER_AUDIO_EXTRACTOR
    no_audio = whisper.with_modalities(("text", "vision"))
    assert ExtractConfig.for_profile(no_audio).audio_extractor == AUDIO_EXTRACTOR
    assert ExtractConfig.for_profile(raw_profile("b")).audio_extractor == AUDIO_EXTRACTOR

    plain = ExtractConfig().cache_fields()
    assert "audio_extractor" not in plain  # keys made before the option stay valid
    states = ExtractConfig(audio_extractor=WHISPER_AUDIO_EXTRACTOR).cache_fields()
    assert states.pop("audio_extractor") == WHISPER_AUDIO_EXTRACTOR
    assert states.pop("states_version") == STATES_VERSION == 2 and states == plain


def test_the_transcribers_whisper_is_reused(states_model) -> None:
    from mercli.features.asr_ct2 import Ct2Transcriber

    config = ExtractConfig(asr="ct2", audio_extractor=WHISPER_AUDIO_EXTRACTOR)
    front_end = FrontEnd(config, transcriber=Ct2Transcriber(states_model))
    states = front_end.audio_states(voiced(1.0), 0.0, 1.0)
    assert front_end.states_model is states_model and states.shape == (50, D_STATES)


def test_prepare_train_and_analyze_with_whisper_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes import CountingTranscriber, tiny_backbone
    from tests.test_prepare import make_raw_dir, run_prepare, train_one_epoch

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    raw, labels = make_raw_dir(tmp_path)
    backbone = tiny_backbone(tmp_path / "bert")
    out = tmp_path / "states.pkl"
    result = run_prepare(
        raw, labels, out, "--text-backbone", str(backbone), "--audio-features", "whisper",
        "--no-faces",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with out.open("rb") as f:
        data = pickle.load(f)
    assert data["feature_profile"]["audio"] == {
        "d": 384,
        "extractor": WHISPER_AUDIO_EXTRACTOR,
        "hop_s": 0.02,
    }
    train = data["train"]
    assert train["audio"].shape[2] == 384
    # clips of 1.0-1.3 s: one state per 20 ms of each (the m4a's length is its own)
    assert set(train["audio_lengths"]) <= set(range(49, 67)) and train["audio"].any()

    checkpoint = train_one_epoch(out, tmp_path / "run")
    meta = json.loads((checkpoint / "checkpoint.json").read_text())
    assert meta["feature_profile"]["audio"]["extractor"] == WHISPER_AUDIO_EXTRACTOR
    config = json.loads((tmp_path / "run" / "results.json").read_text())["model_config"]
    assert config["audio"]["d_in"] == 384

    transcriber = CountingTranscriber()
    monkeypatch.setattr("mercli.features.extract.load_transcriber", lambda config: transcriber)
    clip = raw / "Raw" / "vidA" / "1.mp4"
    result = CliRunner().invoke(
        cli,
        ["analyze", str(clip), "--checkpoint", str(checkpoint), "--json", "--device", "cpu"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    utterances = json.loads(result.stdout)["files"][0]["utterances"]
    assert len(utterances) == 2 and transcriber.calls == 1
    within, past = utterances  # the fake's second utterance lies past the 1 s clip's audio
    assert within["modalities_read"] == ["text", "audio"], within
    assert within["contributions"]["audio"] is not None
    assert past["modalities_read"] == ["text"] and past["contributions"]["audio"] is None
