"""Forward latency (batch 1) and throughput (batch 256) of the model, text backbone excluded.

Compares the full IAMD + MIC + SGAFF model with a plain baseline on the same encoders
(concatenation + MLP head: use_iamd, use_mic and use_sgaff off), in one run, on MOSI-shaped
inputs (text 50 x 768 states, audio 375 x 5, vision 500 x 20).

    python benchmarks/model_latency.py [--device cpu|cuda] [--repeats 20] [--fp16]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from mercli.config import ModelConfig
from mercli.model import EmotionModel
from mercli.model_info import MOSI_STEPS, random_batch


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
    model = EmotionModel(config).to(device=device, dtype=dtype).eval()
    one = random_batch(config, MOSI_STEPS, 1, device=device)
    many = random_batch(config, MOSI_STEPS, big_batch, device=device)
    for b in (one, many):
        b.inputs = {m: x.to(dtype) for m, x in b.inputs.items()}
    latency = timed(model, one, repeats, device)
    batch_time = timed(model, many, max(3, repeats // 5), device)
    return {"latency_ms": latency * 1e3, "throughput_per_s": big_batch / batch_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--fp16", action="store_true", help="half precision (GPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dtype = torch.float16 if args.fp16 else torch.float32
    full = ModelConfig()
    baseline = replace(full, use_iamd=False, use_mic=False, use_sgaff=False)
    results = {
        name: measure(cfg, args.device, args.repeats, args.batch, dtype)
        for name, cfg in (("full", full), ("baseline", baseline))
    }
    device_name = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    ratio = results["full"]["latency_ms"] / results["baseline"]["latency_ms"]
    if args.json:
        print(
            json.dumps(
                {"device": device_name, "dtype": str(dtype), **results, "latency_ratio": ratio}
            )
        )
        return
    print(f"device: {device_name}, dtype {dtype}, batch 1 latency / batch {args.batch} throughput")
    for name, r in results.items():
        print(f"  {name:9s} {r['latency_ms']:8.2f} ms   {r['throughput_per_s']:9.1f} samples/s")
    print(f"  full / baseline latency: {ratio:.2f}x")


if __name__ == "__main__":
    main()
