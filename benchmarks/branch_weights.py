"""Do SGAFF's branch weights say which branch drove the score? Gate forms compared on MOSI.

Trains the text-only model on CMU-MOSI transcripts (frozen all-MiniLM-L6-v2 states) once per
seed with mer's gate (bounded branches, normalised gate input, a task loss per branch) and once
with the paper's exact gate (the ``paper-gate`` ablation), then reads on the test split:

- |Pearson(gamma, score)|: how much the shared branch's weight restates the score;
- the share of utterances with gamma < 0.02 or > 0.98 (a saturated gate);
- the share of utterances whose two branch outputs both lie inside [-3, 3];
- the test metrics, and a paired t-test per metric over the seeds.

    python benchmarks/branch_weights.py --data ../shared/data/cmu-mosi/label.csv \\
        --out runs/branch_weights [--seeds 42 1 11] [--epochs 12] [--figure docs/x.png]

Runs already finished in ``--out`` are reused (``results.json`` per variant); ``--report-only``
reports the seeds finished so far without training.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

# name -> (ablation, loss-weight changes)
VARIANTS: dict[str, tuple[str | None, dict]] = {
    "mer-gate": (None, {"gate_decorrelation": 0.0}),
    "paper-gate": ("paper-gate", {}),
    "mer-gate-decorrelated": (None, {"gate_decorrelation": 1.0}),
}


def gate_statistics(predicted, gates, shared, specific, bound: float = 3.0) -> dict[str, float]:
    """The three figures of the gate on one split (arrays of shape (N,))."""
    inside = (np.abs(shared) <= bound) & (np.abs(specific) <= bound)
    return {
        "abs_corr_gate_score": float(abs(np.corrcoef(gates, predicted)[0, 1])),
        "saturated_pct": float(100 * np.mean((gates < 0.02) | (gates > 0.98))),
        "branches_inside_pct": float(100 * np.mean(inside)),
        "median_gate": float(np.median(gates)),
    }


def test_outputs(checkpoint: Path, data, device: str):  # type: ignore[no-untyped-def]
    from mercli.checkpoint import load_checkpoint
    from mercli.train import make_loader, predict

    model, _ = load_checkpoint(checkpoint, device)
    loader = make_loader(data.test, data.collate, 64, shuffle=False, seed=0)
    return predict(model, loader, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="CMU-MOSI label.csv")
    parser.add_argument("--out", type=Path, default=Path("runs/branch_weights"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 11])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--figure", type=Path, default=None, help="write a PNG of gamma vs score")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["mer-gate-decorrelated", "paper-gate"],
        choices=list(VARIANTS),
    )
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing: report the finished seeds"
    )
    args = parser.parse_args()

    from mercli.config import apply_ablation, from_name
    from mercli.experiment import DataSpec, RunResults, compare, load_data, run

    spec = DataSpec("mosi", args.data, finetune_text=False)
    base = from_name("mosi")
    # the widths the README's figures were measured with (the defaults before they were fit
    # to the paper's per-variant parameter counts)
    base = replace(base, model=replace(base.model, d_model=176, d_latent=256, d_mic=640))
    base = replace(
        base,
        train=replace(
            base.train,
            max_epochs=args.epochs,
            patience=args.patience,
            batch_size=args.batch_size,
            lr=args.lr,
        ),
    )
    data = load_data(spec, print)
    report: dict[str, dict] = {}
    outputs: dict[str, dict] = {}
    for name in args.variants:
        ablation, loss_changes = VARIANTS[name]
        preset = apply_ablation(base, ablation) if ablation else base
        weights = replace(preset.train.loss_weights, **loss_changes)
        preset = replace(preset, train=replace(preset.train, loss_weights=weights))
        if args.report_only:
            document = json.loads((args.out / name / "results.json").read_text())
            results = RunResults.from_dict(document)
        else:
            results = run(
                preset, spec, tuple(args.seeds), args.out / name, device=args.device, resume=True
            )
        per_seed = {}
        for seed, r in results.seeds.items():
            p = test_outputs(r.checkpoint, data, args.device)
            assert p.gates is not None and p.shared_branch is not None
            assert p.specific_branch is not None
            per_seed[seed] = {
                **gate_statistics(p.predicted, p.gates, p.shared_branch, p.specific_branch),
                **{k: r.test_metrics[k] for k in ("mae", "corr", "acc2_non0", "f1_non0", "acc7")},
            }
            outputs.setdefault(name, {})[seed] = p
        report[name] = {"results": results, "per_seed": per_seed}
    print_table(report)
    common = set.intersection(*(set(r["per_seed"]) for r in report.values()))
    if "paper-gate" in report and len(report) >= 2 and len(common) >= 2:
        a = next(name for name in report if name != "paper-gate")
        rows = compare(
            report[a]["results"].test_by_seed, report["paper-gate"]["results"].test_by_seed
        )
        print(f"\npaired t-test over seeds, test split (A = {a}, B = paper-gate)")
        for row in rows:
            print(f"  {row.metric:10s} A {row.mean_a:.4f}  B {row.mean_b:.4f}  p {row.p_value:.3g}")
        report["t_test"] = {"rows": [r.__dict__ for r in rows]}  # type: ignore[assignment]
    summary = {k: v if k == "t_test" else v["per_seed"] for k, v in report.items()}
    (args.out / "branch_weights.json").write_text(json.dumps(summary, indent=2))
    if args.figure:
        draw(outputs, args.figure)
        print(f"figure: {args.figure}")


def print_table(report: dict[str, dict]) -> None:
    columns = [
        ("abs_corr_gate_score", "|r(gamma,score)|", "{:.3f}"),
        ("saturated_pct", "gamma<.02|>.98 %", "{:.1f}"),
        ("branches_inside_pct", "branches in [-3,3] %", "{:.1f}"),
        ("mae", "MAE", "{:.3f}"),
        ("corr", "Corr", "{:.3f}"),
        ("acc2_non0", "Acc-2 non0", "{:.3f}"),
        ("acc7", "Acc-7", "{:.3f}"),
    ]
    print("variant     seeds  " + "  ".join(f"{label:>20s}" for _, label, _ in columns))
    for name, r in report.items():
        seeds = r["per_seed"]
        cells = []
        for key, _, fmt in columns:
            values = np.array([s[key] for s in seeds.values()], dtype=float)
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            cells.append(f"{fmt.format(values.mean())} ± {fmt.format(std)}")
        print(f"{name:11s} {len(seeds):5d}  " + "  ".join(f"{c:>20s}" for c in cells))


def draw(outputs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(outputs)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for seed, p in outputs[name].items():
            ax.scatter(p.predicted, p.gates, s=4, alpha=0.4, label=f"seed {seed}")
        r = np.mean([abs(np.corrcoef(p.gates, p.predicted)[0, 1]) for p in outputs[name].values()])
        ax.set_title(f"{name}: mean |r| = {r:.2f}")
        ax.set_xlabel("score (MOSI test)")
        ax.set_ylabel("gamma (shared-branch weight)")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize="small", markerscale=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
