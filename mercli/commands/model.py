"""``mer model-info`` and ``mer presets``."""

from __future__ import annotations

import json

import click

from mercli.commands.options import ablation_options, build_preset, json_option


@click.command("model-info")
@click.option(
    "--preset",
    default="mosi",
    show_default=True,
    type=click.Choice(["mosi", "mosei", "urfunny"]),
    help="Dataset preset.",
)
@ablation_options
@click.option(
    "--text-backbone", default=None, help="Count a BERT-family text backbone too (name or path)."
)
@json_option
def model_info(
    preset: str,
    modalities: str,
    ablations: tuple[str, ...],
    stride: int,
    backbone_checkpointing: bool,
    text_backbone: str | None,
    json_: bool,
) -> None:
    """Parameters and FLOPs of the model on a MOSI-shaped input, beside the paper's figures."""
    from dataclasses import replace

    from mercli import render
    from mercli.model_info import describe

    config = build_preset(preset, modalities, ablations, stride, backbone_checkpointing).model
    info = describe(replace(config, text_backbone=text_backbone))
    if json_:
        click.echo(json.dumps(info.__dict__))
    else:
        render.model_info(info)


@click.command()
@json_option
def presets(json_: bool) -> None:
    """List the dataset presets and the ablation switches."""
    from mercli import render
    from mercli.config import ABLATIONS, PRESETS

    if json_:
        data = {
            "presets": {
                n: {"model": p.model.to_dict(), "train": p.train.to_dict()}
                for n, p in PRESETS.items()
            },
            "ablations": ABLATIONS,
        }
        click.echo(json.dumps(data, default=list))
    else:
        render.presets(PRESETS, ABLATIONS)
