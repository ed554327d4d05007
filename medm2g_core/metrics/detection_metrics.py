"""Average precision of boxes, as COCO computes it, for one class at one IoU threshold.

torchmetrics' ``MeanAveragePrecision`` needs torchvision, and no PyPI torchvision runs with the torch this project
pins (DESIGN.md), so this is written out deliberately; ``tests/test_downstream.py`` checks it against pycocotools.
As COCO: per film the detections are matched greedily in score order, each to the unmatched ground-truth box of
highest IoU at or above the threshold; then all detections are ranked by score, precision is made monotone, and AP
is the mean precision at 101 recall points (0, 0.01, ..., 1).
"""

import numpy as np

from medm2g_core.errors import InputError

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas [K] of boxes [K, 4] (x0, y0, x1, y1)."""
    return (boxes[:, 2:] - boxes[:, :2]).prod(-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes [A, 4] and [B, 4] (x0, y0, x1, y1) -> [A, B]."""
    low, high = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(-1)
    return inter / (box_area(a)[:, None] + box_area(b)[None, :] - inter)


def _matches(boxes: np.ndarray, scores: np.ndarray, truth: np.ndarray, threshold: float) -> np.ndarray:
    """For one film's detections, whether each (in the given order) is a true positive."""
    order = np.argsort(-scores, kind="mergesort")
    hit = np.zeros(len(boxes), bool)
    if not len(truth):
        return hit
    iou = box_iou(boxes[order], truth)
    taken = np.zeros(len(truth), bool)
    for rank, det in enumerate(order):
        candidates = np.where(taken, -1.0, iou[rank])
        best = int(np.argmax(candidates))
        if candidates[best] >= min(threshold, 1 - 1e-10):
            taken[best], hit[det] = True, True
    return hit


def average_precision(detections: list[tuple[np.ndarray, np.ndarray]], truth: list[np.ndarray],
                      threshold: float = 0.5) -> float:
    """AP over films: per film (boxes [K, 4], scores [K]) against ground-truth boxes [M, 4]."""
    if len(detections) != len(truth):
        raise InputError(f"{len(detections)} films of detections but {len(truth)} of ground truth")
    positives = sum(len(t) for t in truth)
    if not positives:
        raise InputError("average precision needs at least one ground-truth box")
    scores = np.concatenate([s for _, s in detections]) if detections else np.zeros(0)
    hits = np.concatenate([_matches(b, s, t, threshold) for (b, s), t in zip(detections, truth, strict=True)])
    order = np.argsort(-scores, kind="mergesort")
    true_positives, false_positives = np.cumsum(hits[order]), np.cumsum(~hits[order])
    recall = true_positives / positives
    precision = true_positives / np.maximum(true_positives + false_positives, np.finfo(float).eps)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the best precision at this recall or beyond
    found = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(found < len(precision), precision[np.minimum(found, len(precision) - 1)], 0.0).mean())
