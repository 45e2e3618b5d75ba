"""Starting from a checkpoint that reads fewer modalities (``mer train --init --freeze-init``)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from mercli.cli import cli
from mercli.config import LossWeights, ModelConfig, TrainConfig
from mercli.data import load_dataset
from mercli.data.synthetic import SMALL_LAYOUT, write_mmsa_pickle
from mercli.losses import total_loss
from mercli.model import EmotionModel
from mercli.model.fusion import present_layer_norm
from mercli.model.graft import GraftError, Pins, graft, grafted_config
from mercli.schema import Batch
from mercli.train import configure_optimizer, fit, make_loader
from tests.conftest import make_batch, tiny_model_config

ADDED = ("audio", "vision")


@pytest.mark.parametrize("seed", range(5))
def test_present_layer_norm_is_layer_norm_over_the_blocks_there(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(6, 4 * 5, generator=g) + 1
    blocks = torch.rand(6, 4, generator=g) < 0.6
    blocks[:, seed % 4] = True  # at least one block per row
    out = present_layer_norm(x, blocks)
    layer_norm = torch.nn.LayerNorm(4 * 5, elementwise_affine=False)
    torch.testing.assert_close(present_layer_norm(x, torch.ones_like(blocks)), layer_norm(x))
    for row in range(6):
        keep = blocks[row].repeat_interleave(5)
        kept = x[row, keep][None]
        expected = torch.nn.functional.layer_norm(kept, kept.shape[1:])[0]
        torch.testing.assert_close(out[row, keep], expected)
        assert bool((out[row, ~keep] == 0).all())


def _text_only_source() -> EmotionModel:
    source = EmotionModel(tiny_model_config(modalities=("text",)))
    with torch.no_grad():  # away from the initialisation, so that copying it is seen
        for p in source.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return source.eval()


def _without(batch: Batch, absent: tuple[str, ...]) -> Batch:
    masks = {m: x & (m not in absent) for m, x in batch.masks.items()}
    return Batch(batch.inputs, masks, batch.labels)


def test_a_frozen_graft_keeps_the_source_prediction_and_trains_the_added_modalities() -> None:
    torch.manual_seed(0)
    source = _text_only_source()
    config = grafted_config(tiny_model_config(), source.config, "source")
    assert config.modalities == ("text", "audio", "vision")
    model = EmotionModel(config)
    masks = graft(model, source.config, source.state_dict(), "source", freeze=True)
    pins = Pins(model, masks)
    optimizer = configure_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.5))
    optimizer.register_step_post_hook(pins.restore)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for step in range(4):
        batch = make_batch(config, batch_size=8, seed=step)
        out = model(batch)
        loss = total_loss(model, out, batch.labels, LossWeights()).total
        optimizer.zero_grad()
        loss.backward()
        if step == 0:  # every parameter that trains gets a gradient (timm's backward test)
            lacking = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert not lacking
        optimizer.step()
    model.eval()
    batch = make_batch(config, batch_size=6, seed=9)
    with torch.no_grad():
        expected = source(Batch({"text": batch.inputs["text"]}, {"text": batch.masks["text"]}))
        text_only = model(_without(batch, ADDED))
        with_media = model(batch)
    torch.testing.assert_close(text_only.prediction, expected.prediction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text_only.gate, expected.gate, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(with_media.prediction, expected.prediction, atol=1e-3)
    after = model.state_dict()
    for name in ("encoders.text.projection.weight", "fusion.gate.0.bias", "fusion.gate.3.weight"):
        assert name in after
        assert torch.equal(after[name], before[name]), name
    audio = "encoders.audio.projection.weight"
    assert not torch.equal(after[audio], before[audio])
    gate_in = after["fusion.gate.0.weight"]  # columns [u_t, u_a, u_v, r_t, r_a, r_v]
    width = config.d_half
    text_columns = torch.cat([gate_in[:, :width], gate_in[:, 3 * width : 4 * width]], dim=1)
    assert torch.equal(text_columns, source.state_dict()["fusion.gate.0.weight"])
    audio_columns = slice(width, 2 * width)
    before_gate = before["fusion.gate.0.weight"]
    assert not torch.equal(gate_in[:, audio_columns], before_gate[:, audio_columns])


def test_a_graft_refuses_what_does_not_fit() -> None:
    source = tiny_model_config(modalities=("text", "vision"))
    with pytest.raises(GraftError, match="reads vision, which the data lacks"):
        grafted_config(tiny_model_config(modalities=("text", "audio")), source, "ckpt")
    with pytest.raises(GraftError, match="ckpt: reads text through all-mpnet-base-v2"):
        grafted_config(
            tiny_model_config(),
            replace(source, text_backbone="all-mpnet-base-v2", finetune_text_backbone=False),
            "ckpt",
        )
    wider = EmotionModel(tiny_model_config(modalities=("text",), d_model=24))
    model = EmotionModel(tiny_model_config())
    with pytest.raises(GraftError, match=r"ckpt: its encoders\.text"):
        graft(model, wider.config, wider.state_dict(), "ckpt")


def _predictions(checkpoint: Path, data, absent: tuple[str, ...]) -> torch.Tensor:
    from mercli.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    loader = make_loader(data.test, data.collate, 16, shuffle=False, seed=0)
    with torch.no_grad():
        return torch.cat([model(_without(b, absent)).prediction for b in loader])


def test_training_with_a_frozen_init_leaves_its_text_reading_as_it_was(tmp_path: Path) -> None:
    pickle = write_mmsa_pickle(
        tmp_path / "small.pkl", "mosi", n_train=48, n_valid=16, n_test=16, layout=SMALL_LAYOUT
    )
    data = load_dataset("mosi", pickle)
    full = tiny_model_config(d_model=32, d_latent=32, d_key=8, d_mic=32).for_dataset(data.info)
    text: ModelConfig = replace(full, modalities=("text",))
    quiet = {"log": lambda s: None}
    settings = TrainConfig(batch_size=16, lr=3e-3, max_epochs=2, patience=5)
    source = fit(text, data, settings, tmp_path / "text", seed=1, **quiet).checkpoint
    grafted = grafted_config(full, text, "text")
    settings = replace(settings, init=str(source), freeze_init=True, weight_decay=0.5)
    result = fit(grafted, data, settings, tmp_path / "graft", seed=2, **quiet)
    torch.testing.assert_close(
        _predictions(result.checkpoint, data, ADDED),
        _predictions(source, data, ()),
        atol=1e-5,
        rtol=1e-5,
    )
    assert not torch.allclose(
        _predictions(result.checkpoint, data, ()), _predictions(source, data, ()), atol=1e-3
    )


def test_cli_freeze_init_needs_init(tmp_path: Path) -> None:
    pickle = write_mmsa_pickle(tmp_path / "small.pkl", "mosi", n_train=8, n_valid=4, n_test=4)
    result = CliRunner().invoke(
        cli, ["train", "--dataset", "mosi", "--data", str(pickle), "--freeze-init"]
    )
    assert result.exit_code == 2
    assert "--init" in result.output


def _package(source: Path, out: Path, *more: str) -> None:
    script = Path(__file__).parents[1] / "benchmarks" / "package_checkpoint.py"
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    command = [sys.executable, str(script), str(source), str(out), *more]
    done = subprocess.run(command, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()


def test_a_graft_packaged_on_its_base_stores_only_what_differs(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from mercli.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint

    source = _text_only_source()
    base = save_checkpoint(source, tmp_path / "base", CheckpointMeta(model_config={}))
    model = EmotionModel(grafted_config(tiny_model_config(), source.config, "base"))
    graft(model, source.config, source.state_dict(), "base", freeze=True)
    with torch.no_grad():
        model.encoders["audio"].projection.weight.add_(1.0)  # as if trained
    whole = save_checkpoint(model.eval(), tmp_path / "graft", CheckpointMeta(model_config={}))
    _package(whole, tmp_path / "packed", "--base", str(base))
    stored = load_file(tmp_path / "packed" / "weights.safetensors")
    assert "encoders.audio.projection.weight" in stored and "fusion.gate.0.weight" in stored
    assert "encoders.text.projection.weight" not in stored  # read from the base
    batch = make_batch(model.config, batch_size=5, seed=4)
    packed, _ = load_checkpoint(tmp_path / "packed", inference_only=True)
    with torch.no_grad():
        torch.testing.assert_close(packed(batch).prediction, model(batch).prediction)
    weights = base / "weights.safetensors"
    changed = load_file(weights)
    changed["encoders.text.projection.weight"] += 1e-3
    save_file(changed, weights)
    with pytest.raises(CheckpointError, match="sha256 differs"):
        load_checkpoint(tmp_path / "packed", inference_only=True)
    weights.unlink()
    with pytest.raises(CheckpointError, match="base weights are missing"):
        load_checkpoint(tmp_path / "packed", inference_only=True)
