"""Each loss equals a direct float64 computation of its formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mercli.losses import cmd, conditional_mi, hsic, info_nce, nearest_neighbours
from mercli.model.mic import discriminator


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cmd_matches_its_formula() -> None:
    x, y = _rand(7, 3, seed=1), _rand(9, 3, seed=2).mul(1.5).add(0.3)
    a, b = x.numpy(), y.numpy()
    expected = np.linalg.norm(a.mean(0) - b.mean(0))
    for k in range(2, 6):
        ca = ((a - a.mean(0)) ** k).mean(0)
        cb = ((b - b.mean(0)) ** k).mean(0)
        expected += np.linalg.norm(ca - cb)
    assert float(cmd(x, y, n_moments=5)) == pytest.approx(expected, rel=1e-12)


def test_cmd_is_zero_for_identical_inputs_and_positive_otherwise() -> None:
    x = _rand(10, 4)
    assert float(cmd(x, x.clone())) == pytest.approx(0.0, abs=1e-12)
    assert float(cmd(x, x + 0.1)) > 0.09


def test_hsic_matches_its_formula() -> None:
    x, y = _rand(6, 3, seed=3), _rand(6, 2, seed=4)

    def gram(a: np.ndarray) -> np.ndarray:
        d = ((a[:, None] - a[None]) ** 2).sum(-1)
        sigma2 = np.median(d[~np.eye(len(a), dtype=bool)])
        return np.exp(-d / (2 * sigma2))

    n = 6
    h = np.eye(n) - np.ones((n, n)) / n
    expected = np.trace(h @ gram(x.numpy()) @ h @ gram(y.numpy())) / (n - 1) ** 2
    assert float(hsic(x, y)) == pytest.approx(expected, rel=1e-10)


def test_hsic_is_larger_for_dependent_than_independent_features() -> None:
    x = _rand(64, 2, seed=5)
    assert float(hsic(x, x**2 + x)) > 3 * float(hsic(x, _rand(64, 2, seed=6)))


def test_info_nce_matches_its_formula() -> None:
    scores = _rand(5, 5, seed=7)
    s = scores.numpy()
    expected = -np.mean([s[i, i] - np.log(np.exp(s[i]).sum()) for i in range(5)])
    assert float(info_nce(scores)) == pytest.approx(expected, rel=1e-12)


def test_nearest_neighbours_exclude_self() -> None:
    r = torch.tensor([[0.0], [1.0], [10.0], [11.5]])
    assert nearest_neighbours(r, 1)[:, 0].tolist() == [1, 0, 3, 2]


def test_conditional_mi_estimate_matches_eq18() -> None:
    torch.manual_seed(0)
    d = 3
    phi = discriminator(d, 8).double()
    u, z, r = _rand(6, d, seed=8), _rand(6, d, seed=9), _rand(6, d, seed=10)
    estimate, disc_loss = conditional_mi(phi, u, z, r, k=2)

    def logit(p_u, p_z, p_r):  # log(phi / (1 - phi)) with phi = sigmoid(output)
        p = torch.sigmoid(phi(torch.cat([p_u, p_z, p_r])))
        return float(torch.log(p / (1 - p)).detach())

    rn = r.numpy()
    dist = np.sqrt(((rn[:, None] - rn[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    joint = np.mean([logit(u[i], z[i], r[i]) for i in range(6)])
    product = np.mean([logit(u[i], z[j], r[i]) for i in range(6) for j in np.argsort(dist[i])[:2]])
    assert float(estimate) == pytest.approx(joint - product, rel=1e-9)
    assert float(disc_loss.detach()) > 0


def test_cmi_gradient_reaches_features_but_not_the_discriminator() -> None:
    phi = discriminator(2, 4)
    u = torch.randn(5, 2, requires_grad=True)
    estimate, _ = conditional_mi(phi, u, torch.randn(5, 2), torch.randn(5, 2), k=2)
    estimate.backward()
    assert u.grad is not None and u.grad.abs().sum() > 0
    assert all(p.grad is None for p in phi.parameters())
