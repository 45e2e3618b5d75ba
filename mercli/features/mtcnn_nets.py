"""MTCNN's P-, R- and O-nets with facenet-pytorch's packaged weights, without its package.

Importing ``facenet_pytorch`` runs its ``__init__``, which imports its face-recognition model,
``requests`` and all of torchvision (its models, datasets and transforms): 0.8 s of a quiet cold
``mer analyze``, 2-3 s on a busy CPU, for three small nets. Here the nets are defined as in
facenet-pytorch 2.6 (``models/mtcnn.py``, MIT licence; same layer names, so its state dicts
load unchanged), their weight files are found with ``importlib.util.find_spec`` (which does not
run the package), and NMS runs torchvision's compiled kernel, its library loaded without
importing torchvision's Python package (:func:`nms`).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Callable


class MissingFaceWeightsError(RuntimeError):
    """facenet-pytorch (which ships MTCNN's weights) is not installed."""


class PNet(nn.Module):
    """Proposal net: face probability and box offsets at every 12x12 window (stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) -> box offsets (B, 4, H', W'), probabilities (B, 2, H', W')."""
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """Refinement net on 24x24 crops: face probability and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (K, 3, 24, 24) -> box offsets (K, 4), probabilities (K, 2)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).contiguous()  # the weights' (W, H, C) flattening order
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output net on 48x48 crops: face probability, box offsets and 5 landmarks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (K, 3, 48, 48) -> box offsets (K, 4), landmarks (K, 10), probabilities (K, 2)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


class Mtcnn(nn.Module):
    """The three nets and facenet-pytorch's detection settings (its ``MTCNN`` defaults), for
    :func:`mercli.features.mtcnn.detect_batch`.

    ``detect(images)`` returns facenet's per-image layout (object arrays of boxes, probabilities
    and landmarks; None where an image has no face), as ``MTCNN(keep_all=True).detect`` does.
    """

    min_face_size = 20  # pixels: the pyramid's finest level looks for faces this small
    thresholds = (0.6, 0.7, 0.7)  # P-, R-, O-net face probability cut-offs
    factor = 0.709  # pyramid scale step

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.pnet.conv1.weight.device

    def detect(
        self, images: np.ndarray, landmarks: bool = True, min_face_px: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces in uint8 ``(B, H, W, 3)`` RGB images (see :func:`detect_batch`)."""
        from mercli.features.mtcnn import detect_batch

        boxes, points = detect_batch(self, np.asarray(images), min_face_px)
        as_object = functools.partial(np.array, dtype=object)
        return (
            as_object([b[:, :4] if len(b) else None for b in boxes]),
            as_object([b[:, 4] if len(b) else [None] for b in boxes]),
            as_object([p if len(p) else None for p in points]),
        )


def weights_dir() -> Path:
    """facenet-pytorch's ``data`` folder (``pnet.pt``, ``rnet.pt``, ``onet.pt``), found
    without importing the package.

    Raises:
        MissingFaceWeightsError: facenet-pytorch is not installed.
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        data = Path(folder) / "data"
        if all((data / f"{n}.pt").is_file() for n in ("pnet", "rnet", "onet")):
            return data
    raise MissingFaceWeightsError(
        "MTCNN's weights come with facenet-pytorch, which is not installed "
        "(pip install --no-deps facenet-pytorch==2.6.0)"
    )


def load_mtcnn(device: str | torch.device = "cpu") -> Mtcnn:
    """The three nets with facenet-pytorch's packaged weights, eval mode, on ``device``."""
    detector = Mtcnn()
    data = weights_dir()
    for name in ("pnet", "rnet", "onet"):
        state = torch.load(data / f"{name}.pt", map_location="cpu", weights_only=True)
        getattr(detector, name).load_state_dict(state)
    return detector.to(device)


@functools.lru_cache(maxsize=1)
def _nms_kernel() -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    """``torch.ops.torchvision.nms``: torchvision's compiled library loaded on its own when it
    is found next to its package (``_C_stable`` in 0.29, ``_C`` before), else through
    ``import torchvision``. Loading it again later (torchvision imported after all) is a no-op."""
    spec = importlib.util.find_spec("torchvision")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for stem in ("_C_stable", "_C"):
            for library in sorted(Path(folder).glob(f"{stem}.*")):
                if library.suffix in (".so", ".pyd", ".dylib"):
                    try:
                        torch.ops.load_library(str(library))
                        return torch.ops.torchvision.nms
                    except (OSError, RuntimeError, AttributeError):
                        continue
    import torchvision  # type: ignore[import-untyped]  # noqa: F401  registers its ops

    return torch.ops.torchvision.nms


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """``torchvision.ops.nms``: indices of the boxes kept, by decreasing score."""
    return _nms_kernel()(boxes, scores, iou_threshold)


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """``torchvision.ops.batched_nms`` (0.29): NMS within each ``idxs`` group, the same two
    code paths at the same size switch, so that results (tie order included) are the same.

    Args:
        boxes: float ``(N, 4)`` x1, y1, x2, y2; scores: ``(N,)``; idxs: long ``(N,)`` groups.

    Returns:
        long indices of the boxes kept, by decreasing score.
    """
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 100_000):
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for class_id in torch.unique(idxs):
            current = torch.where(idxs == class_id)[0]
            keep_mask[current[nms(boxes[current], scores[current], iou_threshold)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # offsets larger than any coordinate: boxes of different groups never overlap
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)
