"""Rich rendering of results on stdout; progress and warnings go to stderr."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)


def model_info(info: Any) -> None:
    from mercli.model_info import PAPER_GFLOPS, PAPER_PARAMS_M

    table = Table(title="Model size and cost (MOSI-shaped input, batch 1)")
    table.add_column("figure")
    table.add_column("mer", justify="right")
    table.add_column("paper (Table 9)", justify="right")
    table.add_row("parameters, text backbone excluded", f"{info.parameters_without_backbone / 1e6:.2f} M", f"{PAPER_PARAMS_M} M")
    table.add_row("parameters, all", f"{info.parameters / 1e6:.2f} M", "")
    table.add_row(
        "forward FLOPs, backbone excluded", f"{info.flops / 1e9:.2f} G", f"{PAPER_GFLOPS} G"
    )
    stdout.print(table)
    steps = ", ".join(f"{m} {n}" for m, n in info.steps.items())
    stderr.print(f"input steps: {steps}; a multiply-add counts as 2 FLOPs")


def presets(presets: dict[str, Any], ablations: dict[str, Any]) -> None:
    table = Table(title="Presets")
    for column in ("preset", "task", "lr", "text lr", "loss weights (IN, S, H, RE, MI)"):
        table.add_column(column)
    for name, p in presets.items():
        w = p.train.loss_weights
        weights = ", ".join(f"{v:g}" for v in (w.invertibility, w.similarity, w.independence, w.reconstruction, w.mutual_information))
        table.add_row(name, p.model.task, f"{p.train.lr:g}", f"{p.train.text_lr:g}", weights)
    stdout.print(table)
    stdout.print("ablations: " + ", ".join(ablations))


METRIC_LABELS = {
    "mae": "MAE", "corr": "Corr", "acc2_has0": "Acc-2 has0", "acc2_non0": "Acc-2 non0",
    "f1_has0": "F1 has0", "f1_non0": "F1 non0", "acc7": "Acc-7", "acc5": "Acc-5", "acc3": "Acc-3",
    "acc2": "Acc-2", "f1": "F1",
}
PERCENT = {"acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5", "acc3", "acc2", "f1"}


def format_metric(name: str, mean: float, std: float | None = None) -> str:
    scale, digits = (100.0, 1) if name in PERCENT else (1.0, 3)
    if mean is None:
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def metrics_summary(results: dict[str, Any], title: str) -> None:
    """One row: each test metric as mean ± std over the seeds."""
    import numpy as np

    runs = list(results["seeds"].values())
    names = [k for k in METRIC_LABELS if k in runs[0]["test"]]
    table = Table(title=title)
    for k in names:
        table.add_column(METRIC_LABELS[k], justify="right")
    cells = []
    for k in names:
        values = np.array([r["test"][k] if r["test"][k] is not None else np.nan for r in runs], dtype=float)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
        cells.append(format_metric(k, float(np.mean(values)), std))
    table.add_row(*cells)
    stdout.print(table)


def comparison(rows: list[Any], a: str, b: str) -> None:
    table = Table(title=f"paired t-test over {rows[0].n_seeds} seeds" if rows else "paired t-test")
    for column in ("metric", "A", "B", "p"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(METRIC_LABELS.get(r.metric, r.metric), format_metric(r.metric, r.mean_a),
                      format_metric(r.metric, r.mean_b), f"{r.p_value:.3g}")
    stdout.print(table)
    stderr.print(f"A = {a}\nB = {b}")
