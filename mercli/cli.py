"""The ``mer`` command line. Commands parse options, call a function of mercli, and render.

Heavy libraries (torch, transformers, whisper) are imported inside the commands so that
``mer --help`` stays instant.
"""

from __future__ import annotations

import click

from mercli import __version__
from mercli.commands.analyze import analyze, extract
from mercli.commands.model import model_info, presets
from mercli.commands.prepare import prepare
from mercli.commands.train import compare, evaluate, train


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mer")
def cli() -> None:
    """End-to-end emotion analysis of video: per-utterance sentiment from text, voice and face."""


for command in (analyze, extract, prepare, model_info, presets, train, evaluate, compare):
    cli.add_command(command)
