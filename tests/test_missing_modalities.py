"""A per-sample presence mask: samples lacking a modality, in inference and in training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mercli.config import LossWeights, ModelConfig
from mercli.data.samples import Collator, Sample
from mercli.losses import total_loss
from mercli.model import EmotionModel
from mercli.schema import Batch
from tests.conftest import make_batch


def _row(batch: Batch, i: int) -> Batch:
    return Batch(
        {m: x[i : i + 1] for m, x in batch.inputs.items()},
        {m: x[i : i + 1] for m, x in batch.masks.items()},
    )


@pytest.mark.parametrize("use_sgaff", [True, False])
@pytest.mark.parametrize("missing", ["text", "audio", "vision"])
def test_a_sample_missing_a_modality_scores_the_same_alone_and_among_complete_ones(
    tiny_config: ModelConfig, missing: str, use_sgaff: bool
) -> None:
    config = replace(tiny_config, use_sgaff=use_sgaff)
    model = EmotionModel(config).eval()
    batch = make_batch(config, batch_size=5, seed=7)
    batch.masks[missing][2] = False  # sample 2 lacks it; the four others are complete
    batch.inputs[missing][2] = float("nan")  # and what its row holds must not matter
    together = model(batch)
    assert together.present[missing].tolist() == [True, True, False, True, True]
    alone = model(_row(batch, 2))
    torch.testing.assert_close(alone.prediction[0], together.prediction[2], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(together.prediction).all()
    # without the modality in the batch at all, the same score again
    others = {m: x[2:3] for m, x in batch.inputs.items() if m != missing}
    masks = {m: x[2:3] for m, x in batch.masks.items() if m != missing}
    torch.testing.assert_close(
        model(Batch(others, masks)).prediction[0], together.prediction[2], atol=1e-5, rtol=1e-5
    )


def test_a_missing_modality_equals_masking_it_out(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).eval()
    batch = make_batch(tiny_config, batch_size=4, seed=8)
    out = model(batch)
    without = model.prediction_without(out, "audio")
    batch.masks["audio"][:] = False
    torch.testing.assert_close(without, model(batch).prediction)
    assert not torch.allclose(without, out.prediction)  # audio did move the scores


@pytest.mark.parametrize("how", ["masked", "left out"])
@pytest.mark.parametrize("absent", ["text", "audio", "vision"])
def test_losses_and_gradients_stay_finite_without_a_modality_in_the_whole_batch(
    tiny_config: ModelConfig, absent: str, how: str
) -> None:
    model = EmotionModel(tiny_config).train()
    batch = make_batch(tiny_config, batch_size=6, seed=9)
    if how == "masked":
        batch.masks[absent][:] = False
        batch.inputs[absent][:] = float("nan")
    else:
        del batch.inputs[absent], batch.masks[absent]
    batch.masks["audio" if absent != "audio" else "text"][0] = False  # and one more gap
    terms = total_loss(model, model(batch), batch.labels, LossWeights())
    terms.total.backward()
    assert all(np.isfinite(v) for v in terms.as_floats().values()), terms.as_floats()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert all(torch.isfinite(g).all() for g in grads.values())
    # the absent modality's own encoder learns nothing from this batch; the others do
    assert not any(g.any() for n, g in grads.items() if n.startswith(f"encoders.{absent}."))
    present = next(m for m in ("text", "audio", "vision") if m != absent)
    assert any(g.any() for n, g in grads.items() if n.startswith(f"encoders.{present}."))


def test_loss_terms_use_only_the_samples_that_have_the_modality(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).eval()
    batch = make_batch(tiny_config, batch_size=6, seed=10)
    full = model(batch)
    batch.masks["vision"][4:] = False
    partial = model(batch)
    from mercli.losses import reconstruction_loss

    # vision's reconstruction term over its 4 remaining samples, the others over all 6
    expected = torch.stack(
        [
            torch.nn.functional.mse_loss(full.reconstructed[m][:n], full.pooled[m][:n])
            for m, n in (("text", 6), ("audio", 6), ("vision", 4))
        ]
    ).mean()
    torch.testing.assert_close(reconstruction_loss(partial), expected)


def test_training_batches_mix_samples_with_different_modality_sets(
    tiny_config: ModelConfig,
) -> None:
    g = torch.Generator().manual_seed(0)

    def sample(i: int, modalities: tuple[str, ...]) -> Sample:
        widths = {m: tiny_config.encoder(m).d_in for m in modalities}
        return Sample(
            {m: torch.randn(3 + i, d, generator=g) for m, d in widths.items()}, float(i % 3), str(i)
        )

    samples = [
        sample(0, ("text", "audio", "vision")),
        sample(1, ("text",)),  # a transcript without audio
        sample(2, ("text", "audio")),  # a speech clip without a face
        sample(3, ("text", "audio", "vision")),
    ]
    batch = Collator()(samples)
    assert batch.presence("vision").tolist() == [True, False, False, True]
    assert batch.presence("audio").tolist() == [True, False, True, True]
    model = EmotionModel(tiny_config).train()
    terms = total_loss(model, model(batch), batch.labels, LossWeights())
    terms.total.backward()
    assert np.isfinite(terms.as_floats()["total"])
    model.eval()
    torch.testing.assert_close(
        model(Collator()([samples[1]])).prediction[0], model(batch).prediction[1]
    )
