"""``python -m mercli``: the same as ``mer`` (and what ``torchrun -m mercli`` starts)."""

from mercli.cli import cli

cli(prog_name="mer")
