"""RAVDESS file names, the valence mapping, the actor split and the ``mer prepare`` layout."""

from __future__ import annotations

import csv
import wave
from pathlib import Path

import numpy as np
import pytest

from mercli.data.ravdess import (
    EMOTIONS,
    SPLIT_ACTORS,
    actor_split,
    find_clips,
    parse_id,
    parse_name,
    trim_wav,
    valence,
    write_layout,
)


def test_parse_name_reads_every_field() -> None:
    clip = parse_name("/x/Actor_07/03-01-06-02-01-02-07.wav")
    assert (clip.emotion, clip.intensity, clip.sentence, clip.repetition, clip.actor) == (
        "fearful",
        "strong",
        1,
        2,
        7,
    )
    assert clip.is_male and clip.text == "Kids are talking by the door"
    assert clip.id == "Actor_07$_$03-01-06-02-01-02-07" and clip.split == "train"
    assert parse_id(clip.id) == parse_name("03-01-06-02-01-02-07")
    female = parse_name("03-01-03-01-02-01-22.wav")
    assert not female.is_male and female.text == "Dogs are sitting by the door"
    assert female.split == "test"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("03-01-06-02-01-02.wav", "not a RAVDESS name"),
        ("01-01-06-02-01-02-07.wav", "not audio-only speech"),  # an audio-video file
        ("03-02-06-02-01-02-07.wav", "not audio-only speech"),  # song
        ("03-01-09-01-01-01-07.wav", "emotion 09"),
        ("03-01-01-02-01-01-07.wav", "neutral has no strong"),
        ("03-01-02-01-01-01-25.wav", "actor 25"),
    ],
)
def test_parse_name_names_the_file_and_the_problem(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as error:
        parse_name(Path("d") / name)
    assert name in str(error.value)


def test_valence_mapping_signs_order_and_intensity() -> None:
    assert valence("neutral") == 0.0
    positive = {"happy", "calm", "surprised"}
    for emotion in set(EMOTIONS.values()) - {"neutral"}:
        normal, strong = valence(emotion, "normal"), valence(emotion, "strong")
        assert -3.0 <= strong <= 3.0
        assert (strong > 0) == (emotion in positive) and (normal > 0) == (emotion in positive)
        assert abs(strong) > abs(normal) > 0.5  # strong intensity has the larger magnitude
    # happy is the most positive, sad the most negative; calm and surprised milder than happy
    assert valence("happy", "strong") == max(valence(e, "strong") for e in EMOTIONS.values())
    assert valence("sad", "strong") == min(valence(e, "strong") for e in EMOTIONS.values())
    assert valence("happy", "strong") == pytest.approx(0.75 * (8.47 - 5.0))  # Warriner 2013
    with pytest.raises(ValueError, match="unknown emotion"):
        valence("bored")
    with pytest.raises(ValueError, match="unknown intensity"):
        valence("happy", "mild")


def test_split_is_by_actor_disjoint_complete_and_has_both_sexes() -> None:
    actors = [a for group in SPLIT_ACTORS.values() for a in group]
    assert sorted(actors) == list(range(1, 25))  # each actor in exactly one split
    for split, group in SPLIT_ACTORS.items():
        assert {a % 2 for a in group} == {0, 1}, split  # male (odd) and female (even)
        assert all(actor_split(a) == split for a in group)
    with pytest.raises(ValueError, match="actors 1-24"):
        actor_split(0)


def _corpus(root: Path) -> None:
    for actor, names in {
        1: ["03-01-01-01-01-01-01", "03-01-03-02-02-01-01"],
        18: ["03-01-04-01-01-01-18"],
        22: ["03-01-05-02-02-02-22", "03-01-05-02-02-01-22"],
    }.items():
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for i, name in enumerate(names):
            (folder / f"{name}.wav").write_bytes(f"RIFF {actor} {i}".encode())
    # a byte copy of another file, as Actor_07 holds in the real corpus
    (root / "Actor_22" / "03-01-05-02-02-02-22.wav").write_bytes(b"RIFF 22 1")


def test_find_clips_and_write_layout(tmp_path: Path) -> None:
    source = tmp_path / "audio_speech_actors_01-24"
    _corpus(source)
    found = find_clips(source)
    assert [c.stem for c in found.clips] == [
        "03-01-01-01-01-01-01",
        "03-01-03-02-02-01-01",
        "03-01-04-01-01-01-18",
        "03-01-05-02-02-01-22",
    ]
    assert [(a.name, b.name) for a, b in found.duplicates] == [
        ("03-01-05-02-02-02-22.wav", "03-01-05-02-02-01-22.wav")
    ]
    labels = write_layout(found.clips, tmp_path / "raw")
    with labels.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["video_id"], r["mode"]) for r in rows] == [
        ("Actor_01", "train"),
        ("Actor_01", "train"),
        ("Actor_18", "valid"),
        ("Actor_22", "test"),
    ]
    assert float(rows[0]["label"]) == 0.0 and float(rows[1]["label"]) > 2.0  # neutral, happy
    assert rows[2]["text"] == "Kids are talking by the door"
    link = tmp_path / "raw" / "Raw" / "Actor_22" / "03-01-05-02-02-01-22.wav"
    assert link.is_symlink() and link.read_bytes() == b"RIFF 22 1"
    write_layout(found.clips, tmp_path / "raw")  # again: links are replaced, not an error

    from mercli.data.clips import read_clips

    clips = read_clips(labels, tmp_path / "raw")  # what `mer prepare` reads finds every file
    assert all(c.path is not None for c in clips) and len(clips) == 4


def test_find_clips_refuses_other_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Actor_XX folders"):
        find_clips(tmp_path)
    wrong = tmp_path / "Actor_02"
    wrong.mkdir()
    (wrong / "03-01-01-01-01-01-03.wav").write_bytes(b"x")
    with pytest.raises(ValueError, match="actor 03 in the folder Actor_02"):
        find_clips(tmp_path)


def _write_wav(path: Path, samples: np.ndarray, rate_hz: int) -> None:
    """``samples`` float in [-1, 1], shape = (n_samples, n_channels), as 16-bit PCM."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(samples.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate_hz)
        f.writeframes(np.round(samples * 32767).astype("<i2").tobytes())


def _acted(rate_hz: int = 48000, gain: float = 0.3) -> np.ndarray:
    """1 s of silence, 1.5 s of a modulated 220 Hz tone in faint noise, 1 s of silence; stereo."""
    t = np.arange(round(3.5 * rate_hz)) / rate_hz
    voice = np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    voice[(t < 1.0) | (t >= 2.5)] = 0.0
    voice = gain * (voice + np.random.default_rng(0).normal(0, 3e-4, len(t)))
    return np.stack([voice, 0.5 * voice], axis=1)


@pytest.mark.parametrize("gain", [0.3, 2e-3])  # a quiet take (-58 dBFS) is trimmed the same
def test_trim_wav_keeps_the_speech_and_a_margin_in_the_same_format(
    tmp_path: Path, gain: float
) -> None:
    from mercli.data.ravdess import TRIM_PAD_S

    source, dest = tmp_path / "clip.wav", tmp_path / "trimmed.wav"
    _write_wav(source, _acted(gain=gain), 48000)
    kept = trim_wav(source, dest)
    assert kept.is_speech_found and kept.duration_s == pytest.approx(3.5)
    assert kept.start_s == pytest.approx(1.0 - TRIM_PAD_S, abs=0.03)
    assert kept.end_s == pytest.approx(2.5 + TRIM_PAD_S, abs=0.03)
    with wave.open(str(source)) as a, wave.open(str(dest)) as b:
        assert (b.getnchannels(), b.getsampwidth(), b.getframerate()) == (2, 2, 48000)
        start, end = round(kept.start_s * 48000), round(kept.end_s * 48000)
        assert b.getnframes() == end - start
        a.setpos(start)  # the kept samples are the source's, untouched
        assert b.readframes(b.getnframes()) == a.readframes(end - start)


def test_trim_wav_keeps_a_clip_without_speech_whole_and_names_a_bad_file(
    tmp_path: Path,
) -> None:
    source, dest = tmp_path / "silent.wav", tmp_path / "out.wav"
    _write_wav(source, np.zeros((16000, 1)), 16000)
    kept = trim_wav(source, dest)
    assert not kept.is_speech_found and (kept.start_s, kept.end_s) == (0.0, 1.0)
    assert dest.read_bytes() == source.read_bytes()
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    with pytest.raises(ValueError, match=r"bad\.wav: not a PCM wav file"):
        trim_wav(bad, dest)


def test_write_layout_with_trim_writes_clips_and_what_was_kept(tmp_path: Path) -> None:
    source = tmp_path / "audio_speech_actors_01-24" / "Actor_03"
    source.mkdir(parents=True)
    _write_wav(source / "03-01-04-02-01-01-03.wav", _acted(16000), 16000)
    clips = find_clips(source.parent).clips
    write_layout(clips, tmp_path / "raw", use_trim=True)
    clip = tmp_path / "raw" / "Raw" / "Actor_03" / "03-01-04-02-01-01-03.wav"
    assert not clip.is_symlink() and clip.stat().st_size < (source / clip.name).stat().st_size
    with (tmp_path / "raw" / "trim.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["clip_id"] == "Actor_03$_$03-01-04-02-01-01-03" and row["speech_found"] == "1"
    assert 1.5 < float(row["end_s"]) - float(row["start_s"]) < 2.0
    write_layout(clips, tmp_path / "raw")  # untrimmed again: links, and no stale trim.csv
    assert clip.is_symlink() and not (tmp_path / "raw" / "trim.csv").exists()


def _peak_hz(path: Path) -> tuple[float, float]:
    """The strongest frequency of a wav file's first channel, and its duration in seconds."""
    with wave.open(str(path)) as f:
        rate_hz, n_channels = f.getframerate(), f.getnchannels()
        samples = np.frombuffer(f.readframes(f.getnframes()), "<i2").reshape(-1, n_channels)
    spectrum = np.abs(np.fft.rfft(samples[:, 0].astype(np.float64)))
    return float(np.argmax(spectrum) * rate_hz / len(samples)), len(samples) / rate_hz


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_vtlp_scales_the_voice_and_keeps_the_duration(tmp_path: Path, factor: float) -> None:
    from mercli.data.ravdess import vtlp_wav

    source, dest = tmp_path / "clip.wav", tmp_path / "scaled.wav"
    _write_wav(source, _acted(16000), 16000)
    vtlp_wav(source, dest, factor)
    (before_hz, before_s), (after_hz, after_s) = _peak_hz(source), _peak_hz(dest)
    assert before_hz == pytest.approx(220, abs=2)
    assert after_hz == pytest.approx(220 * factor, abs=3)
    assert after_s == pytest.approx(before_s, rel=0.02)
    with wave.open(str(source)) as a, wave.open(str(dest)) as b:
        assert (a.getframerate(), a.getnchannels(), a.getsampwidth()) == (
            b.getframerate(),
            b.getnchannels(),
            b.getsampwidth(),
        )
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(ValueError, match=r"bad\.wav"):
        vtlp_wav(tmp_path / "bad.wav", dest, factor)


def test_write_layout_adds_scaled_voices_of_train_actors_only(tmp_path: Path) -> None:
    root = tmp_path / "audio_speech_actors_01-24"
    for name, gain in (("03-01-04-02-01-01-03.wav", 0.3), ("03-01-03-01-02-01-22.wav", 0.2)):
        (root / f"Actor_{name[-6:-4]}").mkdir(parents=True)  # a train actor, a test actor
        _write_wav(root / f"Actor_{name[-6:-4]}" / name, _acted(16000, gain), 16000)
    clips = find_clips(root).clips
    labels = write_layout(clips, tmp_path / "raw", use_trim=True, vtlp=(0.9, 1.1))
    with labels.open() as f:
        rows = [(r["video_id"], r["clip_id"], r["mode"], r["label"]) for r in csv.DictReader(f)]
    label = f"{clips[0].valence:.4f}"
    assert sorted(rows) == sorted(
        [
            ("Actor_03", "03-01-04-02-01-01-03", "train", label),
            ("Actor_22", "03-01-03-01-02-01-22", "test", f"{clips[1].valence:.4f}"),
            ("Actor_03-vtlp0.9", "03-01-04-02-01-01-03", "train", label),
            ("Actor_03-vtlp1.1", "03-01-04-02-01-01-03", "train", label),
        ]
    )
    scaled = tmp_path / "raw" / "Raw" / "Actor_03-vtlp1.1" / "03-01-04-02-01-01-03.wav"
    assert _peak_hz(scaled)[0] == pytest.approx(242, abs=3)
    assert 1.5 < _peak_hz(scaled)[1] < 2.0  # trimmed to the speech, as the original
    with (tmp_path / "raw" / "trim.csv").open() as f:
        trimmed = {r["clip_id"] for r in csv.DictReader(f)}
    assert "Actor_03-vtlp0.9$_$03-01-04-02-01-01-03" in trimmed and len(trimmed) == 4
    from mercli.data.clips import read_clips

    assert all(c.path is not None for c in read_clips(labels, tmp_path / "raw"))
    assert {parse_id(f"{v}$_${c}").actor for v, c, _, _ in rows} == {3, 22}
