"""What the sequence-shortening front (``EncoderConfig.stride`` on audio and vision) costs in
accuracy, on the synthetic learning task of ``tests/test_train.py``.

    OMP_NUM_THREADS=1 python benchmarks/stride_accuracy.py --strides 1,8 --seeds 0,1,2

The data: :func:`mercli.data.synthetic.write_mmsa_pickle` with MOSI's shapes (text 50 x 768
states, audio 375 x 5, vision 500 x 20; the label is a sum of a text, an audio and a vision
factor, each averaged over the valid steps) and, per seed, 128 / 32 / 64 train / valid / test
samples; the model and the run: those of ``test_the_loop_learns_a_cross_modal_signal`` (a
32-wide model of the full architecture, batch 32, lr 3e-3, at most 8 epochs, patience 3). Per
stride and seed: test MAE, Pearson r, and the training seconds; then the mean and spread per
stride, and the MAE of predicting the train mean, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(stride: int, seed: int, folder: Path) -> dict:
    import numpy as np
    import torch

    from mercli.config import TrainConfig
    from mercli.data import load_dataset
    from mercli.data.synthetic import write_mmsa_pickle
    from mercli.train import fit
    from tests.conftest import tiny_model_config

    torch.set_num_threads(1)
    path = write_mmsa_pickle(
        folder / f"mosi-{seed}.pkl", "mosi", n_train=128, n_valid=32, n_test=64, seed=3 + seed
    )
    data = load_dataset("mosi", path)
    base = tiny_model_config(d_model=32, d_latent=32, d_key=8, d_mic=32, knn_k=3, dropout=0.1)
    config = base.for_dataset(data.info)
    config = replace(
        config,
        audio=replace(config.audio, stride=stride),
        vision=replace(config.vision, stride=stride),
    )
    cfg = TrainConfig(batch_size=32, lr=3e-3, max_epochs=8, patience=3)
    started = time.perf_counter()
    result = fit(config, data, cfg, folder / f"run-{stride}-{seed}", seed=seed, log=lambda s: None)
    seconds = time.perf_counter() - started
    labels = np.array([data.train[i].label for i in range(len(data.train))])
    test_labels = np.array([data.test[i].label for i in range(len(data.test))])
    return {
        "stride": stride,
        "seed": seed,
        "mae": result.test_metrics["mae"],
        "corr": result.test_metrics["corr"],
        "mean_mae": float(np.mean(np.abs(test_labels - labels.mean()))),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strides", default="1,8")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    strides = [int(s) for s in args.strides.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mer-stride-") as tmp:
        for seed in seeds:
            for stride in strides:
                rows.append(run(stride, seed, Path(tmp)))
                r = rows[-1]
                print(
                    f"stride {stride} seed {seed}: MAE {r['mae']:.3f} (train mean "
                    f"{r['mean_mae']:.3f}), r {r['corr']:.3f}, {r['seconds']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    summary = {}
    for stride in strides:
        mine = [r for r in rows if r["stride"] == stride]
        summary[stride] = {
            key: (statistics.mean(r[key] for r in mine), statistics.pstdev(r[key] for r in mine))
            for key in ("mae", "corr", "seconds")
        }
        mae, corr, seconds = (summary[stride][k] for k in ("mae", "corr", "seconds"))
        print(
            f"stride {stride}: MAE {mae[0]:.3f} +- {mae[1]:.3f}, r {corr[0]:.3f} +- "
            f"{corr[1]:.3f}, {seconds[0]:.1f} s per run ({len(mine)} seeds)",
            file=sys.stderr,
        )
    load_after = os.getloadavg()[0]
    print(f"load {load_before:.2f} before, {load_after:.2f} after", file=sys.stderr)
    print(json.dumps({"runs": rows, "load": [load_before, load_after]}, indent=1))


if __name__ == "__main__":
    main()
