"""A frozen backbone whose top layers are tuned: lower part cached, top layers trained."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from mercli.checkpoint import (
    CheckpointMeta,
    load_checkpoint,
    load_model,
    save_checkpoint,
    training_only,
)
from mercli.cli import cli
from mercli.config import EncoderConfig, TrainConfig
from mercli.data import text_states
from mercli.model import EmotionModel
from mercli.model.plain_encoder import load_plain_encoder, load_split_encoder
from mercli.model.text_backbone import state_layers, tokenize
from mercli.pipeline import _padded
from mercli.schema import Batch
from mercli.train import configure_optimizer
from tests.conftest import tiny_model_config
from tests.fakes import tiny_backbone, tiny_mpnet

TEXTS = ["i love this camera", "but the screen is terrible so", "", "camera camera happy !"]


def _backbone(tmp_path: Path, family: str) -> Path:
    torch.manual_seed(0)
    if family == "mpnet":
        return tiny_mpnet(tmp_path / "mpnet", n_layers=3)
    folder = tiny_backbone(tmp_path / "bert")  # one layer: its top layer is all of it
    return folder


def _config(backbone: Path, k: int):
    return tiny_model_config(
        text=EncoderConfig(d_in=16, n_layers=1, n_heads=2),
        modalities=("text",),
        text_backbone=str(backbone),
        finetune_text_backbone=False,
        tune_top_layers=k,
    )


@pytest.mark.parametrize(("family", "k"), [("mpnet", 1), ("mpnet", 2), ("mpnet", 3), ("bert", 1)])
def test_lower_part_then_top_layers_equal_the_whole_encoder(
    tmp_path: Path, family: str, k: int
) -> None:
    folder = _backbone(tmp_path, family)
    whole = load_plain_encoder(folder)
    split = load_split_encoder(folder, k)
    assert whole is not None and split is not None
    (encoder, tokenizer), (lower, _, top) = whole, split
    assert len(lower.layers) + len(top.layers) == len(encoder.layers)
    ids, mask = tokenize(TEXTS, tokenizer, 50)
    with torch.no_grad():
        want = encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        states = lower(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        got = top(states, mask)
        # as from the cache: each text's valid tokens only, padded again with zeros
        cached = [states[i, : int(m.sum())].numpy() for i, m in enumerate(mask)]
        x, again_mask = _padded(cached, states.shape[-1])
        again = top(torch.from_numpy(x), torch.from_numpy(again_mask))
    valid = mask[..., None]
    torch.testing.assert_close(got * valid, want * valid, atol=1e-5, rtol=0)
    torch.testing.assert_close(again * valid, want * valid, atol=1e-5, rtol=0)
    # the top layers are copies: tuning them leaves the frozen lower part as it was
    assert all(not p.requires_grad for p in lower.parameters())
    assert {id(p) for p in top.parameters()}.isdisjoint(id(p) for p in lower.parameters())


def test_every_tuned_parameter_gets_a_gradient_at_the_backbone_rate(tmp_path: Path) -> None:
    folder = _backbone(tmp_path, "mpnet")
    model = EmotionModel(_config(folder, 2)).train()
    assert model.text_top is not None and model.text_backbone is not None
    loaded = load_plain_encoder(folder)
    assert loaded is not None
    ids, mask = tokenize(TEXTS, loaded[1], 50)
    out = model(Batch({"text": ids}, {"text": mask}, torch.tensor([1.0, -2.0, 0.0, 2.5])))
    ((out.prediction - out.prediction.detach().mean()) ** 2).sum().backward()
    tuned = dict(model.text_top.named_parameters())
    assert "relative_bias.weight" in tuned and len(model.text_top.layers) == 2
    for name, p in tuned.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.text_backbone.parameters())
    training = TrainConfig(lr=1e-3, text_lr=1e-5)
    rates = {id(p): g["lr"] for g in configure_optimizer(model, training).param_groups
             for p in g["params"]}  # fmt: skip
    assert {rates[id(p)] for p in tuned.values()} == {1e-5}
    assert not any(id(p) in rates for p in model.text_backbone.parameters())
    assert {rates[id(p)] for p in model.fusion.parameters()} == {1e-3}


def test_a_checkpoint_round_trips_through_tokens_and_through_cached_states(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = _backbone(tmp_path, "mpnet")
    model = EmotionModel(_config(folder, 2)).eval()
    assert model.text_top is not None
    with torch.no_grad():  # as after training: the top layers no longer the backbone's
        for p in model.text_top.parameters():
            p.add_(0.05 * torch.randn_like(p))
    directory = save_checkpoint(model, tmp_path / "ckpt", CheckpointMeta(model_config={}))
    loaded = load_plain_encoder(folder)
    assert loaded is not None
    ids, mask = tokenize(TEXTS, loaded[1], 50)
    with torch.no_grad():
        want = model(Batch({"text": ids}, {"text": mask})).prediction
        again, _ = load_checkpoint(directory)
        torch.testing.assert_close(again(Batch({"text": ids}, {"text": mask})).prediction, want)
        # `mer analyze`: the lower part's states from the cache, the top layers in the model
        inference = load_model(directory, text_states=True)
        assert inference.text_states is not None and inference.text_states.layers == 1
        states = inference.text_states.states(TEXTS)
        x, states_mask = _padded(states, 16)
        batch = Batch({"text": torch.from_numpy(x)}, {"text": torch.from_numpy(states_mask)})
        got = inference.model(batch).prediction
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    stored = set(again.state_dict()) - {k for k in again.state_dict() if "text_backbone" in k}
    from safetensors import safe_open

    with safe_open(str(directory / "weights.safetensors"), framework="pt") as f:
        assert set(f.keys()) == stored  # the tuned layers, not the frozen lower part
    assert any(k.startswith("text_top.layers.1.") for k in stored)


def test_the_cache_key_names_the_layer_and_keeps_the_last_layer_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    text = "so happy"
    earlier = hashlib.sha256(f"tiny\0{50}\0{text}".encode()).hexdigest()[:32]
    assert text_states.text_key("tiny", 50, text) == earlier  # existing caches stay valid
    keys = {text_states.text_key("tiny", 50, text, layers) for layers in (None, 0, 1, 2)}
    assert len(keys) == 4
    folder = _backbone(tmp_path, "mpnet")
    assert state_layers(str(folder), 0) is None and state_layers(str(folder), 2) == 1
    with pytest.raises(ValueError, match="3 layers"):
        state_layers(str(folder), 4)
    lower = text_states.cached_states(TEXTS, str(folder), layers=1)
    shards = sorted(p.parent.name for p in text_states.cache_dir().rglob("*.npz"))
    split = load_split_encoder(folder, 2)
    assert split is not None
    ids, mask = tokenize(TEXTS, split[1], 50)
    with torch.no_grad():
        want = split[0](input_ids=ids, attention_mask=mask.long()).last_hidden_state
    for i, states in enumerate(lower):
        assert states.dtype == np.float16
        np.testing.assert_allclose(states, want[i, : int(mask[i].sum())].numpy(), atol=2e-3)
    text_states.cached_states(TEXTS, str(folder))  # the last layer: another shard folder
    assert len(set(p.parent.name for p in text_states.cache_dir().rglob("*.npz"))) == 2
    assert len(shards) == 1


def test_config_and_cli_refuse_tuning_top_layers_of_a_finetuned_backbone(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frozen backbone"):
        replace(tiny_model_config(), tune_top_layers=1)
    with pytest.raises(ValueError, match=">= 0"):
        tiny_model_config(finetune_text_backbone=False, tune_top_layers=-1)
    (tmp_path / "label.csv").write_text("video_id,clip_id,text,label,mode\n")
    result = CliRunner().invoke(
        cli,
        [
            *("train", "--dataset", "mosi", "--data", str(tmp_path / "label.csv")),
            *("--finetune-text", "--tune-top-layers", "1", "--out", str(tmp_path / "run")),
        ],
    )
    assert result.exit_code != 0 and "--tune-top-layers" in result.output


def test_cli_trains_the_top_layers_on_transcripts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = _backbone(tmp_path, "mpnet")
    rows = ["video_id,clip_id,text,label,mode"]
    for split in ("train", "valid", "test"):
        for i in range(8):
            text, label = ("i love this camera", 2.0) if i % 2 else ("the screen is terrible", -2.0)
            rows.append(f"v{split},{i},{text},{label},{split}")
    (tmp_path / "label.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            *("train", "--dataset", "mosi", "--data", str(tmp_path / "label.csv")),
            *("--text-backbone", str(folder), "--tune-top-layers", "2"),
            *("--epochs", "1", "--seed", "1", "--batch-size", "8", "--out", str(out), "--json"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "results.json").read_text())["model_config"]
    assert config["tune_top_layers"] == 2 and config["finetune_text_backbone"] is False
    # the lower part's states were cached (layer 1 of 3), not the last layer's
    layer_one = text_states._shard_dir(str(folder), 50, 1)
    assert list(layer_one.glob("*.npz")) and not text_states._shard_dir(str(folder), 50).exists()
    best, _ = load_checkpoint(out / "seed_1" / "best")
    initial = load_split_encoder(folder, 2)
    assert initial is not None and best.text_top is not None
    moved = [
        not torch.equal(p, q)
        for p, q in zip(best.text_top.parameters(), initial[2].parameters(), strict=True)
    ]
    assert any(moved)  # trained, and saved with the checkpoint


def test_a_packaged_checkpoint_stores_the_tuned_layers_as_float16(tmp_path: Path) -> None:
    folder = _backbone(tmp_path, "mpnet")
    model = EmotionModel(_config(folder, 2)).eval()
    directory = save_checkpoint(model, tmp_path / "ckpt", CheckpointMeta(model_config={}))
    out = tmp_path / "packaged"
    script = Path(__file__).parents[1] / "benchmarks" / "package_checkpoint.py"
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    done = subprocess.run(
        [sys.executable, str(script), str(directory), str(out)], env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()
    source, packed = (
        load_file(directory / "weights.safetensors"),
        load_file(out / "weights.safetensors"),
    )
    assert set(packed) == {k for k in source if not training_only(k)}
    assert any(training_only(k) for k in source)
    for key, value in packed.items():  # the tuned layers halved, all else as it was
        if key.startswith("text_top.") and source[key].is_floating_point():
            assert value.dtype == torch.float16, key
            torch.testing.assert_close(value, source[key].half(), atol=0, rtol=0)
        else:
            assert value.dtype == source[key].dtype and torch.equal(value, source[key]), key
    assert any(k.startswith("text_top.") for k in packed)
    assert (out / "weights.safetensors").stat().st_size < (
        directory / "weights.safetensors"
    ).stat().st_size
    loaded = load_plain_encoder(folder)
    assert loaded is not None
    ids, mask = tokenize(TEXTS, loaded[1], 50)
    again, _ = load_checkpoint(out, inference_only=True)  # as float32
    assert all(p.dtype == torch.float32 for p in again.parameters())
    with torch.no_grad():
        want = model(Batch({"text": ids}, {"text": mask})).prediction
        got = again(Batch({"text": ids}, {"text": mask})).prediction
    torch.testing.assert_close(got, want, atol=1e-2, rtol=0)
