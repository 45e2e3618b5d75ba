"""Reusable option groups and small parsers shared by the commands."""

from __future__ import annotations

from typing import Any

import click

from mercli.data import BENCHMARKS


def json_option(func: Any) -> Any:
    return click.option("json_", "--json", is_flag=True, help="Print one JSON document on stdout.")(
        func
    )


def device_option(func: Any) -> Any:
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (CUDA when there is one), cpu, cuda or cuda:N.",
    )(func)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    return device


def preset_option(func: Any) -> Any:
    return click.option(
        "--preset",
        default=None,
        type=click.Choice(BENCHMARKS),
        help="Hyperparameter preset; defaults to the dataset's own.",
    )(func)


def ablation_options(func: Any) -> Any:
    """``--ablation``, ``--modalities``, ``--stride`` and ``--backbone-checkpointing``."""
    from mercli.config import ABLATIONS, MAX_STRIDE

    func = click.option(
        "--backbone-checkpointing",
        is_flag=True,
        help="Recompute the fine-tuned text backbone's activations in backward: the same "
        "gradients in less memory, about a quarter slower.",
    )(func)
    func = click.option(
        "--stride",
        type=click.IntRange(1, MAX_STRIDE),
        default=1,
        show_default=True,
        help="Merge every N audio and vision steps into one before their encoders (a strided "
        "Conv1D front; not the paper's form, which is 1). 8 trains several times faster on "
        "MOSI shapes.",
    )(func)
    func = click.option(
        "--ablation",
        "ablations",
        multiple=True,
        type=click.Choice(sorted(ABLATIONS)),
        help="Switch off a part of the model or a loss term (repeatable).",
    )(func)
    return click.option(
        "--modalities",
        default="text,audio,vision",
        show_default=True,
        help="Comma-separated subset of text, audio, vision.",
    )(func)


def parse_modalities(value: str) -> tuple[str, ...]:
    from mercli.schema import MODALITIES

    names = tuple(m.strip() for m in value.split(",") if m.strip())
    unknown = [m for m in names if m not in MODALITIES]
    if unknown or not names:
        raise click.BadParameter(
            f"choose from {', '.join(MODALITIES)}; got {value!r}", param_hint="--modalities"
        )
    return tuple(m for m in MODALITIES if m in names)


def build_preset(
    preset: str,
    modalities: str,
    ablations: tuple[str, ...],
    stride: int = 1,
    backbone_checkpointing: bool = False,
) -> Any:
    from dataclasses import replace

    from mercli.config import apply_ablation, from_name

    chosen = from_name(preset)
    model = chosen.model
    model = replace(
        model,
        modalities=parse_modalities(modalities),
        audio=replace(model.audio, stride=stride),
        vision=replace(model.vision, stride=stride),
        use_backbone_checkpointing=backbone_checkpointing,
    )
    chosen = replace(chosen, model=model)
    for ablation in ablations:
        chosen = apply_ablation(chosen, ablation)
    return chosen


def engine_options(func: Any) -> Any:
    """``--engine``, ``--address`` and ``--gpus-per-worker``: where per-clip work runs."""
    for option in reversed(
        [
            click.option(
                "--engine",
                type=click.Choice(["local", "ray"]),
                default="local",
                show_default=True,
                help="Run the clips in local processes, or on a Ray cluster "
                "(pip install 'mercli[ray]').",
            ),
            click.option(
                "--address",
                default=None,
                help="Ray cluster to join (auto, or ray://HEAD:10001) [default: start Ray on "
                "this machine]. Needs --engine ray.",
            ),
            click.option(
                "--gpus-per-worker",
                type=click.FloatRange(min=0.0),
                default=None,
                help="GPUs each Ray actor holds (0.25: four actors share a GPU) [default: 1 "
                "when the cluster has GPUs, else 0]. Needs --engine ray.",
            ),
        ]
    ):
        func = option(func)
    return func


def engine_config(
    engine: str, address: str | None, gpus_per_worker: float | None, workers: int | None
) -> Any:
    """The :class:`~mercli.engine.EngineConfig` of the engine options; checks Ray is there."""
    from mercli.engine import EngineConfig, EngineError, check_engine

    if engine == "local" and (address is not None or gpus_per_worker is not None):
        flag = "--address" if address is not None else "--gpus-per-worker"
        raise click.UsageError(f"{flag} needs --engine ray")
    config = EngineConfig(engine, workers, address, gpus_per_worker)  # type: ignore[arg-type]
    try:
        check_engine(config)
    except EngineError as error:
        raise click.ClickException(str(error)) from error
    return config


ASR_CHOICES = ("auto", "ct2", "ct2-int8", "torch")


def asr_option(func: Any) -> Any:
    """``--asr``: which Whisper implementation transcribes (same weights either way)."""
    return click.option(
        "--asr",
        type=click.Choice(ASR_CHOICES),
        default="auto",
        show_default=True,
        help="Whisper backend, same weights: ct2 (faster-whisper on CTranslate2; float32 on the "
        "CPU, float16 on CUDA; openai-whisper's transcripts, about 2x faster on the CPU), "
        "ct2-int8 (int8 weights: faster still, transcripts differ on hard audio), torch "
        "(openai-whisper). auto: ct2 on the CPU, torch on a GPU or for a .pt checkpoint.",
    )(func)
