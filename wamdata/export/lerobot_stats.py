"""LeRobot's statistics layout for :mod:`wamdata.export.lerobot`: per-episode stats of each data column
and camera, merged into ``meta/stats.json``.

Per episode and key: ``min``, ``max``, ``mean``, ``std``, ``count`` (frames) and the quantiles
``q01`` .. ``q99`` over the frames, one value per dimension; images per channel in [0, 1], shaped
(3, 1, 1) like LeRobot's. NaN/Inf are left out, as ``wamdata stats`` does (a dimension with none
finite: NaN, written as ``null``).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
FINITE = "_finite_count"   # kept for merging, not written: LeRobot's layout has "count" (frames) only


def column_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """min/max/mean/std/count/quantiles over axis 0 of (N, D) values."""
    v = values.astype(np.float64)
    count = np.array([len(v)], dtype=np.int64)
    if np.isfinite(v).all():
        out = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0), "count": count}
        for k, q in QUANTILES.items():
            out[k] = np.quantile(v, q, axis=0)
        return out
    finite = np.isfinite(v)
    v = np.where(finite, v, np.nan)
    with warnings.catch_warnings():   # all-NaN dimensions give NaN, which is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"min": np.nanmin(v, 0), "max": np.nanmax(v, 0), "mean": np.nanmean(v, 0), "std": np.nanstd(v, 0),
               "count": count, FINITE: finite.sum(0)}
        for k, q in QUANTILES.items():
            out[k] = np.nanquantile(v, q, axis=0)
    return out


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats of (n, H, W, 3) uint8 frames in [0, 1], shaped (3, 1, 1) like LeRobot's."""
    px = frames.reshape(-1, 3).astype(np.float64) / 255.0
    s = column_stats(px)
    return {k: (v if k == "count" else v.reshape(3, 1, 1)) for k, v in s.items()} | {
        "count": np.array([len(frames)], dtype=np.int64)}


def sample_indices(n: int, k: int) -> np.ndarray:
    """About ``k`` frame indices spread over ``n`` frames (the frames image stats are taken from)."""
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(int))


def downsample(frames: np.ndarray, target: int = 150) -> np.ndarray:
    """Stride frames down to about ``target`` pixels on the short side (stats need no full frames)."""
    step = max(1, min(frames.shape[1], frames.shape[2]) // target)
    return frames[:, ::step, ::step]


def aggregate_stats(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Merge per-episode stats: exact min/max/mean/std (pooled variance), count-weighted quantiles
    (LeRobot's own approximation)."""
    counts = np.array([p["count"][0] for p in parts], dtype=np.float64)
    # per dimension, the values each part's statistics were taken over (frames, less NaN/Inf)
    wb = np.stack([np.broadcast_to(p.get(FINITE, p["count"][0]), np.shape(p["mean"])) for p in parts]).astype(np.float64)

    def weighted(values):   # count-weighted over the parts where the value is finite
        ok = np.isfinite(values)
        w = np.where(ok, wb, 0.0)
        total = w.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (w * np.where(ok, values, 0.0)).sum(0) / total, np.nan)

    means = np.stack([p["mean"] for p in parts])
    mean = weighted(means)
    var = weighted(np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"min": np.nanmin(np.stack([p["min"] for p in parts]), 0),
               "max": np.nanmax(np.stack([p["max"] for p in parts]), 0),
               "mean": mean, "std": np.sqrt(var), "count": np.array([int(counts.sum())], dtype=np.int64)}
    for k in QUANTILES:
        out[k] = weighted(np.stack([p[k] for p in parts]))
    return out


def jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    """Nested lists, NaN as null (strict JSON has no NaN)."""
    def clean(x):
        if isinstance(x, list):
            return [clean(v) for v in x]
        return None if isinstance(x, float) and not np.isfinite(x) else x
    return {key: {k: clean(np.asarray(v).tolist()) for k, v in s.items()} for key, s in stats.items()}
