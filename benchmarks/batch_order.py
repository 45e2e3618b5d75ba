"""Length-grouped against random training batches: losses and test metrics over seeds.

``group_by_length`` batches utterances of similar lengths (less padding, faster epochs), so CMD,
HSIC, InfoNCE and the kNN negatives of MIC see length-sorted batches instead of random ones.
This trains the text-only model on CMU-MOSI transcripts (frozen all-MiniLM-L6-v2 states) once
per seed each way, and prints per way the mean ± std over seeds of the test metrics, of the
last epoch's training loss terms and of the seconds per epoch, with a paired t-test per metric.

    python benchmarks/batch_order.py --data ../shared/data/cmu-mosi/label.csv \\
        --out runs/batch_order [--seeds 42 1 11] [--epochs 4] [--ways grouped random]

Seeds finished in ``--out`` are reused; ``--report-only`` trains nothing.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

WAYS = {"grouped": True, "random": False}
TERMS = ("task", "similarity", "independence", "relevance", "conditional", "branch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="CMU-MOSI label.csv")
    parser.add_argument("--out", type=Path, default=Path("runs/batch_order"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 11])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()

    from mercli.config import from_name
    from mercli.experiment import DataSpec, RunResults, compare, run

    spec = DataSpec("mosi", args.data, finetune_text=False)
    base = from_name("mosi")
    report = {}
    for way in args.ways:
        train = replace(
            base.train,
            max_epochs=args.epochs,
            patience=args.epochs,
            lr=args.lr,
            group_by_length=WAYS[way],
        )
        out = args.out / way
        if args.report_only:
            done = RunResults.from_dict(json.loads((out / "results.json").read_text()))
        else:
            done = run(replace(base, train=train), spec, tuple(args.seeds), out, resume=True)
        report[way] = done.to_dict()
    for way, results in report.items():
        seeds = results["seeds"].values()
        print(f"{way} ({len(seeds)} seeds)")
        for k in ("mae", "corr", "acc2_non0", "acc7"):
            v = np.array([s["test"][k] for s in seeds])
            print(f"  test {k:10s} {v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}")
        for t in TERMS:
            v = np.array([s["history"][-1]["terms"].get(t, np.nan) for s in seeds])
            print(f"  train {t:13s} {np.nanmean(v):.4f}")
        secs = np.array([h["seconds"] for s in seeds for h in s["history"]])
        print(f"  seconds per epoch {secs.mean():.1f} (load-dependent)")
    if len(report) == 2:
        try:
            rows = compare(
                {s: r["test"] for s, r in report["grouped"]["seeds"].items()},
                {s: r["test"] for s, r in report["random"]["seeds"].items()},
            )
        except ValueError as err:
            print(f"no t-test: {err}")
            return
        print("paired t-test (A = grouped, B = random)")
        for r in rows:
            print(f"  {r.metric:10s} A {r.mean_a:.4f}  B {r.mean_b:.4f}  p {r.p_value:.3g}")


if __name__ == "__main__":
    main()
