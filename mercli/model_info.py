"""Size and cost of the model: parameters and FLOPs on a benchmark-shaped input."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mercli.config import ModelConfig
from mercli.model import EmotionModel
from mercli.schema import Batch

# MOSI unaligned_50: 50 BERT steps, 375 audio frames, 500 video frames (MMSA unaligned_50.pkl).
MOSI_STEPS = {"text": 50, "audio": 375, "vision": 500}
# The paper's Table 9 figures for the full model on MOSI, BERT excluded.
PAPER_PARAMS_M = 8.63
PAPER_GFLOPS = 1.9


@dataclass
class ModelSize:
    parameters: int  # all parameters, text backbone included
    parameters_without_backbone: int
    flops: int  # floating-point operations of one forward pass (a multiply-add counts 2)
    steps: dict[str, int]  # the input lengths the FLOPs were counted on


def random_batch(
    config: ModelConfig,
    steps: dict[str, int],
    batch_size: int = 1,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Batch:
    """A batch of random features with every step valid; token ids when the text has a backbone."""
    g = torch.Generator().manual_seed(seed)
    inputs, masks = {}, {}
    for m in config.modalities:
        if m == "text" and config.text_backbone is not None:
            inputs[m] = torch.randint(1000, 2000, (batch_size, steps[m]), generator=g)
        else:
            inputs[m] = torch.randn(batch_size, steps[m], config.encoder(m).d_in, generator=g)
        masks[m] = torch.ones(batch_size, steps[m], dtype=torch.bool)
    return Batch(inputs, masks).to(device)


def count_flops(model: EmotionModel, batch: Batch) -> int:
    """FLOPs of one eval-mode forward pass, as counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    # The fused fast path of nn.TransformerEncoderLayer is invisible to the counter.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), counter:
            model(batch)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def describe(config: ModelConfig, steps: dict[str, int] | None = None) -> ModelSize:
    """Parameters with and without the text backbone, and FLOPs at ``steps`` (default MOSI).

    FLOPs are counted without the text backbone (text enters as 768-d states), as the paper
    counts them.
    """
    steps = steps or MOSI_STEPS
    model = EmotionModel(config)
    without = EmotionModel(_without_backbone(config))
    return ModelSize(
        parameters=model.count_parameters(True),
        parameters_without_backbone=model.count_parameters(False),
        flops=count_flops(without, random_batch(without.config, steps)),
        steps=dict(steps),
    )


def _without_backbone(config: ModelConfig) -> ModelConfig:
    from dataclasses import replace

    return replace(config, text_backbone=None)
