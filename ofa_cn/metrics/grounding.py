"""Visual-grounding metrics: box IoU and Acc@0.5 as the original RefCOCO evaluation computes it.

Boxes are [x0, y0, x1, y1] in pixels of the original image, with continuous coordinates and an
exclusive end: the width is x1 - x0 (not x1 - x0 + 1) and the area (x1 - x0) * (y1 - y0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .caption import check_same_ids

Box = Sequence[float]
HIT_IOU = 0.5  # the published metric is Acc@0.5: a hit needs IoU >= 0.5


def _intersection(pred: Box, gt: Box) -> tuple[float, float]:
    """Width and height of [max x0, max y0, min x1, min y1]; negative when the boxes miss."""
    width = min(pred[2], gt[2]) - max(pred[0], gt[0])
    height = min(pred[3], gt[3]) - max(pred[1], gt[1])
    return width, height


def _check_box(box: Box, name: str) -> None:
    if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        raise ValueError(f"{name} must be 4 finite numbers [x0, y0, x1, y1]; found {box!r}.")


def box_iou(pred: Box, gt: Box) -> float:
    """Intersection over union of two boxes, as the original evaluation computes it.

    IoU = inter / (area_pred + area_gt - inter + 1e-6). The intersection is 0 when the boxes
    do not overlap (the original leaves it as a product of two negative sides and relies on
    its width > 0 and height > 0 test; see ``grounding_accuracy``).

    Args:
        pred: predicted box [x0, y0, x1, y1].
        gt: ground-truth box [x0, y0, x1, y1].

    Returns:
        IoU in [0, 1) (the 1e-6 keeps identical boxes just below 1).
    """
    _check_box(pred, "pred")
    _check_box(gt, "gt")
    width, height = _intersection(pred, gt)
    inter = max(width, 0.0) * max(height, 0.0)
    area_pred = (pred[2] - pred[0]) * (pred[3] - pred[1])
    area_gt = (gt[2] - gt[0]) * (gt[3] - gt[1])
    return inter / (area_pred + area_gt - inter + 1e-6)


def box_hit(pred: Box, gt: Box, threshold: float = HIT_IOU) -> bool:
    """Whether a predicted box counts for Acc@threshold: IoU >= threshold and the boxes overlap.

    "Overlap" means intersection width > 0 and height > 0, as in the original, so touching
    boxes never count even with threshold 0.

    Args:
        pred: predicted box [x0, y0, x1, y1] (may be degenerate: it then misses).
        gt: ground-truth box [x0, y0, x1, y1].
        threshold: IoU needed for a hit.
    """
    width, height = _intersection(pred, gt)
    return box_iou(pred, gt) >= threshold and width > 0 and height > 0


def grounding_accuracy(
    preds: dict[str, Box], refs: dict[str, Box], threshold: float = HIT_IOU
) -> dict[str, float]:
    """Acc@threshold of predicted boxes: the share of hits (``box_hit``).

    Grouping by split is the caller's job: call this once per split.

    Args:
        preds: uniq_id -> predicted box [x0, y0, x1, y1] (may be degenerate: it then misses).
        refs: uniq_id -> ground-truth box with x0 < x1 and y0 < y1.
        threshold: IoU needed for a hit.

    Returns:
        {"acc@0.5": percentage of hits (x100), "count": boxes scored, "mean_iou": mean IoU
        (0..1)}. The accuracy key is named after the threshold, e.g. "acc@0.7".

    Raises:
        ValueError: ids differ, or a box is not 4 finite numbers, or a reference box is empty.
    """
    check_same_ids(preds, refs, what="uniq_id")
    hits = 0
    iou_sum = 0.0
    for uniq_id, gt in refs.items():
        pred = preds[uniq_id]
        _check_box(pred, f"Predicted box of uniq_id {uniq_id!r}")
        _check_box(gt, f"Reference box of uniq_id {uniq_id!r}")
        if not (gt[0] < gt[2] and gt[1] < gt[3]):
            raise ValueError(
                f"Reference box of uniq_id {uniq_id!r} is empty: {list(gt)!r}; expected "
                "[x0, y0, x1, y1] with x0 < x1 and y0 < y1. Check the column order of the "
                "reference file (x, y, width, height boxes must be converted first)."
            )
        hits += box_hit(pred, gt, threshold)
        iou_sum += box_iou(pred, gt)
    return {
        f"acc@{threshold:g}": 100.0 * hits / len(refs),
        "count": len(refs),
        "mean_iou": iou_sum / len(refs),
    }
