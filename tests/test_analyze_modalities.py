"""``mer analyze`` with a three-modality model on media that lack a modality, and the
per-modality contributions in the table, the JSON and the timeline."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mercli.cli import cli
from tests.fakes import fake_features, tiny_models


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _without_faces(path: str, video: bool) -> object:
    """Fake features of a video whose frames hold no face, or of an audio-only file."""
    features = fake_features(path)
    n = 0 if not video else 5
    features.utterances = [
        replace(
            u,
            vision=np.zeros((n, 154), np.float32),
            vision_mask=np.zeros(n, bool),
            descriptors=replace(u.descriptors, face_coverage=None if not video else 0.0),
        )
        for u in features.utterances
    ]
    features.has_video = video
    return features


@pytest.fixture(params=["video without faces", "audio only"])
def faceless(request, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    video = request.param == "video without faces"
    monkeypatch.setattr(
        "mercli.features.extract.extract",
        lambda path, config, front_end=None, sha256="": _without_faces(str(path), video),
    )
    path = tmp_path / ("talk.mp4" if video else "talk.wav")
    path.write_bytes(b"fake media")
    return path


def test_three_modality_model_scores_what_is_there_and_says_what_it_read(faceless) -> None:
    model = tiny_models()["all"]
    result = CliRunner().invoke(
        cli, ["analyze", str(faceless), "--checkpoint", str(model), "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 2
    (file,) = doc["files"]
    assert file["status"] == "ok"
    for u in file["utterances"]:
        assert u["modalities_read"] == ["text", "audio"]
        assert u["contributions"]["vision"] is None
        assert all(np.isfinite(u["contributions"][m]) for m in ("text", "audio"))
        assert -3 <= u["score"] <= 3
    table = CliRunner().invoke(cli, ["analyze", str(faceless), "--checkpoint", str(model)])
    assert table.exit_code == 0, table.output
    assert "read text 2/2, audio 2/2, vision 0/2" in " ".join(table.stdout.split())


def test_contributions_are_the_score_minus_the_score_without_the_modality() -> None:
    from mercli.checkpoint import load_model
    from mercli.pipeline import make_batch, predict

    loaded = load_model(str(tiny_models()["all"]), "cpu")
    utterances = fake_features("x.mp4").utterances
    (first, _) = predict(utterances, loaded)
    assert first.modalities_read == ("text", "audio", "vision")
    for m in ("text", "audio", "vision"):
        batch = make_batch(utterances[:1], loaded)
        batch.masks[m][:] = False
        with torch.no_grad():
            without = float(loaded.model(batch).prediction.clamp(-3, 3)[0])
        assert first.contributions[m] == pytest.approx(first.score - without, abs=1e-5)
    assert any(abs(v) > 1e-4 for v in first.contributions.values())


def test_timeline_has_separate_panels_for_score_weights_and_contributions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    from mercli.checkpoint import load_model
    from mercli.pipeline import predict
    from mercli.plot import plot_timeline
    from mercli.prediction import FileResult

    loaded = load_model(str(tiny_models()["all"]), "cpu")
    predictions = predict(_without_faces("x.mp4", True).utterances, loaded)
    result = FileResult("x.mp4", "ok", predictions=predictions, duration_s=2.0)
    labels: list[str] = []
    save = Figure.savefig

    def record(fig, *args, **kwargs):  # type: ignore[no-untyped-def]
        labels.extend(ax.get_ylabel() for ax in fig.axes)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    path = plot_timeline(result, tmp_path / "t.png", np.arange(10) / 5, np.zeros(10, bool))
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert labels[:3] == ["sentiment score", "branch\nweight", "contribution\n(score units)"]
