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
