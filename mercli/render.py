"""Rich rendering of results on stdout; progress and warnings go to stderr."""

from __future__ import annotations

from pathlib import Path
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
    table.add_row(
        "parameters, text backbone excluded",
        f"{info.parameters_without_backbone / 1e6:.2f} M",
        f"{PAPER_PARAMS_M} M",
    )
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
        weights = ", ".join(
            f"{v:g}"
            for v in (
                w.invertibility,
                w.similarity,
                w.independence,
                w.reconstruction,
                w.mutual_information,
            )
        )
        table.add_row(name, p.model.task, f"{p.train.lr:g}", f"{p.train.text_lr:g}", weights)
    stdout.print(table)
    stdout.print("ablations: " + ", ".join(ablations))


METRIC_LABELS = {
    "mae": "MAE",
    "corr": "Corr",
    "acc2_has0": "Acc-2 has0",
    "acc2_non0": "Acc-2 non0",
    "f1_has0": "F1 has0",
    "f1_non0": "F1 non0",
    "acc7": "Acc-7",
    "acc5": "Acc-5",
    "acc3": "Acc-3",
    "acc2": "Acc-2",
    "f1": "F1",
}
PERCENT = {"acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5", "acc3", "acc2", "f1"}


def format_metric(name: str, mean: float, std: float | None = None) -> str:
    scale, digits = (100.0, 1) if name in PERCENT else (1.0, 3)
    if mean is None:
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def metrics_summary(test_by_seed: dict[str, dict[str, float]], title: str) -> None:
    """One row: each test metric as mean ± std over the seeds (per seed, its test metrics)."""
    import numpy as np

    runs = list(test_by_seed.values())
    names = [k for k in METRIC_LABELS if k in runs[0]]
    table = Table(title=title)
    for k in names:
        table.add_column(METRIC_LABELS[k], justify="right")
    cells = []
    for k in names:
        values = np.array([r[k] if r[k] is not None else np.nan for r in runs], dtype=float)
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
        cells.append(format_metric(k, float(np.mean(values)), std))
    table.add_row(*cells)
    stdout.print(table)


def metrics_rows(rows: dict[str, dict[str, float]], title: str) -> None:
    """One row per output (``fused``, ``shared_branch``, ``specific_branch``), one column per
    metric."""
    first = next(iter(rows.values()))
    names = [k for k in METRIC_LABELS if k in first]
    table = Table(title=title)
    table.add_column("output", no_wrap=True)
    for k in names:
        table.add_column(METRIC_LABELS[k], justify="right")
    for output, metrics in rows.items():
        label = output.replace("_", " ") if output != "fused" else "fused (the model)"
        table.add_row(label, *(format_metric(k, metrics[k]) for k in names))
    stdout.print(table)


def comparison(rows: list[Any], a: str, b: str) -> None:
    table = Table(title=f"paired t-test over {rows[0].n_seeds} seeds" if rows else "paired t-test")
    for column in ("metric", "A", "B", "p"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            METRIC_LABELS.get(r.metric, r.metric),
            format_metric(r.metric, r.mean_a),
            format_metric(r.metric, r.mean_b),
            f"{r.p_value:.3g}",
        )
    stdout.print(table)
    stderr.print(f"A = {a}\nB = {b}")


# ---------------------------------------------------------------------------------------------
# mer analyze

_BAR_CELLS = 2  # half-width of the score bar in characters


def score_bar(score: float) -> str:
    """A Rich-markup bar centred on 0: red to the left for negative, green to the right."""
    n = min(_BAR_CELLS, round(abs(score) * _BAR_CELLS / 3))
    if score < 0:
        return f"{' ' * (_BAR_CELLS - n)}[red]{'█' * n}[/red]│{' ' * _BAR_CELLS}"
    return f"{' ' * _BAR_CELLS}│[green]{'█' * n}[/green]{' ' * (_BAR_CELLS - n)}"


def _opt(value: float | None, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def analysis(result: Any, model: Any) -> None:
    """One file's per-utterance table and a summary line.

    Model outputs (score, polarity, 7-class label, branch weights) come first; presence (face
    coverage) next; descriptors (dominant expression, vocal emotion, pitch, energy), which are
    measurements and not the model's reading, last and dimmed.
    """
    from rich.markup import escape

    if not result.predictions:
        stdout.print(
            f"[bold]{escape(result.path)}[/bold]: [yellow]{result.status}[/yellow]"
            + (f" ({escape(result.reason)})" if result.reason else "")
        )
        _summary_line(result)
        return
    table = Table(
        title=escape(result.path),
        title_justify="left",
        padding=(0, 1),
        caption="shared / specif.: weights of the shared and specific-guided branches; "
        "contrib.: how far each modality (T text, A audio, V vision) moved the score, - where "
        "the utterance lacked it; dim columns are descriptors measured from the media, not "
        "model outputs",
        caption_justify="left",
    )
    table.add_column("start\nend", justify="right", no_wrap=True)
    with_speakers = any(p.descriptors.speaker is not None for p in result.predictions)
    if with_speakers:
        table.add_column("speaker", no_wrap=True)
    table.add_column("transcript", ratio=1, min_width=12, overflow="fold")
    table.add_column("score", no_wrap=True)
    table.add_column("polarity\n7-class", min_width=8)
    table.add_column("shared\nspecif.", justify="right", no_wrap=True)
    table.add_column("contrib.", justify="right", no_wrap=True)
    table.add_column("face", justify="right", no_wrap=True)
    table.add_column("expr.", style="dim", header_style="dim", no_wrap=True)
    table.add_column("voice", style="dim", header_style="dim", no_wrap=True)
    table.add_column(
        "pitch\nenergy", style="dim", header_style="dim", justify="right", no_wrap=True
    )
    for p in result.predictions:
        weights = (
            "-" if p.shared_weight is None else f"{p.shared_weight:.2f}\n{p.specific_weight:.2f}"
        )
        d = p.descriptors
        expression = "-" if d.expression is None else f"{d.expression}\n{d.expression_prob:.2f}"
        table.add_row(
            f"{p.start_s:.1f}\n{p.end_s:.1f}",
            *([_speaker_cell(d.speaker)] if with_speakers else []),
            escape(p.text),
            f"{p.score:+.2f}\n{score_bar(p.score)}",
            f"{p.polarity}\n{p.label_name}",
            weights,
            contributions_cell(p.contributions),
            _opt(None if d.face_coverage is None else 100 * d.face_coverage, ".0f", "%"),
            expression,
            "-" if d.voice_emotion is None else f"{d.voice_emotion}\n{d.voice_emotion_prob:.2f}",
            f"{_opt(d.pitch_hz, '.0f', ' Hz')}\n{_opt(d.energy_db, '.0f', ' dB')}",
        )
    stdout.print(table)
    _summary_line(result)


def contributions_cell(contributions: dict[str, float | None]) -> str:
    """One line per modality the model reads: ``T +1.20``, or ``V     -`` where it was absent."""
    return "\n".join(
        f"{m[0].upper()} {'    -' if v is None else f'{v:+.2f}'}" for m, v in contributions.items()
    )


SPEAKER_COLOURS = ("cyan", "magenta", "yellow", "blue", "green", "red", "bright_cyan", "white")


def _speaker_cell(speaker: str | None) -> str:
    if speaker is None:
        return "-"
    index = int(speaker[1:]) - 1 if speaker[1:].isdigit() else 0
    return f"[{SPEAKER_COLOURS[index % len(SPEAKER_COLOURS)]}]{speaker}[/]"


def _summary_line(result: Any) -> None:
    from rich.markup import escape

    s = result.summary()
    n = s["n_utterances"]
    parts = [f"{n} utterance{'' if n == 1 else 's'}", f"{s['speech_s']:.1f} s of speech"]
    if s["mean_score"] is not None:
        parts.append(f"mean score {s['mean_score']:+.2f} ({s['mean_label_name']})")
    reads = _modalities_read(result.predictions)
    if reads:
        parts.append(f"read {reads}")
    if s["face_coverage"] is not None:
        parts.append(f"face in {100 * s['face_coverage']:.0f}% of sampled frames")
    if s["expression"] is not None:
        parts.append(f"dominant expression {s['expression']} ({s['expression_prob']:.2f})")
    stdout.print(
        f"[bold]summary[/bold] {escape(Path(result.path).name)}: {result.status}; "
        + "; ".join(parts)
    )
    for speaker in result.speaker_summaries() or []:
        face = speaker["face_coverage"]
        stdout.print(
            f"  {_speaker_cell(speaker['speaker'])}: {speaker['speaking_s']:.1f} s in "
            f"{speaker['n_utterances']} utterance{'' if speaker['n_utterances'] == 1 else 's'}; "
            f"mean score {speaker['mean_score']:+.2f} ({speaker['mean_label_name']})"
            + ("" if face is None else f"; own face in {100 * face:.0f}% of frames")
            + ("" if speaker["expression"] is None else f"; {speaker['expression']}")
        )


def _modalities_read(predictions: list[Any]) -> str:
    """``text 2/2, audio 2/2, vision 0/2``: in how many utterances the model read each modality
    (empty for a single-modality model, which always reads its one)."""
    if not predictions or len(predictions[0].contributions) < 2:
        return ""
    n = len(predictions)
    return ", ".join(
        f"{m} {sum(m in p.modalities_read for p in predictions)}/{n}"
        for m in predictions[0].contributions
    )


def analysis_header(model: Any) -> None:
    """What the model reads, above the tables, and which columns are descriptors only."""
    modalities = ", ".join(model.modalities)
    if model.text_only:
        note = " (text only: audio and face columns are descriptors, not model inputs)"
    elif "vision" not in model.modalities:
        note = " (face columns are descriptors, not model inputs)"
    else:
        note = ""
    stdout.print(f"model: {model.checkpoint}; reads {modalities}{note}")


# ---------------------------------------------------------------------------------------------
# mer analyze --live


def live_row(utterance: Any) -> None:
    """One utterance of a live stream, printed the moment it is scored: stream times, score,
    polarity and label, face coverage, latency (followed by ``*`` when it was emitted early,
    before its stretch of speech ended), and the transcript."""
    from rich.markup import escape

    p = utterance.prediction
    d = p.descriptors
    face = "" if d.face_coverage is None else f"  face {100 * d.face_coverage:.0f}%"
    expression = "" if d.expression is None else f" {d.expression}"
    early = "*" if getattr(utterance, "is_early", False) else " "
    stdout.print(
        f"[dim]{p.start_s:7.1f}-{p.end_s:<7.1f}[/dim] {p.score:+.2f} {score_bar(p.score)} "
        f"{p.polarity:<8} {p.label_name:<17}{face}{expression}  "
        f"[dim]+{utterance.latency_s:.1f} s{early}[/dim] {escape(p.text)}",
        highlight=False,
        soft_wrap=True,
    )


def live_summary(summary: Any) -> None:
    """The last line of a live stream: how it ended and its totals."""
    from rich.markup import escape

    s = summary.to_dict()
    n = s["n_utterances"]
    parts = [
        f"{s['stream_s']:.1f} s of stream",
        f"{n} utterance{'' if n == 1 else 's'}",
        f"{s['speech_s']:.1f} s of speech",
    ]
    if s["mean_score"] is not None:
        parts.append(f"mean score {s['mean_score']:+.2f} ({s['mean_label_name']})")
        parts.append(f"latency mean {s['mean_latency_s']:.2f} s, max {s['max_latency_s']:.2f} s")
    stdout.print(
        f"[bold]summary[/bold] {escape(summary.source)}: {summary.status}; " + "; ".join(parts),
        highlight=False,
    )
