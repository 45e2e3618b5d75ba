"""The invertible core of IAMD: inverse(forward(x)) == x, as a property (FrEIA style)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mercli.model.invertible import (
    ActNorm,
    AdditiveCoupling,
    ChannelPermutation,
    HouseholderMixing,
    InvertibleCore,
)


def _randomised_core(dim: int, seed: int) -> InvertibleCore:
    torch.manual_seed(seed)
    core = InvertibleCore(dim, n_reflections=3, d_hidden=dim, seed=seed)
    with torch.no_grad():  # away from the identity initialisation of ActNorm
        core.blocks[1].bias.normal_()
        core.blocks[1].log_scale.normal_(std=0.5)
    return core.double()


@settings(deadline=None, max_examples=25)
@given(
    batch=st.integers(1, 9),
    half=st.integers(1, 24),
    seed=st.integers(0, 2**16),
)
def test_inverse_of_forward_is_identity(batch: int, half: int, seed: int) -> None:
    core = _randomised_core(2 * half, seed)
    x = torch.randn(
        batch, 2 * half, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    z, logdet = core(x)
    torch.testing.assert_close(core.inverse(z), x, atol=1e-10, rtol=1e-10)
    assert logdet.shape == (batch,)
    assert not torch.allclose(z, x)  # the core is not the identity


@settings(deadline=None, max_examples=25)
@given(half=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_forward_of_inverse_is_identity(half: int, seed: int) -> None:
    core = _randomised_core(2 * half, seed)
    z = torch.randn(
        5, 2 * half, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64
    )
    torch.testing.assert_close(core(core.inverse(z))[0], z, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("dim", [2, 4])
def test_logdet_equals_numerical_jacobian(dim: int) -> None:
    core = _randomised_core(dim, seed=dim)
    x = torch.randn(1, dim, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: core(v[None])[0][0], x[0])
    expected = torch.linalg.slogdet(jacobian).logabsdet
    torch.testing.assert_close(core(x)[1][0], expected, atol=1e-8, rtol=1e-8)


def test_householder_mixing_is_orthogonal_and_matches_eq3() -> None:
    mixing = HouseholderMixing(6, 3).double()
    q = torch.eye(6, dtype=torch.float64)
    for v in mixing.vectors.detach():
        q = q @ (torch.eye(6, dtype=torch.float64) - 2 * torch.outer(v, v) / v.dot(v))
    torch.testing.assert_close(mixing.matrix(), q)
    torch.testing.assert_close(q @ q.T, torch.eye(6, dtype=torch.float64))


@pytest.mark.parametrize(
    "block",
    [HouseholderMixing(8, 3), ActNorm(8), AdditiveCoupling(4, 8), ChannelPermutation(8, seed=3)],
)
def test_each_block_inverts(block: torch.nn.Module) -> None:
    x = torch.randn(3, 8)
    z, _ = block(x)
    torch.testing.assert_close(block.inverse(z), x, atol=1e-5, rtol=1e-5)


def test_coupling_keeps_u_and_shifts_r() -> None:
    coupling = AdditiveCoupling(3, 5)
    x = torch.randn(2, 6)
    z, logdet = coupling(x)
    torch.testing.assert_close(z[:, :3], x[:, :3])
    torch.testing.assert_close(z[:, 3:], x[:, 3:] + coupling.shift(x[:, :3]))
    assert torch.all(logdet == 0)
