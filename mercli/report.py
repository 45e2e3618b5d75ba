"""The interpretability report of a trained model (paper Figs. 4-5) and its learning curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tsne(predictions: Any, path: Path, seed: int = 0, max_points: int = 600) -> Path:
    """t-SNE of the shared (r) and specific (u) features of each modality, one colour each."""
    from sklearn.manifold import TSNE

    plt = _pyplot()
    modalities = list(predictions.shared)
    n = min(len(predictions.labels), max_points)
    rows = np.random.default_rng(seed).permutation(len(predictions.labels))[:n]
    features = np.concatenate(
        [predictions.shared[m][rows] for m in modalities]
        + [predictions.specific[m][rows] for m in modalities]
    )
    perplexity = float(max(2, min(30, (len(features) - 1) // 3)))
    points = TSNE(2, perplexity=perplexity, random_state=seed, init="pca").fit_transform(features)
    fig, ax = plt.subplots(figsize=(7, 6))
    markers = {"shared": "o", "specific": "x"}
    for k, (kind, m) in enumerate(
        [("shared", m) for m in modalities] + [("specific", m) for m in modalities]
    ):
        block = points[k * n : (k + 1) * n]
        ax.scatter(
            block[:, 0], block[:, 1], s=10, marker=markers[kind], label=f"{m} {kind}", alpha=0.7
        )
    ax.set_title("t-SNE of shared (r) and specific (u) features")
    ax.legend(fontsize=8, markerscale=2)
    return _save(fig, path)


def plot_gates(predictions: Any, path: Path) -> Path | None:
    """Box plots of the two branch weights, gamma (shared) and 1 - gamma (specific-guided)."""
    if predictions.gates is None:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.boxplot([predictions.gates, 1 - predictions.gates])
    ax.set_xticks([1, 2], ["shared branch (gamma)", "specific-guided (1 - gamma)"])
    ax.set_ylabel("branch weight")
    ax.set_ylim(0, 1)
    ax.set_title("SGAFF branch weights on the test split")
    return _save(fig, path)


def plot_learning_curves(history: list[Any], path: Path) -> Path:
    """Train and validation loss per epoch."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [h.epoch for h in history]
    ax.plot(epochs, [h.train_loss for h in history], label="train (total loss)")
    ax.plot(epochs, [h.valid_loss for h in history], label="valid (task loss)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    return _save(fig, path)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def write_report(
    checkpoint: Path, data: Any, history: list[Any], out_dir: Path, device: str = "cpu"
) -> list[Path]:
    """All figures for the model in ``checkpoint`` on the test split of ``data``."""
    from mercli.checkpoint import load_checkpoint
    from mercli.train import make_loader, predict

    model, _ = load_checkpoint(checkpoint, device)
    loader = make_loader(data.test, data.collate, 64, shuffle=False, seed=0)
    predictions = predict(model, loader, device)
    written = [
        plot_tsne(predictions, out_dir / "tsne_features.png"),
        plot_learning_curves(history, out_dir / "learning_curves.png"),
    ]
    gates = plot_gates(predictions, out_dir / "branch_weights.png")
    return written + ([gates] if gates else [])
