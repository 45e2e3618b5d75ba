"""A frozen backbone's transcript states from the disk cache: a warm analyze loads no backbone
and predicts exactly what the cold run did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mercli.cli import cli
from tests.fakes import FakeExtractor, fake_features, tiny_models


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _no_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} was loaded")

    monkeypatch.setattr("mercli.model.text_backbone.load_backbone", refuse)
    monkeypatch.setattr("mercli.model.text_backbone.load_tokenizer", refuse)
    monkeypatch.setattr("mercli.model.plain_encoder.load_plain_encoder", refuse)


def test_states_fed_to_a_model_without_its_backbone_predict_as_token_ids_do() -> None:
    from mercli.checkpoint import load_model
    from mercli.pipeline import predict

    path = str(tiny_models()["all"])
    utterances = fake_features("a.mp4").utterances
    eager = load_model(path)
    lazy = load_model(path, text_states=True)
    assert lazy.model.text_backbone is None and lazy.tokenizer is None
    assert lazy.text_states is not None and eager.text_states is None
    want = [p.score for p in predict(utterances, eager)]
    got = [p.score for p in predict(utterances, lazy)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(list(lazy.text_states.folder.glob("*.npy"))) == len(utterances)


def test_a_second_run_reads_the_states_and_loads_no_backbone(monkeypatch) -> None:
    from mercli.checkpoint import load_model
    from mercli.pipeline import predict

    path = str(tiny_models()["text"])
    utterances = fake_features("a.mp4").utterances
    cold = [p.score for p in predict(utterances, load_model(path, text_states=True))]
    _no_backbone(monkeypatch)
    warm = [p.score for p in predict(utterances, load_model(path, text_states=True))]
    assert warm == cold  # the same float32 states: bit for bit


def test_use_cache_false_writes_nothing_and_a_damaged_entry_is_computed_again(caplog) -> None:
    from mercli.checkpoint import load_model

    loaded = load_model(str(tiny_models()["text"]), text_states=True)
    cache = loaded.text_states
    texts = ["i love this camera", "the screen is terrible"]
    fresh = cache.states(texts, use_cache=False)
    assert not cache.folder.exists()
    stored = cache.states(texts)
    for a, b in zip(fresh, stored, strict=True):
        np.testing.assert_array_equal(a, b)
    entry = sorted(cache.folder.glob("*.npy"))[0]
    entry.write_bytes(b"not an array")
    again = cache.states(texts)
    assert "damaged" in caplog.text
    for a, b in zip(fresh, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.load(entry).dtype == np.float32  # written again


def test_warm_analyze_equals_cold_and_never_loads_the_backbone(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr("mercli.features.extract.extract", FakeExtractor())
    video = tmp_path / "a.mp4"
    video.write_bytes(b"fake video")
    args = ["analyze", str(video), "--checkpoint", str(tiny_models()["all"]), "--json"]

    def run() -> dict:
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        for f in doc["files"]:
            f.pop("cached")
        return doc

    cold = run()
    _no_backbone(monkeypatch)
    assert run() == cold
