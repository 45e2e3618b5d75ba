"""Parameters, FLOPs and latency of every architecture variant of paper Tables 6 and 8, in one run.

Each variant is built from ``ModelConfig()`` with its ablation switched on, on MOSI-shaped inputs
(text 50 x 768 states, audio 375 x 5, vision 500 x 20), the text backbone excluded as the paper
counts it. Printed per variant: parameters (M), the paper's count where Table 6 gives one,
forward GFLOPs (a multiply-add counts 2), the median latency of one forward pass at batch 1 and
the throughput at ``--batch``. The loss ablations of Table 6 (without L_S, L_H, L_RE, L_IN,
L_MI) change no weight and no forward pass: they cost what ``full`` costs. MIC's estimators
run only in training, so without MIC the forward pass is the same as the full one.

    python benchmarks/model_latency.py [--device cpu|cuda] [--repeats 20] [--fp16] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from mercli.config import ModelConfig
from mercli.model import EmotionModel
from mercli.model_info import MOSI_STEPS, count_flops, random_batch

# name -> (ModelConfig changes, the paper's parameter count in M where Table 6 gives one)
VARIANTS: dict[str, tuple[dict, float | None]] = {
    "full": ({}, 8.63),
    "no-iamd": ({"use_iamd": False}, 7.28),
    "no-mic": ({"use_mic": False}, 5.57),
    "no-sgaff": ({"use_sgaff": False}, 7.39),
    "shared-only": ({"fusion_branches": "shared"}, None),
    "specific-only": ({"fusion_branches": "specific"}, None),
    "paper-gate": ({"bound_branches": False, "normalize_gate_input": False}, None),
    "baseline": ({"use_iamd": False, "use_mic": False, "use_sgaff": False}, None),
}


def timed(model: EmotionModel, batch, repeats: int, device: str) -> float:
    """Median seconds of one forward pass."""
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(batch)
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model(batch)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(
    config: ModelConfig, device: str, repeats: int, big_batch: int, dtype: torch.dtype
) -> dict:
    model = EmotionModel(config)
    parameters = model.count_parameters(False)
    flops = count_flops(model, random_batch(config, MOSI_STEPS, 1))
    model = model.to(device=device, dtype=dtype).eval()
    one = random_batch(config, MOSI_STEPS, 1, device=device)
    many = random_batch(config, MOSI_STEPS, big_batch, device=device)
    for b in (one, many):
        b.inputs = {m: x.to(dtype) for m, x in b.inputs.items()}
    latency = timed(model, one, repeats, device)
    batch_time = timed(model, many, max(3, repeats // 5), device)
    return {
        "parameters_m": parameters / 1e6,
        "gflops": flops / 1e9,
        "latency_ms": latency * 1e3,
        "throughput_per_s": big_batch / batch_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dtype = torch.float16 if args.fp16 else torch.float32
    base = ModelConfig()
    results = {}
    for name, (changes, paper) in VARIANTS.items():
        results[name] = {
            **measure(replace(base, **changes), args.device, args.repeats, args.batch, dtype),
            "paper_parameters_m": paper,
        }
    device_name = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    if args.json:
        print(json.dumps({"device": device_name, "dtype": str(dtype), "variants": results}))
        return
    print(
        f"device: {device_name}, dtype {dtype}; d_model {base.d_model}, d_latent "
        f"{base.d_latent}, d_mic {base.d_mic}; MOSI-shaped input, text backbone excluded"
    )
    print(
        f"  {'variant':14s} {'params M':>9s} {'paper M':>8s} {'GFLOPs':>7s} "
        f"{'batch 1 ms':>10s} {f'batch {args.batch} /s':>14s}"
    )
    for name, r in results.items():
        paper = "-" if r["paper_parameters_m"] is None else f"{r['paper_parameters_m']:.2f}"
        print(
            f"  {name:14s} {r['parameters_m']:9.2f} {paper:>8s} {r['gflops']:7.2f} "
            f"{r['latency_ms']:10.2f} {r['throughput_per_s']:14.1f}"
        )


if __name__ == "__main__":
    main()
