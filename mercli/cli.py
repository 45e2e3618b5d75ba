"""The ``mer`` command line. Commands parse options, call a function of mercli, and render.

Heavy libraries (torch, transformers, whisper) are imported inside the commands so that
``mer --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mercli import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mer")
def cli() -> None:
    """End-to-end emotion analysis of video: per-utterance sentiment from text, voice and face."""


def json_option(func: Any) -> Any:
    return click.option("json_", "--json", is_flag=True, help="Print one JSON document on stdout.")(func)


def preset_option(func: Any) -> Any:
    return click.option(
        "--preset", default="mosi", show_default=True,
        type=click.Choice(["mosi", "mosei", "urfunny"]), help="Dataset preset.",
    )(func)


def ablation_options(func: Any) -> Any:
    from mercli.config import ABLATIONS

    func = click.option(
        "--ablation", "ablations", multiple=True, type=click.Choice(sorted(ABLATIONS)),
        help="Switch off a part of the model or a loss term (repeatable).",
    )(func)
    return click.option(
        "--modalities", default="text,audio,vision", show_default=True,
        help="Comma-separated subset of text, audio, vision.",
    )(func)


def parse_modalities(value: str) -> tuple[str, ...]:
    from mercli.schema import MODALITIES

    names = tuple(m.strip() for m in value.split(",") if m.strip())
    unknown = [m for m in names if m not in MODALITIES]
    if unknown or not names:
        raise click.BadParameter(f"choose from {', '.join(MODALITIES)}; got {value!r}")
    return tuple(m for m in MODALITIES if m in names)


def build_preset(preset: str, modalities: str, ablations: tuple[str, ...]) -> Any:
    from dataclasses import replace

    from mercli.config import apply_ablation, from_name

    chosen = from_name(preset)
    chosen = replace(chosen, model=replace(chosen.model, modalities=parse_modalities(modalities)))
    for ablation in ablations:
        chosen = apply_ablation(chosen, ablation)
    return chosen


@cli.command("model-info")
@preset_option
@ablation_options
@click.option("--text-backbone", default=None, help="Count a BERT-family text backbone too (name or path).")
@json_option
def model_info(preset: str, modalities: str, ablations: tuple[str, ...], text_backbone: str | None, json_: bool) -> None:
    """Parameters and FLOPs of the model on a MOSI-shaped input, beside the paper's figures."""
    from dataclasses import replace

    from mercli import render
    from mercli.model_info import describe

    config = build_preset(preset, modalities, ablations).model
    info = describe(replace(config, text_backbone=text_backbone))
    if json_:
        click.echo(json.dumps(info.__dict__))
    else:
        render.model_info(info)


@cli.command()
@json_option
def presets(json_: bool) -> None:
    """List the dataset presets and the ablation switches."""
    from mercli import render
    from mercli.config import ABLATIONS, PRESETS

    if json_:
        data = {
            "presets": {name: {"model": p.model.to_dict(), "train": p.train.to_dict()} for name, p in PRESETS.items()},
            "ablations": ABLATIONS,
        }
        click.echo(json.dumps(data, default=list))
    else:
        render.presets(PRESETS, ABLATIONS)


def main() -> None:  # pragma: no cover - entry point used by `python -m mercli`
    cli(prog_name="mer")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
