"""Non-finite padding, float64 end to end, and same-label negatives in the MI losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mercli.config import LossWeights, ModelConfig
from mercli.losses import (
    conditional_mi,
    info_nce,
    nearest_neighbours,
    same_labels,
    total_loss,
)
from mercli.model import EmotionModel
from mercli.model.mic import discriminator
from mercli.schema import Batch
from tests.conftest import make_batch


def _poisoned(batch: Batch, value: float) -> Batch:
    """The batch with ``value`` (NaN, inf) in every step its masks mark as padding."""
    return Batch(
        {
            m: torch.where(batch.masks[m][..., None], x, torch.full_like(x, value))
            for m, x in batch.inputs.items()
        },
        batch.masks,
        batch.labels,
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_padding_never_reaches_an_output(tiny_config: ModelConfig, value) -> None:
    batch = make_batch(tiny_config, batch_size=5, seed=3)
    batch.masks["vision"][1, :3] = False  # frames without a face inside the valid length
    batch.masks["audio"][2] = False  # one utterance without audio at all
    model = EmotionModel(tiny_config).eval()
    clean, poisoned = model(_poisoned(batch, 0.0)), model(_poisoned(batch, value))
    torch.testing.assert_close(poisoned.prediction, clean.prediction)
    torch.testing.assert_close(poisoned.gate, clean.gate)
    model.train()
    terms = total_loss(model, model(_poisoned(batch, value)), batch.labels, LossWeights())
    terms.total.backward()
    assert all(np.isfinite(v) for v in terms.as_floats().values()), terms.as_floats()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


class _Float32Ops(TorchDispatchMode):
    """Records every operator that returns a float32 tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.seen.add(str(func))
        return out


def test_model_and_losses_run_in_float64_end_to_end(tiny_config: ModelConfig) -> None:
    torch.manual_seed(0)
    model = EmotionModel(tiny_config).double().train()
    batch = make_batch(tiny_config, batch_size=6, seed=4)
    inputs = {m: x.double() for m, x in batch.inputs.items()}
    batch = Batch(inputs, batch.masks, batch.labels.double())
    with _Float32Ops() as ops:
        out = model(batch)
        terms = total_loss(model, out, batch.labels, LossWeights())
        terms.total.backward()
    assert ops.seen == set(), f"float32 inside a float64 model: {sorted(ops.seen)}"
    assert out.prediction.dtype == terms.total.dtype == torch.float64
    # the invertible core holds to float64 precision, not float32's
    f = out.features["audio"]
    core = model.disentanglers["audio"].core
    torch.testing.assert_close(core.inverse(core(f.latent)[0]), f.latent, atol=1e-12, rtol=0)


def test_float32_inputs_reach_a_float64_model_cast_up(tiny_config: ModelConfig) -> None:
    model32 = EmotionModel(tiny_config).eval()
    model64 = EmotionModel(tiny_config).double().eval()
    model64.load_state_dict(model32.state_dict())
    batch = make_batch(tiny_config, seed=5)  # float32 features
    out64 = model64(batch).prediction
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), model32(batch).prediction, atol=1e-4, rtol=1e-4)


def test_info_nce_leaves_same_label_pairs_out_of_the_denominator() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([1.0, 0.5, 1.0, -2.0, 0.5])
    same = same_labels(labels)
    s = scores.numpy()
    expected = -np.mean(
        [
            s[i, i]
            - np.log(sum(np.exp(s[i, j]) for j in range(5) if j == i or not bool(same[i, j])))
            for i in range(5)
        ]
    )
    assert float(info_nce(scores, same)) == pytest.approx(expected, rel=1e-12)
    assert float(info_nce(scores, same)) < float(info_nce(scores))  # fewer false negatives


def test_knn_negatives_pass_over_same_label_neighbours() -> None:
    r = torch.tensor([[0.0], [0.1], [0.2], [5.0], [6.0]])
    labels = torch.tensor([1.0, 1.0, 1.0, -1.0, 2.0])
    neighbours = nearest_neighbours(r, 2, same_labels(labels))
    for i in range(5):
        assert not any(labels[j] == labels[i] for j in neighbours[i].tolist()), (i, neighbours[i])
    assert neighbours[0].tolist() == [3, 4]  # the closest samples with another label


def test_conditional_mi_with_distinct_labels_is_unchanged_and_drops_same_label_negatives() -> None:
    torch.manual_seed(0)
    phi = discriminator(3, 8).double()
    g = torch.Generator().manual_seed(1)
    u, z, r = (torch.randn(6, 3, generator=g, dtype=torch.float64) for _ in range(3))
    distinct = same_labels(torch.arange(6.0))
    plain, plain_loss = conditional_mi(phi, u, z, r, k=2)
    masked, masked_loss = conditional_mi(phi, u, z, r, k=2, same_label=distinct)
    assert float(masked) == pytest.approx(float(plain), rel=1e-12)
    assert float(masked_loss.detach()) == pytest.approx(float(plain_loss.detach()), rel=1e-12)
    # every sample shares its label: no valid negative, so no estimate (not a joint-only one)
    everyone = torch.ones(6, 6, dtype=torch.bool)
    estimate, loss = conditional_mi(phi, u, z, r, k=2, same_label=everyone)
    assert float(estimate) == 0.0 and float(loss) == 0.0
