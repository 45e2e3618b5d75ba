"""``mer prepare``: raw labelled videos -> a feature dataset for ``mer train``."""

from __future__ import annotations

from pathlib import Path

import click

from mercli.commands.options import device_option, engine_options, json_option


@click.command()
@click.argument("raw_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="label.csv with video_id,clip_id,text,label,mode (or id,...; mode train/valid/dev/"
    "test) [default: RAW_DIR/label.csv].",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("dataset.pkl"),
    show_default=True,
    help="Dataset pickle to write (MMSA layout); the report goes beside it as <stem>.report.json.",
)
@click.option(
    "--fps",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Video frames sampled per second for faces.",
)
@click.option("--no-faces", is_flag=True, help="Skip face detection (the dataset has no vision).")
@click.option(
    "--audio-features",
    type=click.Choice(["acoustic", "whisper"]),
    default="acoustic",
    show_default=True,
    help="The audio branch's input: mer's acoustic features (35 per 20 ms), or Whisper "
    "tiny.en's encoder states (384 per 20 ms); a model trained on either is analysed with it.",
)
@click.option(
    "--voice-relative",
    is_flag=True,
    help="Read each video's voice relative to its own speech: its clips' audio frames "
    "standardised over all of them (the video is the speaker). Recorded, so `mer analyze` reads "
    "a file's utterances the same way.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes (local engine) or Ray actors extracting clips, each loading the face "
    "models once [default: 1 local; ray: as many as the cluster holds].",
)
@click.option(
    "--text-backbone",
    default="all-MiniLM-L6-v2",
    show_default=True,
    help="BERT-family name or path whose tokenizer makes the token ids (recorded for training).",
)
@click.option(
    "--max-clip-s",
    type=click.FloatRange(min=0.1),
    default=20.0,
    show_default=True,
    help="Longer clips are truncated to their first this-many seconds.",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Neither read nor write the feature cache (a killed run then starts over).",
)
@device_option
@engine_options
@json_option
def prepare(
    raw_dir: Path,
    labels: Path | None,
    out: Path,
    fps: float,
    no_faces: bool,
    audio_features: str,
    voice_relative: bool,
    workers: int | None,
    text_backbone: str,
    max_clip_s: float,
    no_cache: bool,
    device: str,
    engine: str,
    address: str | None,
    gpus_per_worker: float | None,
    json_: bool,
) -> None:
    """Extract features from labelled clips (MMSA-FET layout: RAW_DIR/Raw/<video_id>/<clip_id>.mp4)
    into a dataset for `mer train --dataset mosi --data OUT`.

    Features are cached per clip, so a killed run resumes where it stopped. Clips that fail are
    left out and listed with their reason in the report; the exit code is non-zero only when no
    clip could be prepared.
    """
    from rich.markup import escape

    from mercli import render
    from mercli.atomic import check_writable
    from mercli.commands.options import engine_config, resolve_device
    from mercli.data import DatasetError
    from mercli.engine import EngineError
    from mercli.features.extract import ExtractConfig
    from mercli.features.media import FfmpegNotFoundError
    from mercli.features.profile import AUDIO_FEATURES
    from mercli.jsontext import dumps
    from mercli.prepare import PrepareConfig, PrepareError, report_path
    from mercli.prepare import prepare as run_prepare

    engine_setup = engine_config(engine, address, gpus_per_worker, workers)
    labels = labels or raw_dir / "label.csv"
    try:  # before any work: the dataset and its report go there
        check_writable(out, "dataset")
        check_writable(report_path(out), "report")
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    config = PrepareConfig(
        extract=ExtractConfig(
            fps=fps,
            use_faces=not no_faces,
            device=resolve_device(device),
            audio_extractor=AUDIO_FEATURES[audio_features],
        ),
        text_backbone=text_backbone,
        max_clip_s=max_clip_s,
        workers=workers or 1,
        use_cache=not no_cache,
        voice_relative=voice_relative,
    )

    def log(message: str) -> None:
        render.stderr.print(message, markup=False, highlight=False, soft_wrap=True)

    try:
        report = run_prepare(raw_dir, labels, out, config, log=log, engine=engine_setup)
    except (DatasetError, PrepareError, EngineError, FfmpegNotFoundError, OSError) as error:
        raise click.ClickException(str(error)) from error
    per_split = ", ".join(f"{s} {n}" for s, n in report.prepared.items())
    log(
        f"prepared {report.n_prepared} of {report.n_clips} clips ({per_split}; "
        f"{report.from_cache} from cache) in {report.seconds:.1f} s; "
        f"report: {report_path(out)}"
    )
    for failure in report.failed:
        line = escape(f"{failure['id']}: {failure['reason']}")
        render.stderr.print(
            f"[red]failed[/red]: {line}",
            highlight=False,
            soft_wrap=True,
        )
    if report.truncated:
        log(f"{len(report.truncated)} clip(s) longer than {max_clip_s:g} s were truncated")
    empty = [s for s, n in report.prepared.items() if n == 0]
    if report.n_prepared and empty:
        log(f"warning: no clip in split(s) {', '.join(empty)}; `mer train` needs all three")
    if json_:
        click.echo(dumps(report.to_dict()))
    if report.n_prepared == 0:
        raise click.ClickException(
            f"no clip could be prepared ({len(report.failed)} failed; see {report_path(out)})"
        )
    log(f"wrote {out}")
