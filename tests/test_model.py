"""Model health: shapes, batch independence, gradients, ablations, checkpoints."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest
import torch

from mercli.checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from mercli.config import ABLATIONS, LossWeights, ModelConfig, apply_ablation, from_name
from mercli.features.profile import FeatureProfile, TextProfile
from mercli.losses import total_loss
from mercli.model import EmotionModel
from mercli.schema import Batch
from tests.conftest import assert_rows_independent, make_batch


def _loss(model: EmotionModel, batch: Batch, weights: LossWeights | None = None) -> torch.Tensor:
    return total_loss(model, model(batch), batch.labels, weights or LossWeights()).total


def test_output_shapes(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).eval()
    out = model(make_batch(tiny_config, batch_size=3))
    assert out.prediction.shape == (3,)
    assert out.shared_branch.shape == out.specific_branch.shape == out.gate.shape == (3,)
    assert torch.all((out.gate > 0) & (out.gate < 1))
    expected = out.gate * out.shared_branch + (1 - out.gate) * out.specific_branch
    torch.testing.assert_close(out.prediction, expected)
    assert set(out.shared) == set(out.specific) == {"text", "audio", "vision"}
    assert out.shared["audio"].shape == (3, tiny_config.d_half)
    assert out.features["vision"].alpha.shape == (3, tiny_config.n_mask_groups)


def test_prediction_does_not_depend_on_the_rest_of_the_batch(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).eval()
    assert_rows_independent(model, make_batch(tiny_config, batch_size=6, seed=1))


def test_padding_content_is_ignored(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).eval()
    batch = make_batch(tiny_config, seed=2)
    changed = Batch(
        {
            m: torch.where(batch.masks[m][..., None], x, torch.randn_like(x) * 100)
            for m, x in batch.inputs.items()
        },
        batch.masks,
    )
    torch.testing.assert_close(model(batch).prediction, model(changed).prediction)


def test_every_parameter_gets_a_gradient(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).train()
    _loss(model, make_batch(tiny_config, batch_size=5)).backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.any())
    ]
    assert missing == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "steps", [{"text": 1, "audio": 1, "vision": 1}, {"text": 2, "audio": 3, "vision": 2}]
)
def test_no_nan_on_very_short_sequences_and_batch_of_two(
    tiny_config: ModelConfig, steps: dict[str, int]
) -> None:
    model = EmotionModel(tiny_config).train()
    batch = make_batch(tiny_config, batch_size=2, steps=steps)
    loss = _loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_no_nan_when_one_modality_is_fully_masked(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).train()
    batch = make_batch(tiny_config, batch_size=4)
    batch.masks["vision"][:] = False  # no face in any frame
    batch.masks["audio"][1] = False  # one utterance without audio
    loss = _loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    assert torch.isfinite(model(batch).prediction).all()


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_each_ablation_runs_forward_and_backward(tiny_config: ModelConfig, ablation: str) -> None:
    preset = apply_ablation(replace(from_name("mosi"), model=tiny_config), ablation)
    model = EmotionModel(preset.model).train()
    loss = _loss(model, make_batch(preset.model), preset.train.loss_weights)
    loss.backward()
    assert torch.isfinite(loss)


def test_ablations_change_what_they_name(tiny_config: ModelConfig) -> None:
    base = replace(from_name("mosi"), model=tiny_config)
    assert EmotionModel(apply_ablation(base, "no-mic").model).mic is None
    out = EmotionModel(apply_ablation(base, "no-sgaff").model)(make_batch(tiny_config))
    assert out.gate is None
    out = EmotionModel(apply_ablation(base, "no-iamd").model)(make_batch(tiny_config))
    assert out.features["text"].restored is None
    assert apply_ablation(base, "no-lh").train.loss_weights.independence == 0


@pytest.mark.parametrize(
    "modalities",
    [
        ("text",),
        ("audio",),
        ("vision",),
        ("text", "audio"),
        ("audio", "vision"),
        ("text", "vision"),
    ],
)
def test_any_modality_subset(tiny_config: ModelConfig, modalities: tuple[str, ...]) -> None:
    config = replace(tiny_config, modalities=modalities)
    model = EmotionModel(config).train()
    batch = make_batch(config)
    assert set(batch.inputs) == set(modalities)
    loss = _loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    assert set(model.encoders) == set(modalities)


def test_classification_task(tiny_config: ModelConfig) -> None:
    config = replace(tiny_config, task="classification", n_classes=2)
    model = EmotionModel(config).train()
    batch = make_batch(config)
    out = model(batch)
    assert out.prediction.shape == (4, 2)
    total_loss(model, out, batch.labels, LossWeights()).total.backward()


def test_eval_mode_is_deterministic(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).eval()
    batch = make_batch(tiny_config)
    torch.testing.assert_close(model(batch).prediction, model(batch).prediction, rtol=0, atol=0)


def test_save_then_load_gives_identical_outputs(tiny_config: ModelConfig, tmp_path) -> None:
    model = EmotionModel(tiny_config).eval()
    profile = FeatureProfile("test", ("text",), text=TextProfile("x", 7))
    meta = CheckpointMeta(model_config={}, feature_profile=profile, metrics={"mae": 1.0})
    save_checkpoint(model, tmp_path / "ckpt", meta)
    loaded, loaded_meta = load_checkpoint(tmp_path / "ckpt")
    batch = make_batch(tiny_config)
    torch.testing.assert_close(loaded(batch).prediction, model(batch).prediction, rtol=0, atol=0)
    assert loaded.config == tiny_config
    assert loaded_meta.feature_profile == profile
    assert loaded_meta.versions["mercli"]


def test_loading_never_unpickles(tiny_config: ModelConfig, tmp_path, monkeypatch) -> None:
    save_checkpoint(EmotionModel(tiny_config), tmp_path / "ckpt")

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load reached pickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_checkpoint(tmp_path / "ckpt")


def test_bad_checkpoints_give_clear_errors(tiny_config: ModelConfig, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not a mer checkpoint"):
        load_checkpoint(tmp_path)
    directory = save_checkpoint(EmotionModel(tiny_config), tmp_path / "ckpt")
    (directory / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"weights\.safetensors"):
        load_checkpoint(directory)
    other = save_checkpoint(
        EmotionModel(replace(tiny_config, d_model=8, n_shared_heads=2)), tmp_path / "other"
    )
    (directory / "weights.safetensors").write_bytes((other / "weights.safetensors").read_bytes())
    with pytest.raises(CheckpointError):
        load_checkpoint(directory)


def _tiny_bert(path) -> str:
    from transformers import BertConfig, BertModel

    bert = BertModel(
        BertConfig(
            vocab_size=100,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        ),
        add_pooling_layer=False,
    )
    bert.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("finetune", [True, False])
def test_text_backbone_fine_tuned_or_frozen(
    tiny_config: ModelConfig, tmp_path, finetune: bool
) -> None:
    config = replace(
        tiny_config, text_backbone=_tiny_bert(tmp_path / "bert"), finetune_text_backbone=finetune
    )
    model = EmotionModel(config).train()
    batch = make_batch(config)
    batch.inputs["text"] = torch.randint(0, 100, batch.masks["text"].shape)
    _loss(model, batch).backward()
    grads = [p.grad is not None for p in model.text_backbone.parameters()]
    assert all(grads) if finetune else not any(grads)
    assert model.encoders["text"].projection.in_channels == 16
    save_checkpoint(model, tmp_path / "ckpt")
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    model.eval()
    torch.testing.assert_close(loaded(batch).prediction, model(batch).prediction)
