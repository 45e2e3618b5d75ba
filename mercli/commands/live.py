"""``mer analyze --live SOURCE``: the body of the live branch of ``analyze``."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import click


def analyze_live(
    spec: str,
    loaded: Any,
    config: Any,
    *,
    jsonl: bool,
    duration_s: float | None,
    stall_timeout_s: float = 10.0,
    min_silence_s: float | None = None,
    early_step_s: float | None = None,
    use_pause_split: bool = True,
) -> None:
    """Read a live source, print each utterance as it ends, then the summary.

    Ctrl-C ends the stream (the speech in progress is scored) and exits 0; a source that fails or
    stalls ends it with that status. Exit 1 only when the source cannot be opened at all.
    ``min_silence_s``: the endpointing delay (default ``VadConfig``'s); ``early_step_s``: the
    cadence of early emission (:class:`~mercli.live.EarlyEmission`; 0 off; default the
    session's); ``use_pause_split``: its ``use_pause_split``.
    """
    from mercli import render
    from mercli.features.extract import FrontEnd
    from mercli.features.stream import LiveSourceError, LiveStream, parse_source
    from mercli.features.vad import VadConfig
    from mercli.live import EarlyEmission, LiveSession, LiveSummary, finish_live, run_live
    from mercli.pipeline import model_info

    try:
        source = parse_source(spec)
    except LiveSourceError as error:
        raise click.ClickException(str(error)) from error
    info = model_info(loaded)
    stream = LiveStream(
        source,
        fps=config.fps,
        max_side=config.max_side,
        use_video=config.use_faces,
        stall_timeout_s=stall_timeout_s,
    )
    vad = VadConfig() if min_silence_s is None else VadConfig(min_silence_s=min_silence_s)
    session = LiveSession(loaded, FrontEnd(config), vad=vad, use_video=stream.use_video)
    early = EarlyEmission(use_pause_split=use_pause_split)
    if early_step_s:
        early = replace(early, step_s=early_step_s)
    session.early = None if early_step_s == 0 else early
    summary = LiveSummary(spec)

    def emit(utterance: Any) -> None:
        if jsonl:
            click.echo(json.dumps(utterance.to_line(spec, info)))
        else:
            render.live_row(utterance)

    from mercli.features.asr_ct2 import AsrLoadError

    with render.stderr.status("loading Whisper"):
        try:
            session.warm_up()
        except AsrLoadError as error:
            raise click.ClickException(str(error)) from error
    render.stderr.print(f"listening to {spec} (Ctrl-C to stop)", highlight=False)
    if not jsonl:
        render.analysis_header(info)
    try:
        for utterance in run_live(stream, session, summary, duration_s):
            emit(utterance)
    except LiveSourceError as error:
        raise click.ClickException(str(error)) from error
    except KeyboardInterrupt:
        summary.status = "interrupted"
        render.stderr.print("interrupted: scoring the speech in progress", highlight=False)
        for utterance in finish_live(stream, session, summary):
            emit(utterance)
    if jsonl:
        click.echo(json.dumps(summary.to_line(info)))
    else:
        render.live_summary(summary)
    if summary.status in ("failed", "stalled"):
        render.stderr.print(
            f"[red]{summary.status}[/red]: {spec}: {summary.reason}", highlight=False
        )
