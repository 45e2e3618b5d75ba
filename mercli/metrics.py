"""Evaluation metrics, equal to MMSA's ``metricsTop.py`` so that results compare with its papers.

Regression (MOSI, MOSEI): MAE, Pearson correlation, Acc-7 / Acc-5 / Acc-3 on rounded clipped
scores (numpy's round-half-to-even), and binary accuracy / weighted F1 two ways: "has0"
(negative vs non-negative) and "non0" (negative vs positive, zero labels dropped).
Classification (UR-FUNNY): accuracy and weighted F1 of the predicted class.
"""

from __future__ import annotations

import warnings

import numpy as np

REGRESSION_METRICS = (
    "mae",
    "corr",
    "acc2_has0",
    "acc2_non0",
    "f1_has0",
    "f1_non0",
    "acc7",
    "acc5",
    "acc3",
)
CLASSIFICATION_METRICS = ("acc2", "f1")


def _weighted_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth, predicted, average="weighted"))


def _class_accuracy(predicted: np.ndarray, truth: np.ndarray, bound: float) -> float:
    clipped_p, clipped_t = np.clip(predicted, -bound, bound), np.clip(truth, -bound, bound)
    return float(np.mean(np.round(clipped_p) == np.round(clipped_t)))


def _correlation(predicted: np.ndarray, truth: np.ndarray) -> float:
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.corrcoef(predicted, truth)[0, 1])  # NaN when either is constant


def regression_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Scores in [-3, 3]: predicted and truth of shape (N,)."""
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    t = np.asarray(truth, dtype=np.float64).reshape(-1)
    non_zero = t != 0
    return {
        "mae": float(np.mean(np.abs(p - t))),
        "corr": _correlation(p, t),
        "acc2_has0": float(np.mean((p >= 0) == (t >= 0))),
        "acc2_non0": float(np.mean((p[non_zero] > 0) == (t[non_zero] > 0)))
        if non_zero.any()
        else float("nan"),
        "f1_has0": _weighted_f1(t >= 0, p >= 0),
        "f1_non0": _weighted_f1(t[non_zero] > 0, p[non_zero] > 0)
        if non_zero.any()
        else float("nan"),
        "acc7": _class_accuracy(p, t, 3.0),
        "acc5": _class_accuracy(p, t, 2.0),
        "acc3": _class_accuracy(p, t, 1.0),
    }


def classification_metrics(logits_or_classes: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Binary task: logits (N, C) or predicted classes (N,), against class ids (N,)."""
    scores = np.asarray(logits_or_classes)
    predicted = scores.argmax(axis=1) if scores.ndim == 2 else scores.astype(np.int64)
    t = np.asarray(truth).astype(np.int64).reshape(-1)
    return {"acc2": float(np.mean(predicted == t)), "f1": _weighted_f1(t, predicted)}


def compute_metrics(task: str, predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    if task == "regression":
        return regression_metrics(predicted, truth)
    return classification_metrics(predicted, truth)


def seven_class_label(score: float) -> int:
    """The Acc-7 class of a score: round(clip(score, -3, 3)), in -3..3."""
    return int(np.round(np.clip(score, -3.0, 3.0)))
