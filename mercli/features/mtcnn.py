"""MTCNN face detection with facenet-pytorch's nets and algorithm, its per-box crops batched.

facenet-pytorch's ``detect_face`` (MIT licence) crops every candidate box of stages 2 and 3 and
resizes it to 24x24 / 48x48 with area interpolation, one ``interpolate`` call per box (4,004
calls for a 7.8 s clip). With two threads on a busy 2-core CPU each of those tiny calls paid a
parallel-region start, and they took most of the detection time. Here the CPU runs that loop on
one thread (the nets keep all threads), and other devices, where per-call launches dominate, take
the crops from one gather over an integral image per frame (:func:`area_crops`), which is what
area interpolation computes: output pixel ``(i, j)`` of an ``h x w`` crop resized to ``s x s``
is the mean over rows ``[floor(i h / s), ceil((i + 1) h / s))`` and the same columns
(``adaptive_avg_pool2d``'s windows). Everything else (image pyramid, thresholds, box
regression, NMS) is facenet's code path, its helpers copied below and its nets in
:mod:`mercli.features.mtcnn_nets` (so neither facenet-pytorch's package nor torchvision's is
imported); results agree with facenet's ``MTCNN.detect`` to float rounding (tests/test_mtcnn.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from mercli.features.mtcnn_nets import Mtcnn


def _window_bounds(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Per box, the ``size`` area windows over ``[lo, hi)``: starts and ends ``(K, size)``."""
    import torch

    length = (hi - lo).unsqueeze(1)  # (K, 1)
    i = torch.arange(size, device=lo.device).unsqueeze(0)  # (1, size)
    start = lo.unsqueeze(1) + torch.div(i * length, size, rounding_mode="floor")
    end = lo.unsqueeze(1) + torch.div((i + 1) * length + size - 1, size, rounding_mode="floor")
    return start, end


def area_crops(
    images: torch.Tensor,
    image_index: torch.Tensor,
    rows: tuple[torch.Tensor, torch.Tensor],
    cols: tuple[torch.Tensor, torch.Tensor],
    size: int,
) -> torch.Tensor:
    """Crops ``images[b, :, r0:r1, c0:c1]`` resized to ``size x size`` by area averaging.

    Equal to ``interpolate(crop[None], (size, size), mode="area")`` per box, to float rounding.

    Args:
        images: float ``(B, C, H, W)``.
        image_index: long ``(K,)``, the image of each box.
        rows, cols: long ``(K,)`` pairs: half-open spans ``[r0, r1)``, ``[c0, c1)``, non-empty.
        size: output side.

    Returns:
        ``(K, C, size, size)`` in the dtype of ``images``.
    """
    import torch

    n_images, n_channels, height, width = images.shape
    device = images.device
    image_index = image_index.to(device)
    rows = (rows[0].to(device), rows[1].to(device))
    cols = (cols[0].to(device), cols[1].to(device))
    used = torch.unique(image_index)
    # Integral image of the frames that have boxes: int64 sums of 0..255 pixels are exact.
    integral = torch.zeros(
        (len(used), n_channels, height + 1, width + 1), dtype=torch.int64, device=images.device
    )
    integral[:, :, 1:, 1:] = images[used].to(torch.int64).cumsum(2).cumsum(3)
    slot = torch.full((n_images,), -1, dtype=torch.long, device=images.device)
    slot[used] = torch.arange(len(used), device=images.device)
    r_start, r_end = _window_bounds(rows[0], rows[1], size)  # (K, size)
    c_start, c_end = _window_bounds(cols[0], cols[1], size)
    channels = torch.arange(n_channels, device=device)
    plane = slot[image_index].view(-1, 1) * n_channels + channels  # (K, C): (image, channel)
    plane = plane.view(-1, n_channels, 1, 1)
    plane_base = plane * ((height + 1) * (width + 1))
    r0 = r_start.view(-1, 1, size, 1) * (width + 1)
    r1 = r_end.view(-1, 1, size, 1) * (width + 1)
    c0, c1 = c_start.view(-1, 1, 1, size), c_end.view(-1, 1, 1, size)
    flat = integral.view(-1)
    total = (
        flat.take(plane_base + r1 + c1)
        - flat.take(plane_base + r0 + c1)
        - flat.take(plane_base + r1 + c0)
        + flat.take(plane_base + r0 + c0)
    )  # (K, C, size, size)
    count = (r_end - r_start).view(-1, 1, size, 1) * (c_end - c_start).view(-1, 1, 1, size)
    return (total.double() / count).to(images.dtype)


def _per_box_crops(
    images: torch.Tensor,
    image_index: torch.Tensor,
    rows: tuple[torch.Tensor, torch.Tensor],
    cols: tuple[torch.Tensor, torch.Tensor],
    size: int,
) -> torch.Tensor:
    """facenet's own crops: one area ``interpolate`` per box, on one thread.

    On a CPU this beats :func:`area_crops` with one thread (the integral images cost more than
    the small crops), but with more threads every tiny call pays a parallel-region start, which
    under load made these calls most of the detection time.
    """
    import torch
    from torch.nn.functional import interpolate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        crops = [
            interpolate(images[b, :, r0:r1, c0:c1].unsqueeze(0), size=(size, size), mode="area")
            for b, r0, r1, c0, c1 in zip(
                image_index.tolist(),
                rows[0].tolist(),
                rows[1].tolist(),
                cols[0].tolist(),
                cols[1].tolist(),
                strict=True,
            )
        ]
    finally:
        torch.set_num_threads(threads)
    return torch.cat(crops)


def _stage_input(
    images: torch.Tensor, boxes: torch.Tensor, image_index: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised ``size`` crops of the boxes that are not empty after facenet's ``pad``.

    Returns:
        (crops ``(K', 3, size, size)``, bool ``(K,)`` which boxes they are).
    """
    import torch

    height, width = images.shape[2:4]
    y, ey, x, ex = (torch.from_numpy(np.asarray(v, np.int64)) for v in _pad(boxes, width, height))
    keep = (ey > y - 1) & (ex > x - 1)
    y, ey, x, ex = y[keep], ey[keep], x[keep], ex[keep]
    keep = keep.to(images.device)
    crop = _per_box_crops if images.device.type == "cpu" else area_crops
    crops = crop(images, image_index[keep], (y - 1, ey), (x - 1, ex), size)
    return net_layout((crops - 127.5) * 0.0078125), keep


def net_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the memory layout the nets run fastest in: channels-last on a CPU.

    oneDNN's convolutions and, above all, max pooling are vectorised over channels in that
    layout: on one thread R-Net runs 2x and O-Net 3.5x faster than on NCHW tensors (their 3x3
    ceil-mode max pools were most of their time); results agree to float rounding (1e-6).
    Other devices keep the layout they were given.
    """
    import torch

    if x.device.type != "cpu" or x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------
# facenet-pytorch 2.6's box helpers (models/utils/detect_face.py, MIT licence), kept as they are
# there so that detections do not change; its module imports torchvision and PIL at the top.


def _pad(boxes: torch.Tensor, w: int, h: int) -> tuple[np.ndarray, ...]:
    """Integer box bounds clipped to the image (1-based starts): y, ey, x, ex."""
    b = boxes.trunc().int().cpu().numpy()
    x, y, ex, ey = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    x[x < 1] = 1
    y[y < 1] = 1
    ex[ex > w] = w
    ey[ey > h] = h
    return y, ey, x, ex


def _rerec(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes made square around their centres (side = the longer side), in place."""
    import torch

    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.max(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.repeat(2, 1).permute(1, 0)
    return boxes


def _bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Boxes moved by the nets' regression offsets (in box sides), in place."""
    import torch

    if reg.shape[1] == 1:
        reg = torch.reshape(reg, (reg.shape[2], reg.shape[3]))
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    b1 = boxes[:, 0] + reg[:, 0] * w
    b2 = boxes[:, 1] + reg[:, 1] * h
    b3 = boxes[:, 2] + reg[:, 2] * w
    b4 = boxes[:, 3] + reg[:, 3] * h
    boxes[:, :4] = torch.stack([b1, b2, b3, b4]).permute(1, 0)
    return boxes


def _bounding_boxes(
    reg: torch.Tensor, probs: torch.Tensor, scale: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """P-Net windows above ``threshold``: (boxes ``(K, 9)`` = x1, y1, x2, y2, score, 4 offsets
    in image pixels, their image indices ``(K,)``)."""
    import torch

    stride, cellsize = 2, 12
    reg = reg.permute(1, 0, 2, 3)
    mask = probs >= threshold
    mask_inds = mask.nonzero()
    image_inds = mask_inds[:, 0]
    score = probs[mask]
    reg = reg[:, mask].permute(1, 0)
    bb = mask_inds[:, 1:].type(reg.dtype).flip(1)
    q1 = ((stride * bb + 1) / scale).floor()
    q2 = ((stride * bb + cellsize - 1 + 1) / scale).floor()
    return torch.cat([q1, q2, score.unsqueeze(1), reg], dim=1), image_inds


def _nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS where overlap is intersection over the smaller box (O-Net's last step)."""
    if boxes.size == 0:
        return np.empty((0, 3))
    x1, y1, x2, y2 = (boxes[:, i].copy() for i in range(4))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)
    pick = np.zeros_like(scores, dtype=np.int16)
    counter = 0
    while order.size > 0:
        i = order[-1]
        pick[counter] = i
        counter += 1
        rest = order[0:-1]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        overlap = w * h / np.minimum(area[i], area[rest])
        order = order[np.where(overlap <= threshold)]
    return pick[:counter].copy()


def _batched_nms_min(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, threshold: float
) -> torch.Tensor:
    """:func:`_nms_min` within each image (boxes offset apart per image, as facenet does)."""
    import torch

    device = boxes.device
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    shifted = (boxes + offsets[:, None]).cpu().numpy()
    keep = _nms_min(shifted, scores.cpu().numpy(), threshold)
    return torch.as_tensor(keep, dtype=torch.long, device=device)


def _in_batches(crops: torch.Tensor, net: Callable[..., Any]) -> tuple[torch.Tensor, ...]:
    """``net`` over ``crops`` 512 at a time, outputs concatenated."""
    import torch

    out = [net(crops[i : i + 512]) for i in range(0, len(crops), 512)]
    return tuple(torch.cat(v, dim=0) for v in zip(*out, strict=True))


def detect_batch(
    detector: Mtcnn, images: np.ndarray, min_face_px: float | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """facenet-pytorch's ``detect_face`` with batched crops (same thresholds and outputs).

    Args:
        detector: a :class:`~mercli.features.mtcnn_nets.Mtcnn` or facenet-pytorch's ``MTCNN``
            (its nets, ``min_face_size``, ``thresholds``, ``factor``, ``device``).
        images: uint8 ``(B, H, W, 3)`` RGB frames of one size.
        min_face_px: when given, the image pyramid's levels that look only for faces smaller
            than this many pixels are skipped (the others are the levels of
            ``detector.min_face_size``, so a face found at them is found alike); the finest
            levels are the largest images, most of P-Net's work.

    Returns:
        per image, ``boxes`` float32 ``(n, 5)`` (x1, y1, x2, y2, probability) and ``points``
        float32 ``(n, 5, 2)``; ``n`` may be 0.
    """
    import torch
    from torch.nn.functional import interpolate

    from mercli.features.mtcnn_nets import batched_nms

    device = detector.device
    threshold, factor = detector.thresholds, detector.factor
    imgs = torch.as_tensor(np.ascontiguousarray(images), device=device)
    model_dtype = next(detector.pnet.parameters()).dtype
    # (B, 3, H, W), contiguous: the per-box crops of a strided (channels-last) view are 1.6x
    # slower on a CPU
    imgs = imgs.permute(0, 3, 1, 2).type(model_dtype).contiguous()
    batch_size = len(imgs)
    h, w = imgs.shape[2:4]
    m = 12.0 / detector.min_face_size
    minl = min(h, w) * m
    scales = []
    scale_i = m
    while minl >= 12:
        scales.append(scale_i)
        scale_i *= factor
        minl *= factor
    if min_face_px is not None:  # at scale s, P-Net's 12-pixel window is a 12 / s pixel face
        scales = [s for s in scales if 12.0 / s >= min_face_px]
    if not scales:
        empty = np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        return [empty[0]] * batch_size, [empty[1]] * batch_size

    # Stage 1: P-Net over the pyramid (already batched over frames in facenet).
    all_boxes, all_inds, picks = [], [], []
    offset = 0
    for scale in scales:
        im_data = interpolate(imgs, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
        reg, probs = detector.pnet(net_layout((im_data - 127.5) * 0.0078125))
        boxes_scale, inds_scale = _bounding_boxes(reg, probs[:, 1], scale, threshold[0])
        all_boxes.append(boxes_scale)
        all_inds.append(inds_scale)
        pick = batched_nms(boxes_scale[:, :4], boxes_scale[:, 4], inds_scale, 0.5)
        picks.append(pick + offset)
        offset += boxes_scale.shape[0]
    boxes = torch.cat(all_boxes)[torch.cat(picks)]
    image_inds = torch.cat(all_inds)[torch.cat(picks)]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
    boxes, image_inds = boxes[pick], image_inds[pick]
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = torch.stack(
        [
            boxes[:, 0] + boxes[:, 5] * regw,
            boxes[:, 1] + boxes[:, 6] * regh,
            boxes[:, 2] + boxes[:, 7] * regw,
            boxes[:, 3] + boxes[:, 8] * regh,
            boxes[:, 4],
        ]
    ).permute(1, 0)
    boxes = _rerec(boxes)

    # Stage 2: R-Net on 24x24 crops of every candidate, cropped in one gather.
    if len(boxes) > 0:
        crops, keep = _stage_input(imgs, boxes, image_inds, 24)
        boxes, image_inds = boxes[keep], image_inds[keep]
        out = _in_batches(crops, detector.rnet)
        score = out[1][:, 1]
        ipass = score > threshold[1]
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds, mv = image_inds[ipass], out[0][ipass]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds, mv = boxes[pick], image_inds[pick], mv[pick]
        boxes = _rerec(_bbreg(boxes, mv))

    # Stage 3: O-Net on 48x48 crops: scores, box regression, landmarks.
    points = torch.zeros(0, 5, 2, device=device)
    if len(boxes) > 0:
        crops, keep = _stage_input(imgs, boxes, image_inds, 48)
        boxes, image_inds = boxes[keep], image_inds[keep]
        out = _in_batches(crops, detector.onet)
        score = out[2][:, 1]
        ipass = score > threshold[2]
        landmarks = out[1][ipass].permute(1, 0)  # (10, n)
        boxes = torch.cat((boxes[ipass, :4], score[ipass].unsqueeze(1)), dim=1)
        image_inds, mv = image_inds[ipass], out[0][ipass]
        w_i = boxes[:, 2] - boxes[:, 0] + 1
        h_i = boxes[:, 3] - boxes[:, 1] + 1
        points_x = w_i.repeat(5, 1) * landmarks[:5, :] + boxes[:, 0].repeat(5, 1) - 1
        points_y = h_i.repeat(5, 1) * landmarks[5:10, :] + boxes[:, 1].repeat(5, 1) - 1
        points = torch.stack((points_x, points_y)).permute(2, 1, 0)
        boxes = _bbreg(boxes, mv)
        pick = _batched_nms_min(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds, points = boxes[pick], image_inds[pick], points[pick]

    boxes_np, points_np = boxes.cpu().numpy(), points.cpu().numpy()
    inds_np = image_inds.cpu().numpy()
    per_boxes = [boxes_np[inds_np == b].copy() for b in range(batch_size)]
    per_points = [points_np[inds_np == b].copy() for b in range(batch_size)]
    return per_boxes, per_points
