"""Shared fixtures. Tests run on the CPU with one thread: these machines have 2 cores."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from dataclasses import replace
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared data and media are not beside the project")
    return SHARED


def tiny_model_config(**changes):
    """A small model of the full architecture (timm's test_vit habit), with ``changes``."""
    from mercli.config import EncoderConfig, ModelConfig

    base = ModelConfig(
        text=EncoderConfig(d_in=12, n_layers=1, n_heads=2),
        audio=EncoderConfig(d_in=5, n_layers=1, n_heads=2),
        vision=EncoderConfig(d_in=7, n_layers=1, n_heads=2),
        d_model=16,
        n_shared_heads=2,
        d_ff_mult=2,
        d_latent=16,
        n_mask_groups=4,
        d_key=4,
        d_mic=16,
        knn_k=2,
    )
    return replace(base, **changes)


@pytest.fixture
def tiny_config():
    return tiny_model_config()


def make_batch(config, batch_size: int = 4, steps=None, seed: int = 0, labels: bool = True):
    """Random features with random valid lengths (at least 1) and garbage past them."""
    import torch

    from mercli.schema import Batch

    steps = steps or {"text": 6, "audio": 15, "vision": 20}  # MOSI-like ratios
    g = torch.Generator().manual_seed(seed)
    inputs, masks = {}, {}
    for m in config.modalities:
        x = torch.randn(batch_size, steps[m], config.encoder(m).d_in, generator=g)
        lengths = torch.randint(1, steps[m] + 1, (batch_size,), generator=g)
        mask = torch.arange(steps[m])[None] < lengths[:, None]
        inputs[m] = torch.where(mask[..., None], x, torch.full_like(x, 1e4))
        masks[m] = mask
    y = torch.empty(batch_size).uniform_(-3, 3, generator=g) if labels else None
    if labels and config.task == "classification":
        y = torch.randint(0, config.n_classes, (batch_size,), generator=g)
    return Batch(inputs, masks, y)


def assert_rows_independent(model, batch) -> None:
    """Each sample's prediction alone equals its prediction inside the batch."""
    import torch

    from mercli.schema import Batch

    together = model(batch).prediction
    for i in range(len(together)):
        alone = Batch(
            {m: x[i : i + 1] for m, x in batch.inputs.items()},
            {m: x[i : i + 1] for m, x in batch.masks.items()},
        )
        torch.testing.assert_close(model(alone).prediction[0], together[i], atol=1e-5, rtol=1e-5)


@pytest.fixture
def batch_factory():
    return make_batch


__all__ = ["SHARED", "make_batch", "replace"]
