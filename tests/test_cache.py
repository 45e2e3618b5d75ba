"""The feature and text-state caches: damaged entries are redone, unwritable ones warn."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from mercli.features.extract import ExtractConfig
from tests.fakes import fake_features


def _damage(entry: Path, how: str) -> None:
    data = entry.read_bytes()
    if how == "truncated":
        entry.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        entry.write_bytes(b"")
    elif how == "bitflip":  # inside the first array's bytes: the zip CRC no longer matches
        middle = len(data) // 3
        entry.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif how == "garbage":
        entry.write_bytes(b"PK\x03\x04" + b"\x00" * 50)


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"not really media, but content to hash")
    calls: list[str] = []

    def extract(path, config, sha256):
        calls.append(sha256)
        return fake_features(str(path), sha256)

    return media, extract, calls


@pytest.mark.parametrize("how", ["truncated", "empty", "bitflip", "garbage"])
def test_a_damaged_entry_is_removed_and_recomputed(
    counted, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    from mercli.features.cache import cache_dir, cached_extract, read_features

    media, extract, calls = counted
    config = ExtractConfig(use_faces=False)
    first, cached = cached_extract(media, config, extract)
    assert not cached and len(calls) == 1
    (entry,) = cache_dir().glob("*.npz")
    _damage(entry, how)
    with caplog.at_level(logging.WARNING):
        again, cached = cached_extract(media, config, extract)
    assert not cached and len(calls) == 2  # recomputed, not an error
    assert "damaged" in caplog.text and entry.name in caplog.text
    np.testing.assert_array_equal(again.utterances[0].audio, first.utterances[0].audio)
    read_features(entry)  # the entry was written again, whole
    _, cached = cached_extract(media, config, extract)
    assert cached and len(calls) == 2


def test_read_features_names_a_damaged_file(tmp_path: Path) -> None:
    from mercli.features.cache import FeatureFileError, read_features, write_features

    path = write_features(fake_features("x.mp4"), tmp_path / "f.npz")
    _damage(path, "truncated")
    with pytest.raises(FeatureFileError, match=r"f\.npz: damaged feature file"):
        read_features(path)


def test_an_unwritable_cache_is_a_warning(
    counted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mercli.features import cache

    media, extract, calls = counted
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir fails, even for root
    monkeypatch.setattr(cache, "_warned", set())
    with caplog.at_level(logging.WARNING):
        features, cached = cache.cached_extract(media, ExtractConfig(use_faces=False), extract)
        cache.cached_extract(media, ExtractConfig(use_faces=False), extract)
    assert not cached and features.status == "ok" and len(calls) == 2
    assert caplog.text.count("cannot write the feature cache") == 1  # once, not per file


def test_a_full_cache_is_a_warning(
    counted, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mercli.features import cache

    media, extract, _ = counted

    def full(features, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "write_features", full)
    monkeypatch.setattr(cache, "_warned", set())
    with caplog.at_level(logging.WARNING):
        features, _ = cache.cached_extract(media, ExtractConfig(use_faces=False), extract)
    assert features.status == "ok" and "No space left on device" in caplog.text


class FakeBackboneCalls:
    def __init__(self) -> None:
        self.n = 0


@pytest.mark.parametrize("how", ["truncated", "empty", "bitflip"])
def test_a_damaged_text_state_entry_is_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    from mercli.data import text_states

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls = FakeBackboneCalls()

    def encode(texts, backbone, tokenizer, max_tokens, device="cpu"):
        calls.n += 1
        return [np.full((len(t.split()) + 2, 4), i, np.float32) for i, t in enumerate(texts)]

    monkeypatch.setattr(text_states, "encode_texts", encode)
    monkeypatch.setattr("mercli.model.text_backbone.load_backbone", lambda name: None)
    monkeypatch.setattr("mercli.model.text_backbone.load_tokenizer", lambda name: None)
    texts = ["i love this", "terrible", "so happy !"]
    first = text_states.cached_states(texts, "tiny")
    (entry,) = text_states.cache_dir().rglob("*.npz")
    _damage(entry, how)
    again = text_states.cached_states(texts, "tiny")
    assert calls.n == 2
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    text_states.cached_states(texts, "tiny")
    assert calls.n == 2  # rewritten whole, now a hit


def test_text_states_are_reused_per_text_when_the_list_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercli.data import text_states

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    encoded: list[list[str]] = []

    def encode(texts, backbone, tokenizer, max_tokens, device="cpu"):
        encoded.append(list(texts))
        return [np.full((len(t), 4), len(t), np.float32) for t in texts]

    monkeypatch.setattr(text_states, "encode_texts", encode)
    monkeypatch.setattr("mercli.model.text_backbone.load_backbone", lambda name: None)
    monkeypatch.setattr("mercli.model.text_backbone.load_tokenizer", lambda name: None)
    text_states.cached_states(["good", "bad", "fine"], "tiny")
    states = text_states.cached_states(["bad", "awful", "good", "awful"], "tiny")
    assert encoded == [["good", "bad", "fine"], ["awful"]]  # only the new text, once
    assert [s.shape[0] for s in states] == [3, 5, 4, 5]
    assert all(s.dtype == np.float16 and s[0, 0] == s.shape[0] for s in states)
    text_states.cached_states(["awful", "fine"], "tiny")
    text_states.cached_states(["fine"], "tiny", max_tokens=7)  # another truncation: not shared
    assert encoded[2:] == [["fine"]]


def test_a_whole_list_entry_of_an_earlier_version_is_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercli.data import text_states

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    texts = ["so good", "bad"]
    legacy = text_states.cache_dir() / f"{text_states._legacy_key('tiny', texts, 50)}.npz"
    legacy.parent.mkdir(parents=True)
    np.savez(legacy, states=np.arange(12, dtype=np.float16).reshape(3, 4), offsets=[0, 2, 3])
    monkeypatch.setattr(text_states, "encode_texts", lambda *a, **k: pytest.fail("encoded"))
    states = text_states.cached_states(texts, "tiny", max_tokens=50)
    assert [s.shape for s in states] == [(2, 4), (1, 4)] and states[1][0, 0] == 8
    assert not legacy.exists()  # moved into a per-text shard, which now serves part of a list
    (again,) = text_states.cached_states(["bad"], "tiny", max_tokens=50)
    np.testing.assert_array_equal(again, states[1])


def test_an_unwritable_text_state_cache_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mercli.data import text_states

    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(
        text_states,
        "encode_texts",
        lambda texts, *a, **k: [np.zeros((2, 4), np.float32) for _ in texts],
    )
    monkeypatch.setattr("mercli.model.text_backbone.load_backbone", lambda name: None)
    monkeypatch.setattr("mercli.model.text_backbone.load_tokenizer", lambda name: None)
    with caplog.at_level(logging.WARNING):
        states = text_states.cached_states(["a b", "c"], "tiny")
    assert len(states) == 2 and "cannot write the text-state cache" in caplog.text
