"""RAVDESS file names, the valence mapping, the actor split and the ``mer prepare`` layout."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mercli.data.ravdess import (
    EMOTIONS,
    SPLIT_ACTORS,
    actor_split,
    find_clips,
    parse_id,
    parse_name,
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
