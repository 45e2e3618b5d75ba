"""The command line: help everywhere, pure JSON on stdout, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from mercli.cli import cli


def _commands() -> list[str]:
    return sorted(cli.commands)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    assert cli.commands[command].help, f"{command} has no help text"
    assert "Usage:" in result.output


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from mercli.cli import cli; from click.testing import CliRunner;"
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0;"
        "names = ('torch', 'transformers', 'whisper', 'librosa', 'cv2');"
        "heavy = [m for m in names if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_model_info_json_is_pure_stdout() -> None:
    result = CliRunner().invoke(cli, ["model-info", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert set(info) == {"parameters", "parameters_without_backbone", "flops", "steps"}
    assert 8.0e6 < info["parameters_without_backbone"] < 9.3e6  # the paper's 8.63 M
    assert info["flops"] > 1e9


def test_model_info_ablation_reduces_parameters() -> None:
    def params(*args: str) -> int:
        result = CliRunner().invoke(cli, ["model-info", "--json", *args], catch_exceptions=False)
        return json.loads(result.stdout)["parameters"]

    assert params("--ablation", "no-mic") < params()
    assert params("--modalities", "text") < params()


def test_stride_shortens_what_audio_and_vision_attend_over() -> None:
    def flops(*args: str) -> float:
        result = CliRunner().invoke(cli, ["model-info", "--json", *args], catch_exceptions=False)
        return json.loads(result.stdout)["flops"]

    assert flops("--stride", "8") < 0.5 * flops()
    assert CliRunner().invoke(cli, ["model-info", "--stride", "0"]).exit_code == 2


def test_training_cost_switches_reach_the_model_config() -> None:
    from mercli.commands.options import build_preset

    plain = build_preset("mosi", "text,audio,vision", ()).model
    fast = build_preset("mosi", "text,audio,vision", (), 8, True).model
    assert (plain.audio.stride, plain.vision.stride, plain.use_backbone_checkpointing) == (
        1,
        1,
        False,
    )
    assert (fast.audio.stride, fast.vision.stride, fast.text.stride) == (8, 8, 1)
    assert fast.use_backbone_checkpointing


def test_unknown_modality_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["model-info", "--modalities", "smell"])
    assert result.exit_code == 2
    assert "smell" in result.output


def test_presets_json() -> None:
    result = CliRunner().invoke(cli, ["presets", "--json"], catch_exceptions=False)
    data = json.loads(result.stdout)
    assert set(data["presets"]) == {"mosi", "mosei", "urfunny"}
    assert data["presets"]["mosei"]["train"]["loss_weights"]["independence"] == 0.2


def test_click_group_is_the_entry_point() -> None:
    assert isinstance(cli, click.Group)
