"""Timeline figure of one analysed file: score over time, branch weights, speech and face."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mercli.prediction import FileResult

# Speakers S1, S2, ... (``--speakers``): colours no other panel uses.
SPEAKER_COLOURS = ("tab:brown", "tab:pink", "tab:olive", "tab:grey", "gold", "navy")


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


MODALITY_COLOURS = {"text": "tab:blue", "audio": "tab:orange", "vision": "tab:green"}


def plot_timeline(
    result: FileResult,
    path: str | os.PathLike[str],
    frame_times_s: np.ndarray | None = None,
    frame_mask: np.ndarray | None = None,
) -> Path:
    """Write a PNG with one panel per kind of value, on a shared time axis:

    1. the per-utterance score (bars over each span, [-3, 3]);
    2. the shared / specific branch weights ([0, 1], their own axis: a weight is not a score);
    3. per-modality contributions (how far each modality moved the score, in score units);
    4. speech spans and the sampled frames with a face.

    With speakers (``--speakers``), speech spans and a light band behind each score take the
    speaker's colour.

    Args:
        result: the file's predictions.
        path: where to write the PNG.
        frame_times_s, frame_mask: ``(n_frames,)`` times and face flags of the sampled frames.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, weights, effects, strip) = plt.subplots(
        4, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1.5, 2, 1]}
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
    _branch_weights(weights, result)
    _contributions(effects, result)
    speakers = sorted({s for p in result.predictions if (s := p.descriptors.speaker) is not None})
    for p in result.predictions:  # speech, coloured by speaker with --speakers
        colour = "tab:purple"
        if (speaker := p.descriptors.speaker) is not None:
            colour = SPEAKER_COLOURS[speakers.index(speaker) % len(SPEAKER_COLOURS)]
            ax.axvspan(p.start_s, p.end_s, color=colour, alpha=0.08, linewidth=0)
        strip.axvspan(p.start_s, p.end_s, ymin=0.55, ymax=0.95, color=colour, alpha=0.6)
    if speakers:
        from matplotlib.patches import Patch

        handles = [
            Patch(color=SPEAKER_COLOURS[i % len(SPEAKER_COLOURS)], alpha=0.6, label=name)
            for i, name in enumerate(speakers)
        ]
        strip.legend(handles=handles, loc="upper left", fontsize="small", ncol=len(handles))
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


def _branch_weights(ax: Any, result: FileResult) -> None:
    """Shared-branch weight as a bar from 0 over each span; the specific weight is the rest."""
    drawn = [p for p in result.predictions if p.shared_weight is not None]
    for p in drawn:
        shared = float(p.shared_weight)  # type: ignore[arg-type]
        ax.fill_between([p.start_s, p.end_s], 0, shared, color="tab:blue", alpha=0.6)
        ax.fill_between([p.start_s, p.end_s], shared, 1, color="tab:orange", alpha=0.35)
    if drawn:
        ax.legend(
            handles=[
                _patch("tab:blue", 0.6, "shared branch"),
                _patch("tab:orange", 0.35, "specific branch"),
            ],
            loc="upper right",
            fontsize="small",
        )
    else:
        ax.text(0.5, 0.5, "no gated fusion in this model", ha="center", transform=ax.transAxes)
    ax.set_ylim(0, 1)
    ax.set_ylabel("branch\nweight")


def _contributions(ax: Any, result: FileResult) -> None:
    """Side-by-side bars per utterance: the score minus the score without each modality."""
    modalities = list(result.predictions[0].contributions) if result.predictions else []
    n = max(len(modalities), 1)
    for p in result.predictions:
        width = (p.end_s - p.start_s) / n
        for k, m in enumerate(modalities):
            value = p.contributions.get(m)
            left = p.start_s + k * width
            if value is None:  # the utterance lacked this modality
                ax.plot([left + width / 2], [0], "x", color=MODALITY_COLOURS[m], markersize=5)
                continue
            ax.bar(left, value, width=width, align="edge", color=MODALITY_COLOURS[m], alpha=0.8)
    if modalities:
        ax.legend(
            handles=[_patch(MODALITY_COLOURS[m], 0.8, m) for m in modalities],
            loc="upper right",
            fontsize="small",
            ncol=len(modalities),
        )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel("contribution\n(score units)")


def _patch(colour: str, alpha: float, label: str) -> Any:
    from matplotlib.patches import Patch

    return Patch(color=colour, alpha=alpha, label=label)
