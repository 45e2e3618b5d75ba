"""SGAFF's branch weights: bounded branches, and a gate that follows the evidence."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from mercli.config import LossWeights, ModelConfig, TrainConfig, apply_ablation, from_name
from mercli.losses import task_loss, total_loss
from mercli.model import EmotionModel
from mercli.model.fusion import GatedFusion
from tests.conftest import make_batch


def _evidence(n: int, d: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Per sample the label lives either in the shared features r or in the specific ones u
    (the other holds noise); ``in_shared`` says which."""
    g = torch.Generator().manual_seed(seed)
    y = torch.empty(n).uniform_(-3, 3, generator=g)
    in_shared = torch.arange(n) % 2 == 0
    evidence = torch.cat([y[:, None], 0.1 * torch.randn(n, d - 1, generator=g)], dim=1)
    noise = 1.5 * torch.randn(n, d, generator=g)
    r = torch.where(in_shared[:, None], evidence, noise)
    u = torch.where(in_shared[:, None], noise, evidence)
    return y, in_shared, r, u


def test_gate_weighs_the_branch_that_holds_the_evidence() -> None:
    torch.manual_seed(0)
    y, in_shared, r, u = _evidence(256, 8, seed=0)
    fusion = GatedFusion(("text",), 8, 1, 0.0, score_bound=3.0, normalize_gate_input=True)
    optimizer = torch.optim.Adam(fusion.parameters(), 1e-2)
    for _ in range(250):
        out = fusion({"text": r}, {"text": u})
        loss = task_loss(out.prediction[:, 0], y, "regression") + 0.5 * (
            task_loss(out.shared_branch[:, 0], y, "regression")
            + task_loss(out.specific_branch[:, 0], y, "regression")
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = fusion.eval()({"text": r}, {"text": u})
    gamma = out.gate[:, 0]
    # the shared branch weighs more where the label is in the shared evidence, less elsewhere
    assert float(gamma[in_shared].mean()) > 0.6, float(gamma[in_shared].mean())
    assert float(gamma[~in_shared].mean()) < 0.2, float(gamma[~in_shared].mean())
    # and the weight says where the evidence is, not the score's sign
    assert abs(np.corrcoef(gamma.numpy(), out.prediction[:, 0].numpy())[0, 1]) < 0.3
    assert float(out.shared_branch.abs().max()) <= 3.0
    assert float(out.specific_branch.abs().max()) <= 3.0


def test_branches_are_bounded_to_the_label_range(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).eval()
    with torch.no_grad():
        for head in (model.fusion.shared_head, model.fusion.specific_head):
            head[-1].bias.fill_(50.0)  # an output far outside the range
        out = model(make_batch(tiny_config))
    assert torch.all(out.shared_branch.abs() <= 3.0)
    assert torch.all(out.specific_branch.abs() <= 3.0)
    paper = EmotionModel(
        apply_ablation(replace(from_name("mosi"), model=tiny_config), "paper-gate").model
    )
    with torch.no_grad():
        paper.fusion.shared_head[-1].bias.fill_(50.0)
        assert torch.all(paper.eval()(make_batch(tiny_config)).shared_branch > 3.0)


def test_branch_loss_is_the_task_loss_of_each_branch(tiny_config: ModelConfig) -> None:
    model = EmotionModel(tiny_config).eval()
    batch = make_batch(tiny_config, batch_size=6)
    out = model(batch)
    terms = total_loss(model, out, batch.labels, LossWeights())
    expected = task_loss(out.shared_branch, batch.labels, "regression") + task_loss(
        out.specific_branch, batch.labels, "regression"
    )
    torch.testing.assert_close(terms.branch, expected)
    weights = replace(LossWeights(), branch=0.5)
    terms = total_loss(model, out, batch.labels, weights)
    paper = total_loss(model, out, batch.labels, replace(weights, branch=0.0))
    torch.testing.assert_close(terms.total - paper.total, 0.5 * expected)


def test_gate_decorrelation_is_the_squared_correlation_of_gamma_with_the_label(
    tiny_config: ModelConfig,
) -> None:
    from mercli.losses import gate_correlation

    g = torch.Generator().manual_seed(0)
    gate, labels = torch.rand(9, generator=g, dtype=torch.float64), torch.randn(9, generator=g)
    expected = np.corrcoef(gate.numpy(), labels.double().numpy())[0, 1] ** 2
    assert float(gate_correlation(gate, labels)) == pytest.approx(expected, rel=1e-10)
    assert float(gate_correlation(labels.double() * 0.1 + 0.5, labels)) == pytest.approx(1.0)
    model = EmotionModel(tiny_config).eval()
    batch = make_batch(tiny_config, batch_size=6)
    out = model(batch)
    on = total_loss(model, out, batch.labels, replace(LossWeights(), gate_decorrelation=2.0))
    off = total_loss(model, out, batch.labels, replace(LossWeights(), gate_decorrelation=0.0))
    torch.testing.assert_close(on.gate, gate_correlation(out.gate, batch.labels))
    torch.testing.assert_close(on.total - off.total, 2.0 * on.gate)


@pytest.mark.parametrize("branch", ["shared", "specific"])
def test_one_branch_alone_table_8(tiny_config: ModelConfig, branch: str) -> None:
    preset = apply_ablation(replace(from_name("mosi"), model=tiny_config), f"{branch}-only")
    model = EmotionModel(preset.model).eval()
    out = model(make_batch(tiny_config))
    assert out.gate is None
    alone = out.shared_branch if branch == "shared" else out.specific_branch
    other = out.specific_branch if branch == "shared" else out.shared_branch
    assert other is None
    torch.testing.assert_close(out.prediction, alone)
    full = EmotionModel(tiny_config)
    assert model.count_parameters() < full.count_parameters()


def test_old_configs_load_as_the_paper_form() -> None:
    stored = ModelConfig().to_dict()
    for key in ("bound_branches", "normalize_gate_input", "fusion_branches", "score_bound"):
        del stored[key]
    old = ModelConfig.from_dict(stored)
    assert (old.bound_branches, old.normalize_gate_input, old.fusion_branches) == (
        False,
        False,
        "both",
    )
    train = TrainConfig().to_dict()
    del train["loss_weights"]["branch"]
    assert TrainConfig.from_dict(train).loss_weights.branch == 0.0
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()  # new ones keep theirs


def test_evaluate_table_has_a_row_per_branch(capsys: pytest.CaptureFixture[str]) -> None:
    from mercli import render
    from mercli.train import Predictions, branch_metrics

    labels = np.array([-2.0, -1.0, 0.5, 2.0, 3.0])
    p = Predictions(
        predicted=labels + 0.1,
        labels=labels,
        gates=np.full(5, 0.5),
        shared={},
        specific={},
        ids=[],
        shared_branch=labels + 0.5,
        specific_branch=-labels,
    )
    rows = branch_metrics(p, "regression")
    assert rows["fused"]["mae"] == pytest.approx(0.1)
    assert rows["shared_branch"]["mae"] == pytest.approx(0.5)
    assert rows["specific_branch"]["corr"] == pytest.approx(-1.0)
    render.metrics_rows(rows, "ckpt on mosi test")
    out = capsys.readouterr().out
    assert "fused (the model)" in out and "shared branch" in out and "specific branch" in out
    no_gate = branch_metrics(
        Predictions(labels, labels, None, {}, {}, [], None, None), "regression"
    )
    assert set(no_gate) == {"fused"}
