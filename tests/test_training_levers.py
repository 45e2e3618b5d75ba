"""Training-speed levers, off by default: the sequence-shortening front (``EncoderConfig.stride``:
shapes, masks, gradients, batch independence, checkpoints with and without the field, learning)
and the backbone's gradient checkpointing (the same gradients)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from mercli.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mercli.config import EncoderConfig, LossWeights, ModelConfig
from mercli.losses import total_loss
from mercli.model import EmotionModel
from mercli.model.encoder import ModalityEncoder
from mercli.schema import Batch
from tests.conftest import assert_rows_independent, make_batch


def strided(config: ModelConfig, stride: int = 4) -> ModelConfig:
    return replace(
        config,
        audio=replace(config.audio, stride=stride),
        vision=replace(config.vision, stride=stride),
    )


def test_the_paper_form_is_the_default() -> None:
    config = ModelConfig()
    assert all(config.encoder(m).stride == 1 for m in ("text", "audio", "vision"))


def test_strided_encoder_shapes_and_step_mask() -> None:
    encoder = ModalityEncoder(EncoderConfig(d_in=5, n_layers=1, n_heads=2, stride=4), 16, 32, 0, 0)
    mask = torch.arange(10)[None] < torch.tensor([[1], [4], [5], [10]])  # (4, 10)
    out_mask = encoder.step_mask(mask)  # windows [0, 4), [4, 8), [8, 10)
    expected = [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert out_mask.tolist() == [[bool(v) for v in row] for row in expected]
    assert encoder(torch.randn(4, 10, 5), mask).shape == (4, 3, 16)
    assert encoder.projection.kernel_size == encoder.projection.stride == (4,)


def test_every_parameter_gets_a_gradient_with_the_front_on(tiny_config: ModelConfig) -> None:
    config = strided(tiny_config)
    model = EmotionModel(config).train()
    batch = make_batch(config, batch_size=5)
    total_loss(model, model(batch), batch.labels, LossWeights()).total.backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_strided_predictions_ignore_padding_and_the_rest_of_the_batch(
    tiny_config: ModelConfig,
) -> None:
    config = strided(tiny_config, stride=3)
    model = EmotionModel(config).eval()
    batch = make_batch(config, batch_size=6, seed=1)
    together = model(batch).prediction
    assert_rows_independent(model, batch)
    changed = Batch(
        {
            m: torch.where(batch.masks[m][..., None], x, torch.randn_like(x) * 100)
            for m, x in batch.inputs.items()
        },
        batch.masks,
    )
    torch.testing.assert_close(model(changed).prediction, together)
    assert not torch.allclose(EmotionModel(tiny_config).eval()(batch).prediction, together)


def test_checkpoints_with_and_without_the_field(tiny_config: ModelConfig, tmp_path) -> None:
    config = strided(tiny_config)
    model = EmotionModel(config).eval()
    directory = save_checkpoint(model, tmp_path / "strided")
    loaded, _ = load_checkpoint(directory)
    assert loaded.config == config
    batch = make_batch(config)
    torch.testing.assert_close(loaded(batch).prediction, model(batch).prediction, rtol=0, atol=0)

    old = save_checkpoint(EmotionModel(tiny_config).eval(), tmp_path / "old")
    meta = json.loads((old / "checkpoint.json").read_text())
    for m in ("text", "audio", "vision"):
        del meta["model_config"][m]["stride"]  # written before the field existed
    (old / "checkpoint.json").write_text(json.dumps(meta))
    assert load_checkpoint(old)[0].config == tiny_config

    for stride, kernel, match in [(0, 1, "stride"), (65, 1, "stride"), (2, 3, "kernel_size")]:
        meta["model_config"]["audio"].update(stride=stride, kernel_size=kernel)
        (old / "checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(old)


def test_the_loop_learns_the_cross_modal_signal_with_the_front_on(tmp_path) -> None:
    """``test_the_loop_learns_a_cross_modal_signal`` (MOSI shapes: 375 audio, 500 vision
    steps) with audio and vision strided by 8; the label's audio and vision factors are
    averages over the valid steps, which a window of 8 steps keeps."""
    import numpy as np

    from mercli.config import TrainConfig
    from mercli.data import load_dataset
    from mercli.data.synthetic import write_mmsa_pickle
    from mercli.train import fit
    from tests.conftest import tiny_model_config

    path = write_mmsa_pickle(
        tmp_path / "mosi.pkl", "mosi", n_train=128, n_valid=32, n_test=64, seed=3
    )
    data = load_dataset("mosi", path)
    base = tiny_model_config(d_model=32, d_latent=32, d_key=8, d_mic=32, knn_k=3, dropout=0.1)
    config = strided(base.for_dataset(data.info), stride=8)
    cfg = TrainConfig(batch_size=32, lr=3e-3, max_epochs=8, patience=3)
    result = fit(config, data, cfg, tmp_path / "run", seed=0, log=lambda s: None)
    labels = np.array([data.train[i].label for i in range(len(data.train))])
    test_labels = np.array([data.test[i].label for i in range(len(data.test))])
    mean_mae = float(np.mean(np.abs(test_labels - labels.mean())))
    assert result.test_metrics["mae"] < 0.7 * mean_mae, (result.test_metrics, mean_mae)
    assert result.test_metrics["corr"] > 0.5


def test_backbone_checkpointing_gives_the_same_gradients(
    tiny_config: ModelConfig, tmp_path
) -> None:
    from tests.test_model import _tiny_bert

    bert = _tiny_bert(tmp_path / "bert")
    grads = []
    for checkpointing in (False, True):
        config = replace(tiny_config, text_backbone=bert, use_backbone_checkpointing=checkpointing)
        torch.manual_seed(0)
        model = EmotionModel(config).train()
        batch = make_batch(config, batch_size=4)
        ids = torch.randint(
            5, 100, batch.masks["text"].shape, generator=torch.Generator().manual_seed(1)
        )
        batch = Batch({**batch.inputs, "text": ids}, batch.masks, batch.labels)
        torch.manual_seed(1)  # the same dropout masks
        total_loss(model, model(batch), batch.labels, LossWeights()).total.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.text_backbone.modules())
    assert grads[0].keys() == grads[1].keys() and any("text_backbone" in n for n in grads[0])
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, atol=1e-6, rtol=1e-5, msg=name)
