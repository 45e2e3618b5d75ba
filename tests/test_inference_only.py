"""A model built for inference leaves out what only training reads, scores alike, and loads
from a full or an inference-only checkpoint; building on "meta" for the size check draws no
random numbers (that would import torch's symbolic shapes, 0.6 s of every cold start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mercli.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from mercli.model import EmotionModel
from tests.conftest import make_batch, tiny_model_config

ROOT = Path(__file__).resolve().parents[1]


def _save(tmp_path: Path, model: EmotionModel, name: str, inference_only: bool) -> Path:
    from mercli.checkpoint import CheckpointMeta
    from mercli.features.profile import text_only_profile

    meta = CheckpointMeta(model_config={}, feature_profile=text_only_profile("x"))
    return save_checkpoint(model, tmp_path / name, meta, inference_only=inference_only)


def test_an_inference_only_model_predicts_what_the_full_one_does() -> None:
    config = tiny_model_config(aux_heads=("sst2",))
    torch.manual_seed(0)
    full = EmotionModel(config).eval()
    lean = EmotionModel(config, inference_only=True).eval()
    assert full.mic is not None and full.reconstructors is not None and full.aux_heads
    assert lean.mic is None and lean.reconstructors is None and lean.aux_heads is None
    missing, unexpected = lean.load_state_dict(full.state_dict(), strict=False)
    assert not missing
    assert {k.split(".")[0] for k in unexpected} == {"mic", "reconstructors", "aux_heads"}
    assert lean.count_parameters() < 0.9 * full.count_parameters()
    batch = make_batch(config)
    with torch.inference_mode():
        a, b = full(batch), lean(batch)
    torch.testing.assert_close(a.prediction, b.prediction, rtol=0, atol=0)
    assert a.reconstructed and not b.reconstructed


def test_inference_only_checkpoints_load_for_analysis_not_training(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = EmotionModel(tiny_model_config()).eval()
    full = _save(tmp_path, model, "full", inference_only=False)
    lean = _save(tmp_path, model, "lean", inference_only=True)
    assert (lean / "weights.safetensors").stat().st_size < (
        full / "weights.safetensors"
    ).stat().st_size
    batch = make_batch(model.config)
    scores = []
    for directory in (full, lean):
        loaded, _ = load_checkpoint(directory, inference_only=True)
        assert loaded.mic is None
        with torch.inference_mode():
            scores.append(loaded(batch).prediction)
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="inference-only checkpoint") as error:
        load_checkpoint(lean)  # training needs the MIC estimators and reconstructors
    assert "\n" not in str(error.value)


def test_load_model_builds_the_model_without_training_modules(tmp_path: Path) -> None:
    model = EmotionModel(tiny_model_config(modalities=("audio", "vision"))).eval()
    loaded = load_model(_save(tmp_path, model, "full", inference_only=False))
    assert loaded.model.mic is None and loaded.model.reconstructors is None


def test_householder_init_draws_what_randn_draws_and_nothing_on_meta() -> None:
    from mercli.model.invertible import HouseholderMixing

    torch.manual_seed(3)
    drawn = HouseholderMixing(8, 3).vectors.detach()
    torch.manual_seed(3)
    torch.testing.assert_close(drawn, torch.randn(3, 8), rtol=0, atol=0)
    config = tiny_model_config()
    with torch.device("meta"):
        on_meta = EmotionModel(config)
    assert on_meta.count_parameters() == EmotionModel(config).count_parameters()


def test_the_size_check_does_not_import_symbolic_shapes(tmp_path: Path) -> None:
    directory = _save(tmp_path, EmotionModel(tiny_model_config()), "full", inference_only=False)
    code = (
        "import sys, torch\n"
        "from mercli.checkpoint import load_checkpoint\n"
        f"load_checkpoint({str(directory)!r}, inference_only=True)\n"
        "print('torch.fx.experimental.symbolic_shapes' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"
