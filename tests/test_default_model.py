"""The packaged checkpoints: what they are, that they load offline, what they read."""

from __future__ import annotations

import json

import pytest
import torch

from mercli.checkpoint import WEIGHTS_DIR, available_models, load_model

DEFAULT = WEIGHTS_DIR / "default"
TEXT_MPNET = WEIGHTS_DIR / "text-mpnet"
TEXT_MINILM = WEIGHTS_DIR / "text-minilm"
TEXT_MPNET_FROZEN = WEIGHTS_DIR / "text-mpnet-frozen"


def _meta(folder) -> dict:
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 100 * 2**20
    assert (folder / "MODEL_CARD.md").is_file()
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert set(meta["metrics"]) == {"test", "valid"}
    assert not meta["model_config"]["finetune_text_backbone"]
    return meta


def test_packaged_checkpoints_are_listed() -> None:
    names = {"default", "text-mpnet", "text-mpnet-frozen", "text-minilm"}
    assert names <= set(available_models())


def test_text_mpnet_checkpoint_reads_the_transcript_through_mpnet_top_layers_tuned() -> None:
    meta = _meta(TEXT_MPNET)
    assert meta["feature_profile"]["name"] == "text-only"
    assert meta["model_config"]["modalities"] == ["text"]
    assert meta["model_config"]["text_backbone"] == "all-mpnet-base-v2"
    assert meta["model_config"]["tune_top_layers"] == 2


def test_text_mpnet_frozen_checkpoint_keeps_the_whole_backbone_frozen() -> None:
    meta = _meta(TEXT_MPNET_FROZEN)
    assert meta["feature_profile"]["name"] == "text-only"
    assert meta["model_config"]["text_backbone"] == "all-mpnet-base-v2"
    assert meta["model_config"].get("tune_top_layers", 0) == 0


def test_text_minilm_checkpoint_is_the_first_default() -> None:
    meta = _meta(TEXT_MINILM)
    assert meta["feature_profile"]["name"] == "text-only"
    assert meta["model_config"]["modalities"] == ["text"]
    assert meta["model_config"]["text_backbone"] == "all-MiniLM-L6-v2"


def test_default_checkpoint_reads_the_transcript_and_the_voice() -> None:
    meta = _meta(DEFAULT)
    assert meta["model_config"]["modalities"] == ["text", "audio"]
    assert meta["model_config"]["text_backbone"] == "all-mpnet-base-v2"
    assert meta["feature_profile"]["name"] == "mer-raw-v1"  # audio analyze can reproduce
    # Whisper tiny.en's encoder states, 384 per 20 ms (mercli/features/whisper_states.py)
    assert meta["feature_profile"]["audio"]["extractor"] == "whisper-encoder:tiny.en"
    assert meta["model_config"]["audio"]["d_in"] == meta["feature_profile"]["audio"]["d"] == 384
    # read relative to the speaker (mercli/features/speaker_norm.py), as it was trained
    assert meta["feature_profile"]["audio"]["normalise"] == "speaker"


def _scores(name: str, texts: list[str], audio: torch.Tensor | None = None) -> torch.Tensor:
    from mercli.model.text_backbone import tokenize
    from mercli.schema import Batch

    loaded = load_model(name, "cpu")
    ids, mask = tokenize(texts, loaded.tokenizer, loaded.max_text_tokens)
    inputs, masks = {"text": ids}, {"text": mask}
    if audio is not None:
        inputs["audio"] = audio.to(torch.float64)
        masks["audio"] = torch.ones(audio.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        return loaded.model(Batch(inputs, masks)).prediction


@pytest.mark.parametrize("name", ["default", "text-mpnet", "text-mpnet-frozen", "text-minilm"])
def test_packaged_models_read_sentiment_from_text(name: str) -> None:
    positive = [
        "I absolutely loved this movie, it was wonderful.",
        "The acting was great and the story made me so happy.",
    ]
    negative = [
        "This was terrible, I hated every minute of it.",
        "What a boring, awful waste of time.",
    ]
    scores = _scores(name, positive + negative)
    assert torch.all(scores[:2] > 0.5), scores
    assert torch.all(scores[2:] < -0.5), scores


def test_the_default_model_hears_the_audio() -> None:
    text = ["Kids are talking by the door."] * 2
    d = json.loads((DEFAULT / "checkpoint.json").read_text())["feature_profile"]["audio"]["d"]
    calm, loud = (
        torch.zeros(2, 100, d),
        torch.randn(2, 100, d, generator=torch.Generator().manual_seed(0)),
    )
    without = _scores("default", text)
    with_loud = _scores("default", text, loud)
    assert not torch.allclose(with_loud, without, atol=1e-3)
    assert not torch.allclose(with_loud, _scores("default", text, calm), atol=1e-3)


def test_the_default_reads_a_transcript_without_audio_as_text_mpnet() -> None:
    # the default is text-mpnet with a voice grafted on (mer train --init text-mpnet
    # --freeze-init) and stores only what differs from it
    texts = ["It was fine, I guess.", "Never again.", "What a lovely surprise!"]
    torch.testing.assert_close(
        _scores("default", texts), _scores("text-mpnet", texts), atol=1e-5, rtol=1e-5
    )
    assert load_model("default").meta.extra["weights_base"]["checkpoint"] == "text-mpnet"


def test_the_voice_preview_name_still_loads_the_default() -> None:
    from mercli.checkpoint import resolve_checkpoint

    assert resolve_checkpoint("voice-preview") == DEFAULT


def test_a_base_that_moved_to_another_name_is_found_by_its_sha256(tmp_path) -> None:
    # packaged with --base default while the default was text-only: that base now ships as
    # text-mpnet, the same bytes, so its sha256 finds it
    import shutil

    from mercli.checkpoint import CheckpointError

    old = tmp_path / "built-on-the-old-default"
    shutil.copytree(DEFAULT, old, ignore=shutil.ignore_patterns("MODEL_CARD.md"))
    meta = json.loads((old / "checkpoint.json").read_text())
    meta["extra"]["weights_base"]["checkpoint"] = "default"
    (old / "checkpoint.json").write_text(json.dumps(meta))
    texts = ["It was fine, I guess.", "Never again."]
    audio = torch.randn(2, 50, 384, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_scores(str(old), texts, audio), _scores("default", texts, audio))

    meta["extra"]["weights_base"]["sha256"] = "0" * 64  # bytes nothing packaged holds
    (old / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"built on other weights.*package it again"):
        load_model(str(old))


@pytest.mark.slow
def test_demo_sample_through_the_default_model() -> None:
    from pathlib import Path

    from click.testing import CliRunner

    from mercli.cli import cli

    demo = Path(__file__).resolve().parents[1] / "samples" / "demo.mp4"
    result = CliRunner().invoke(cli, ["analyze", str(demo), "--json", "--no-cache"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"]["modalities"] == ["text", "audio"]
    (file,) = doc["files"]
    first, last = file["utterances"][0], file["utterances"][-1]
    assert "camera" in first["text"].lower() and first["score"] > 0.5
    assert "disappointed" in last["text"].lower() and last["score"] < -0.5
    for utterance in (first, last):  # two utterances of one voice: each read against the other
        assert utterance["modalities_read"] == ["text", "audio"]
        assert utterance["contributions"]["audio"] is not None
    assert first["presence"]["face_coverage"] > 0.8
