"""Keypoint metrics: small pure functions on numpy arrays.

Shapes: ``pred`` and ``true`` are ``(N, K, 2)`` in original-image pixels;
``norm`` is ``(N,)``, each image's normalising distance (the layout's two
points, e.g. 300-W outer eye corners 36/45).
"""

from __future__ import annotations

import numpy as np

FAILURE_THRESHOLD = 0.08  # 300-W convention: NME above 8% is a failure; AUC integrates up to it


def point_errors(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(N, K)`` Euclidean distance of each point, in pixels."""
    return np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(true, np.float64), axis=-1)


def px_error(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """``(N,)`` mean point-to-point distance per image, in pixels."""
    return point_errors(pred, true).mean(axis=-1)


def nme(pred: np.ndarray, true: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """``(N,)`` normalised mean error per image: mean distance / normalising distance."""
    norm = np.asarray(norm, np.float64)
    if np.any(norm <= 0):
        raise ValueError(f"normalising distances must be positive; got min {norm.min()}")
    return px_error(pred, true) / norm


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    """Course competition score: mean absolute error over all coordinates, in pixels."""
    return float(np.mean(np.abs(np.asarray(pred, np.float64) - np.asarray(true, np.float64))))


def failure_rate(nmes: np.ndarray, threshold: float = FAILURE_THRESHOLD) -> float:
    """Fraction of images whose NME exceeds ``threshold``."""
    nmes = np.asarray(nmes, np.float64)
    return float(np.mean(nmes > threshold)) if nmes.size else float("nan")


def ced(nmes: np.ndarray, threshold: float = FAILURE_THRESHOLD, steps: int = 161) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: for each error level in ``[0, threshold]``, the fraction of images at or below it."""
    nmes = np.sort(np.asarray(nmes, np.float64))
    levels = np.linspace(0.0, threshold, steps)
    frac = np.searchsorted(nmes, levels, side="right") / max(len(nmes), 1)
    return levels, frac


def auc(nmes: np.ndarray, threshold: float = FAILURE_THRESHOLD, steps: int = 1601) -> float:
    """Area under the CED curve up to ``threshold``, divided by ``threshold`` (1 = perfect)."""
    levels, frac = ced(nmes, threshold, steps)
    return float(np.trapezoid(frac, levels) / threshold)


def summarize(pred: np.ndarray, true: np.ndarray, norm: np.ndarray,
              threshold: float = FAILURE_THRESHOLD) -> dict:
    """All headline metrics for a set of predictions (the ``kpcore evaluate`` summary);
    ``threshold`` is the failure NME, also the upper end of the AUC."""
    errs = point_errors(pred, true)
    per_image_px = errs.mean(axis=-1)
    per_image_nme = per_image_px / np.asarray(norm, np.float64)
    return {
        "n": int(len(per_image_px)),
        "mean_px_error": float(per_image_px.mean()),
        "median_px_error": float(np.median(per_image_px)),
        "nme": float(per_image_nme.mean()),
        "median_nme": float(np.median(per_image_nme)),
        "failure_rate": failure_rate(per_image_nme, threshold),
        "auc": auc(per_image_nme, threshold),
        "mae": mae(pred, true),
        "per_keypoint_px": errs.mean(axis=0).tolist(),
        "per_keypoint_nme": (errs / np.asarray(norm, np.float64)[:, None]).mean(axis=0).tolist(),
    }
