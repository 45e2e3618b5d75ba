"""``mer analyze`` and ``mer extract``."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import click

from mercli.commands.options import asr_option, device_option, engine_options, json_option

if TYPE_CHECKING:
    from mercli.features.profile import FeatureProfile

speakers_option = click.option(
    "--speakers",
    "speakers",
    default=None,
    metavar="auto|N",
    help="Several speakers: a speaker per utterance (utterances cut where the voice changes), "
    "face features from that speaker's face; `auto` decides how many voices there are.",
)


def front_end_options(func: Any) -> Any:
    """Options shared by ``analyze`` and ``extract``: frame rate, Whisper model, faces, cache."""
    options: list[Callable[[Any], Any]] = [
        click.option(
            "--fps",
            type=click.FloatRange(min=0.1),
            default=None,
            help="Video frames sampled per second for faces [default: the checkpoint's, else 5].",
        ),
        click.option(
            "--whisper",
            default="tiny.en",
            show_default=True,
            help="Whisper model name or checkpoint path (tiny.en and base work offline; "
            "base is slower and more accurate, see README).",
        ),
        asr_option,
        click.option(
            "--language",
            default="en",
            show_default=True,
            help="Language spoken, for multilingual Whisper models such as base: a code "
            "(en, de, fr ...) or 'auto' to detect it. English-only models (*.en) ignore it; "
            "the sentiment model reads English.",
        ),
        click.option(
            "--no-faces",
            "no_faces",
            is_flag=True,
            help="Skip face detection (no vision features or face descriptors).",
        ),
        click.option(
            "--no-cache",
            "no_cache",
            is_flag=True,
            help="Neither read nor write the feature cache (~/.cache/mer/features).",
        ),
        click.option(
            "--overlap-faces",
            "overlap_faces",
            type=click.Choice(["auto", "on", "off"]),
            default="auto",
            show_default=True,
            help="Search faces in a background thread while Whisper transcribes; auto: when "
            "torch has 2 or more threads (OMP_NUM_THREADS). Not with --speakers.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _extract_config(
    fps: float | None,
    whisper: str,
    no_faces: bool,
    device: str,
    profile: FeatureProfile | None = None,
    language: str = "en",
    asr: str = "auto",
    overlap_faces: str = "auto",
) -> Any:
    from mercli.features.asr_ct2 import AsrLoadError, check_ct2
    from mercli.features.extract import ExtractConfig

    try:
        config = ExtractConfig.for_profile(
            profile,
            fps,
            whisper=whisper,
            asr=asr,
            language=None if language.strip().lower() == "auto" else language,
            use_faces=not no_faces,
            device=device,
            overlap_faces=overlap_faces,
        )
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--language") from error
    try:
        if config.asr_backend.startswith("ct2"):
            check_ct2(whisper)  # before any media work
    except AsrLoadError as error:
        raise click.ClickException(str(error)) from error
    return config


@click.command()
@click.argument("inputs", nargs=-1, metavar="FILES_OR_DIRS...")
@click.option(
    "--checkpoint",
    default="default",
    show_default=True,
    help="A checkpoint folder from `mer train`, or the name of a packaged one.",
)
@json_option
@click.option("--jsonl", is_flag=True, help="One JSON line per utterance, streamed per file.")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the JSON document to this file instead of stdout.",
)
@device_option
@front_end_options
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Utterances per model call.",
)
@speakers_option
@click.option(
    "--same-speaker",
    is_flag=True,
    help="The files are all one person's (e.g. short clips): a model that reads the voice "
    "relative to the speaker (the default) reads each file's voice against all of them, "
    "not against that file's alone. The files are scored once all are extracted.",
)
@click.option(
    "--plot",
    "plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Timeline PNG (score, branch weights, speech, face); one per file, named "
    "<stem>-<file>.png, when several files are analysed.",
)
@engine_options
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes (local engine) or Ray actors analysing files, each loading the model and "
    "front end once [default: 1 local, in this process; ray: as many as the cluster holds].",
)
@click.option(
    "--live",
    "live",
    metavar="SOURCE",
    default=None,
    help="Analyse a live source instead of files: a stream URL (rtsp, rtmp, http, udp), - "
    "for stdin, mic, webcam, or mic:NAME / webcam:NAME (README, 'Live input'). Each "
    "utterance is printed when it ends; Ctrl-C prints the summary.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --live: stop after this many seconds of stream.",
)
@click.option(
    "--endpoint-silence",
    type=click.FloatRange(min=0.1, max=5.0),
    default=None,
    help="With --live: seconds of silence that end an utterance [default: 0.6]. Files are cut "
    "at pauses of 2 s; 2 gives the same utterances, each printed that much later.",
)
@click.option(
    "--early-emit",
    "early_emit",
    metavar="SECONDS",
    type=click.FloatRange(min=0),
    default=None,
    help="With --live: while speech goes on without a pause, transcribe it again every SECONDS "
    "and print the utterances two transcripts agree on before the pause; 0 turns it off "
    "(README, 'Live input') [default: 2].",
)
@click.option(
    "--no-pause-split",
    "no_pause_split",
    is_flag=True,
    default=None,
    help="With --live: print an utterance early only where Whisper's own segments end it, not "
    "where a later transcript runs on past, or stops at, a pause in which the earlier one "
    "ended a sentence (README, 'Live input').",
)
def analyze(
    inputs: tuple[str, ...],
    checkpoint: str,
    json_: bool,
    jsonl: bool,
    out: str | None,
    device: str,
    fps: float | None,
    whisper: str,
    asr: str,
    language: str,
    no_faces: bool,
    no_cache: bool,
    overlap_faces: str,
    batch_size: int,
    speakers: str | None,
    same_speaker: bool,
    plot: str | None,
    engine: str,
    address: str | None,
    gpus_per_worker: float | None,
    workers: int | None,
    live: str | None,
    duration: float | None,
    endpoint_silence: float | None,
    early_emit: float | None,
    no_pause_split: bool | None,
) -> None:
    """Per-utterance sentiment of videos or audio files (directories are searched for media).

    Each file gets a status (ok, no_speech, no_audio, unreadable, error); the exit code is
    non-zero only when no file could be analysed.
    """
    from mercli import render
    from mercli.checkpoint import CheckpointError, load_model, open_checkpoint
    from mercli.commands.options import engine_config, resolve_device
    from mercli.features.media import expand_inputs
    from mercli.features.profile import ProfileError, check_profile
    from mercli.jsontext import dumps
    from mercli.pipeline import Analyzer, analyze_on_engine

    if json_ and jsonl:
        raise click.UsageError("choose one of --json and --jsonl")
    engine_setup = engine_config(engine, address, gpus_per_worker, workers)
    if live is not None and (
        inputs or json_ or out or plot or engine != "local" or workers or speakers or same_speaker
    ):
        raise click.UsageError(
            "--live reads one source in this process: no files, --json, --out, --plot, "
            "--engine, --workers, --speakers or --same-speaker"
        )
    if same_speaker and (speakers or engine != "local" or (workers or 1) > 1):
        raise click.UsageError(
            "--same-speaker scores all the files together in this process: not with "
            "--speakers, --engine or --workers"
        )
    live_only = (duration, endpoint_silence, early_emit, no_pause_split)
    if live is None and (not inputs or any(option is not None for option in live_only)):
        raise click.UsageError(
            "give FILES_OR_DIRS, or --live SOURCE (--duration, --endpoint-silence, "
            "--early-emit and --no-pause-split need --live)"
        )
    _check_outputs({out: "JSON document", plot: "timeline"})  # before any work
    try:
        found = open_checkpoint(checkpoint)
        check_profile(found.meta.feature_profile)  # before any media work
    except (CheckpointError, ProfileError) as error:
        raise click.ClickException(str(error)) from error
    paths = expand_inputs(inputs)
    if not paths and live is None:
        raise click.ClickException(f"no media files in {', '.join(inputs)}")
    device = resolve_device(device)
    config = _extract_config(
        fps,
        whisper,
        no_faces,
        device,
        found.meta.feature_profile,
        language=language,
        asr=asr,
        overlap_faces=overlap_faces,
    )
    if speakers is not None:
        config = _with_speakers(config, speakers)
    if live is not None:
        from mercli.commands.live import analyze_live

        with render.stderr.status(f"loading {checkpoint} on {device}"):
            try:
                loaded = load_model(found, device)
            except CheckpointError as error:
                raise click.ClickException(str(error)) from error
        analyze_live(
            live,
            loaded,
            config,
            jsonl=jsonl,
            duration_s=duration,
            min_silence_s=endpoint_silence,
            early_step_s=early_emit,
            use_pause_split=not no_pause_split,
        )
        return
    analyzer = Analyzer(
        load_in_background(load_model, found, device, True),  # text states from their cache
        config,
        batch_size=batch_size,
        use_cache=not no_cache,
        log=lambda message: render.stderr.print(
            message, markup=False, highlight=False, soft_wrap=True
        ),
        same_speaker=same_speaker,
    )
    results = []
    if engine_setup.name == "local" and (workers or 1) == 1:
        stream = analyzer.analyze(paths)
    else:
        stream = _engine_errors(analyze_on_engine(paths, checkpoint, analyzer, engine_setup))
    for result in _checkpoint_errors(stream):
        results.append(result)
        if len(results) == 1 and not (json_ or jsonl or out):
            render.analysis_header(analyzer.info)  # once the model (loading meanwhile) is there
        if jsonl:
            for line in result.to_lines(analyzer.info):
                click.echo(dumps(line))
        elif not (json_ or out):
            render.analysis(result, analyzer.info)
    _finish(results, analyzer, json_=json_, out=out, plot=plot)


def load_in_background(load: Callable[..., Any], *args: Any) -> Future[Any]:
    """``load(*args)`` in a thread: loading the model (mostly importing transformers) overlaps
    with decoding, Whisper and face detection of the first file, which release the GIL."""
    import torch  # noqa: F401  (imported here first, so the two threads never both import it)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mer-load")
    future = pool.submit(load, *args)
    pool.shutdown(wait=False)
    return future


def _checkpoint_errors(results: Any) -> Any:
    """``results``, with a checkpoint or a Whisper backend that fails to load as a one-line
    message."""
    from mercli.checkpoint import CheckpointError
    from mercli.features.asr_ct2 import AsrLoadError

    try:
        yield from results
    except (CheckpointError, AsrLoadError) as error:
        raise click.ClickException(str(error)) from error


def _engine_errors(results: Any) -> Any:
    """``results``, with a run-stopping error of the engine as a one-line message."""
    from mercli.engine import EngineError
    from mercli.features.media import FfmpegNotFoundError

    try:
        yield from results
    except (EngineError, FfmpegNotFoundError) as error:
        raise click.ClickException(str(error)) from error


def _with_speakers(config: Any, value: str) -> Any:
    """``--speakers auto|N`` onto the front-end settings."""
    from dataclasses import replace

    from mercli.features.speakers import parse_speakers

    try:
        n_speakers = parse_speakers(value)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--speakers") from error
    return replace(config, use_speakers=True, n_speakers=n_speakers)


def _check_outputs(outputs: dict[str | None, str]) -> None:
    """One-line error unless each given output path can be written."""
    from mercli.atomic import check_writable

    for path, what in outputs.items():
        if path:
            try:
                check_writable(path, what)
            except ValueError as error:
                raise click.ClickException(str(error)) from error


def _finish(
    results: list[Any], analyzer: Any, *, json_: bool, out: str | None, plot: str | None
) -> None:
    from rich.markup import escape

    from mercli import render
    from mercli.atomic import write_atomically
    from mercli.jsontext import dumps
    from mercli.prediction import analysis_document

    if json_ or out:
        text = dumps(analysis_document(analyzer.info, results), indent=2)
        if out:
            try:
                write_atomically(out, lambda f: f.write(text.encode() + b"\n"))
            except OSError as error:  # e.g. the disk filled up during the analysis
                raise click.ClickException(
                    f"{out}: cannot write the JSON document ({error.strerror or error}); "
                    "nothing was written, and the features are cached: run again with another "
                    "--out"
                ) from error
            render.stderr.print(f"wrote {out}")
        else:
            click.echo(text)
    if plot:
        _plot(results, analyzer, plot)
    failed = [r for r in results if not r.is_analysed]
    for r in failed:
        render.stderr.print(
            f"[red]{r.status}[/red]: {escape(f'{r.path}: {r.reason}')}",
            highlight=False,
            soft_wrap=True,
        )
    if len(failed) == len(results):
        raise click.ClickException(f"no file could be analysed ({len(failed)} failed)")


def _plot(results: list[Any], analyzer: Any, target: str) -> None:
    from mercli import render
    from mercli.plot import plot_timeline, timeline_paths

    drawable = [r for r in results if r.is_analysed]
    for result, path in zip(drawable, timeline_paths(target, drawable), strict=True):
        frame_times_s, frame_mask = analyzer.frames.get(result.path, (None, None))
        try:
            plot_timeline(result, path, frame_times_s, frame_mask)
        except OSError as error:  # a full disk: no partial PNG is left
            path.unlink(missing_ok=True)
            raise click.ClickException(
                f"{path}: cannot write the timeline ({error.strerror or error})"
            ) from error
        render.stderr.print(f"timeline: {path}", highlight=False)


@click.command()
@click.argument("video", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    required=True,
    help="Feature file to write (.npz: arrays + a JSON 'meta' entry, no pickle).",
)
@device_option
@front_end_options
@speakers_option
def extract(
    video: str,
    out: str,
    device: str,
    fps: float | None,
    whisper: str,
    asr: str,
    language: str,
    no_faces: bool,
    no_cache: bool,
    overlap_faces: str,
    speakers: str | None,
) -> None:
    """Run only the front end on one file: utterances, timings and feature shapes.

    Prints a JSON summary on stdout and writes the features to --out.
    """
    from mercli import render
    from mercli.commands.options import resolve_device
    from mercli.descriptors import FRONT_END_FIELDS
    from mercli.features.asr_ct2 import AsrLoadError
    from mercli.features.cache import write_features
    from mercli.features.media import MediaError
    from mercli.jsontext import dumps
    from mercli.pipeline import load_or_extract

    _check_outputs({out: "feature file"})  # before any work
    config = _extract_config(
        fps,
        whisper,
        no_faces,
        resolve_device(device),
        language=language,
        asr=asr,
        overlap_faces=overlap_faces,
    )
    if speakers is not None:
        config = _with_speakers(config, speakers)
    try:
        with render.stderr.status(f"extracting {video}"):
            features, cached = load_or_extract(video, config, use_cache=not no_cache)
    except (MediaError, AsrLoadError) as error:
        raise click.ClickException(str(error)) from error
    except OSError as error:
        raise click.ClickException(f"{video}: unreadable ({error.strerror or error})") from error
    try:
        write_features(features, out)
    except OSError as error:
        raise click.ClickException(
            f"{out}: cannot write the feature file ({error.strerror or error}); nothing was written"
        ) from error
    render.stderr.print(f"wrote {out}" + (" (features from cache)" if cached else ""))
    click.echo(
        dumps(
            {
                "path": features.path,
                "status": features.status,
                "warning": features.warning,
                "face_coverage": features.descriptors.face_coverage,
                "out": out,
                "utterances": [
                    {
                        "start_s": u.start_s,
                        "end_s": u.end_s,
                        "text": u.text,
                        "audio_shape": list(u.audio.shape),
                        "vision_shape": list(u.vision.shape),
                        **({"speaker": u.descriptors.speaker} if config.use_speakers else {}),
                        **u.descriptors.to_dict(FRONT_END_FIELDS),
                    }
                    for u in features.utterances
                ],
                "timings_s": features.timings_s,
            },
            indent=2,
        )
    )
