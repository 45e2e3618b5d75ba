"""The packaged default checkpoint: what it is, that it loads offline, and that it reads text."""

from __future__ import annotations

import json

import pytest
import torch

from mercli.checkpoint import WEIGHTS_DIR, available_models, load_model

DEFAULT = WEIGHTS_DIR / "default"


def test_default_checkpoint_is_shipped_small_and_text_only() -> None:
    assert "default" in available_models()
    size = sum(p.stat().st_size for p in DEFAULT.iterdir())
    assert size < 100 * 2**20
    meta = json.loads((DEFAULT / "checkpoint.json").read_text())
    assert meta["feature_profile"]["name"] == "text-only"
    assert meta["model_config"]["modalities"] == ["text"]
    assert meta["model_config"]["text_backbone"] == "all-MiniLM-L6-v2"
    assert not meta["model_config"]["finetune_text_backbone"]
    assert set(meta["metrics"]) == {"test", "valid"}
    assert (DEFAULT / "MODEL_CARD.md").is_file()


def _scores(texts: list[str]) -> torch.Tensor:
    from mercli.model.text_backbone import tokenize
    from mercli.schema import Batch

    loaded = load_model("default", "cpu")
    ids, mask = tokenize(texts, loaded.tokenizer, loaded.max_text_tokens)
    with torch.no_grad():
        return loaded.model(Batch({"text": ids}, {"text": mask})).prediction


def test_default_model_reads_sentiment_from_text() -> None:
    positive = [
        "I absolutely loved this movie, it was wonderful.",
        "The acting was great and the story made me so happy.",
    ]
    negative = [
        "This was terrible, I hated every minute of it.",
        "What a boring, awful waste of time.",
    ]
    scores = _scores(positive + negative)
    assert torch.all(scores[:2] > 0.5), scores
    assert torch.all(scores[2:] < -0.5), scores


@pytest.mark.slow
def test_demo_sample_through_the_default_model() -> None:
    from pathlib import Path

    from click.testing import CliRunner

    from mercli.cli import cli

    demo = Path(__file__).resolve().parents[1] / "samples" / "demo.mp4"
    result = CliRunner().invoke(cli, ["analyze", str(demo), "--json", "--no-cache"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"]["text_only"] is True
    (file,) = doc["files"]
    first, last = file["utterances"][0], file["utterances"][-1]
    assert "camera" in first["text"].lower() and first["score"] > 0.5
    assert "disappointed" in last["text"].lower() and last["score"] < -0.5
    assert first["presence"]["face_coverage"] > 0.8
