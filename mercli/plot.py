"""Timeline figure of one analysed file: score over time, branch weights, speech and face."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mercli.prediction import FileResult


def timeline_paths(target: str | os.PathLike[str], results: Sequence[FileResult]) -> list[Path]:
    """One PNG per file: ``target`` itself for one file, else ``<stem>-<media name>.png``."""
    target = Path(target)
    if len(results) == 1:
        return [target]
    seen: dict[str, int] = {}
    paths = []
    for r in results:
        name = Path(r.path).name.replace(".", "_")
        seen[name] = seen.get(name, 0) + 1
        suffix = f"-{seen[name]}" if seen[name] > 1 else ""
        paths.append(target.with_name(f"{target.stem}-{name}{suffix}{target.suffix or '.png'}"))
    return paths


def plot_timeline(
    result: FileResult,
    path: str | os.PathLike[str],
    frame_times_s: np.ndarray | None = None,
    frame_mask: np.ndarray | None = None,
) -> Path:
    """Write a PNG: per-utterance score (bars over each span, [-3, 3]), the shared / specific
    branch weights (second axis, [0, 1]), speech spans and frames with a face (strips below).

    Args:
        result: the file's predictions.
        path: where to write the PNG.
        frame_times_s, frame_mask: ``(n_frames,)`` times and face flags of the sampled frames.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, strip) = plt.subplots(
        2, 1, figsize=(10, 4.5), sharex=True, gridspec_kw={"height_ratios": [4, 1]}
    )
    end = max([result.duration_s or 0.0] + [p.end_s for p in result.predictions] + [1.0])
    for p in result.predictions:
        colour = "tab:green" if p.score > 0 else "tab:red"
        ax.fill_between([p.start_s, p.end_s], 0, p.score, color=colour, alpha=0.5, step="pre")
        ax.hlines(p.score, p.start_s, p.end_s, color=colour, linewidth=2)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylim(-3.2, 3.2)
    ax.set_ylabel("sentiment score")
    ax.set_title(f"{Path(result.path).name}: {result.status}")
    weights = ax.twinx()
    mids = [(p.start_s + p.end_s) / 2 for p in result.predictions if p.shared_weight is not None]
    shared = [p.shared_weight for p in result.predictions if p.shared_weight is not None]
    if mids:
        weights.plot(mids, shared, "o-", color="tab:blue", label="shared branch")
        weights.plot(
            mids, [1 - s for s in shared], "s--", color="tab:orange", label="specific branch"
        )
        weights.legend(loc="upper right", fontsize="small")
    weights.set_ylim(0, 1)
    weights.set_ylabel("branch weight")
    for p in result.predictions:
        strip.axvspan(p.start_s, p.end_s, ymin=0.55, ymax=0.95, color="tab:purple", alpha=0.6)
    if frame_times_s is not None and frame_mask is not None and len(frame_times_s):
        step = float(np.median(np.diff(frame_times_s))) if len(frame_times_s) > 1 else 0.2
        for t, has_face in zip(frame_times_s, frame_mask, strict=True):
            if has_face:
                strip.axvspan(t, t + step, ymin=0.05, ymax=0.45, color="tab:cyan", alpha=0.8)
    strip.set_yticks([0.25, 0.75], ["face", "speech"])
    strip.set_ylim(0, 1)
    strip.set_xlim(0, end)
    strip.set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
