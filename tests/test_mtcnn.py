"""MTCNN with batched crops (mercli.features.mtcnn) against facenet-pytorch's own detect."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.functional import interpolate

from mercli.features.mtcnn import area_crops

ROOT = Path(__file__).resolve().parents[1]


def test_area_crops_equal_per_box_area_interpolation() -> None:
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (3, 3, 70, 90)).astype(np.float32))
    boxes = [(0, 0, 70, 0, 90), (1, 5, 9, 7, 8), (2, 10, 60, 20, 31), (1, 0, 3, 80, 90)]
    inds, r0, r1, c0, c1 = (torch.tensor(v) for v in zip(*boxes, strict=True))
    for size in (4, 24, 48):  # shrinking, and growing the small boxes
        got = area_crops(images, inds, (r0, r1), (c0, c1), size)
        want = torch.cat(
            [
                interpolate(images[b, :, y0:y1, x0:x1][None], size=(size, size), mode="area")
                for b, y0, y1, x0, x1 in boxes
            ]
        )
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def _frames_with_a_face() -> np.ndarray:
    """Two synthetic frames with a drawn face (eyes, nose, mouth on skin), for real MTCNN."""
    import cv2

    frames = []
    for shift in (0, 12):
        image = np.full((240, 320, 3), (90, 120, 150), np.uint8)
        cx, cy = 150 + shift, 120
        cv2.ellipse(image, (cx, cy), (55, 72), 0, 0, 360, (205, 160, 135), -1)
        for ex in (cx - 22, cx + 22):
            cv2.ellipse(image, (ex, cy - 15), (10, 5), 0, 0, 360, (40, 30, 30), -1)
        cv2.line(image, (cx, cy - 5), (cx - 4, cy + 18), (150, 100, 90), 3)
        cv2.ellipse(image, (cx, cy + 38), (20, 7), 0, 0, 180, (120, 50, 60), -1)
        frames.append(image)
    return np.stack(frames)


@pytest.mark.parametrize("ours", [False, True], ids=["facenet_nets", "mer_nets"])
def test_detect_batch_equals_facenet_detect(ours: bool) -> None:
    """detect_batch with facenet's MTCNN, and with mer's nets (channels-last, as loaded for the
    pipeline; no facenet or torchvision package code), finds what facenet's detect finds."""
    facenet = pytest.importorskip("facenet_pytorch")
    from mercli.features.faces import load_detector
    from mercli.features.mtcnn import detect_batch

    detector = facenet.MTCNN(keep_all=True, device=torch.device("cpu"))
    images = _frames_with_a_face()
    rng = np.random.default_rng(1)
    noisy = np.clip(images + rng.normal(0, 25, images.shape), 0, 255).astype(np.uint8)
    for batch in (images, noisy, np.concatenate([noisy] * 9)):
        with torch.inference_mode():
            boxes, probs, points = detector.detect(batch, landmarks=True)
            got_boxes, got_points = detect_batch(load_detector() if ours else detector, batch)
        for i in range(len(batch)):
            if boxes[i] is None:
                assert len(got_boxes[i]) == 0
                continue
            np.testing.assert_allclose(got_boxes[i][:, :4], boxes[i].astype(float), atol=1e-3)
            np.testing.assert_allclose(got_boxes[i][:, 4], probs[i].astype(float), atol=1e-5)
            np.testing.assert_allclose(got_points[i], points[i].astype(float), atol=1e-3)


def test_skipping_the_finest_pyramid_levels_keeps_a_large_face() -> None:
    facenet = pytest.importorskip("facenet_pytorch")
    from mercli.features.mtcnn import detect_batch

    detector = facenet.MTCNN(keep_all=True, device=torch.device("cpu"))
    images = _frames_with_a_face()  # faces about 110 pixels wide
    with torch.inference_mode():
        all_levels, _ = detect_batch(detector, images)
        coarse, _ = detect_batch(detector, images, min_face_px=50.0)
        none, _ = detect_batch(detector, images, min_face_px=1000.0)  # no level left
    for whole, fewer in zip(all_levels, coarse, strict=True):
        assert len(whole) >= 1 and len(fewer) >= 1
        best_whole, best_fewer = whole[whole[:, 4].argmax()], fewer[fewer[:, 4].argmax()]
        np.testing.assert_allclose(best_fewer[:4], best_whole[:4], atol=4.0)
    assert [len(b) for b in none] == [0, 0]


def test_the_face_nets_load_without_facenet_or_torchvision_packages() -> None:
    pytest.importorskip("facenet_pytorch")
    code = (
        "import sys, numpy as np\n"
        "from mercli.features.faces import detect_candidates\n"
        "detect_candidates([np.full((120, 160, 3), 127, np.uint8)] * 2)\n"
        "print(sorted(m for m in ('facenet_pytorch', 'torchvision') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("n_boxes", [300, 3000])  # torchvision switches method above 1000
def test_batched_nms_is_torchvisions(n_boxes: int) -> None:
    torchvision = pytest.importorskip("torchvision")
    from mercli.features.mtcnn_nets import batched_nms

    g = torch.Generator().manual_seed(n_boxes)
    corner = torch.rand(n_boxes, 2, generator=g) * 200
    boxes = torch.cat([corner, corner + 5 + torch.rand(n_boxes, 2, generator=g) * 60], dim=1)
    scores = torch.rand(n_boxes, generator=g).round(decimals=2)  # ties too
    groups = torch.randint(0, 7, (n_boxes,), generator=g)
    for threshold in (0.5, 0.7):
        want = torchvision.ops.batched_nms(boxes, scores, groups, threshold)
        torch.testing.assert_close(batched_nms(boxes, scores, groups, threshold), want)
