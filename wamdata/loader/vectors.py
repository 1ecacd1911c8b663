"""Harmonisation: every dataset of a stream mapped into one state vector and one action vector.

The layout is built from the canonical vocabulary: the canonical ``state.*`` (``action.*``) features
present in any dataset of the stream, in vocabulary order, each with its flattened width (the largest
across datasets for variable-length features such as ``state.joint_pos``). A dataset fills the slots
it has; ``state_mask`` / ``action_mask`` mark, per dimension, what is real.

Normalisation is per feature, from the dataset's ``stats.json`` for the episode's embodiment:
``"stats"`` is (x - mean) / std, ``"bounds"`` maps [q01, q99] to [-1, 1]; :func:`denormalise` inverts
it (a policy's predicted actions back in robot units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wamdata.errors import ConfigError, FormatError
from wamdata.schema import CANONICAL, Feature

_EPS = 1e-6


@dataclass(frozen=True)
class Slot:
    name: str
    start: int
    width: int


@dataclass(frozen=True)
class VectorLayout:
    kind: str                      # "state" | "action"
    slots: tuple[Slot, ...]

    @property
    def width(self) -> int:
        return sum(s.width for s in self.slots)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slots]

    @property
    def widths(self) -> dict[str, int]:
        """name -> width, in order: pass it as ``state_features=`` / ``action_features=`` to give
        another stream (a subset, an evaluation set) exactly this layout."""
        return {s.name: s.width for s in self.slots}

    @classmethod
    def build(cls, kind: str, feature_sets: list[dict[str, Feature]], names=None) -> "VectorLayout":
        """``names``: None (the canonical features present, in vocabulary order), feature names, or
        (name, width) pairs that pin the layout whatever the datasets hold."""
        widths: dict[str, int] = {}
        for feats in feature_sets:
            for n, f in feats.items():
                w = int(math.prod(f.shape)) if f.shape else 1
                widths[n] = max(widths.get(n, 0), w)
        if names is None:
            names = [n for n in CANONICAL if n.startswith(kind + ".") and n in widths]
        elif names and not isinstance(names[0], str):
            too_wide = [f"{n} ({widths[n]} > {w})" for n, w in names if widths.get(n, 0) > w]
            if too_wide:
                raise ConfigError(f"{kind}_features: the data is wider than the given layout: {too_wide}")
            widths = dict(names)
            names = list(widths)
        else:
            missing = [n for n in names if n not in widths]
            if missing:
                known = sorted(n for n in widths if not n.startswith("action." if kind == "state" else "state."))
                raise ConfigError(f"{kind}_features: {missing} not in any dataset of the stream; known: {known}")
        slots, start = [], 0
        for n in names:
            slots.append(Slot(n, start, widths[n]))
            start += widths[n]
        return cls(kind, tuple(slots))

    def to_json(self) -> list[dict]:
        return [{"name": s.name, "start": s.start, "width": s.width} for s in self.slots]


def read_stats(dataset_path: str) -> dict:
    """``stats.json`` of a dataset (:func:`wamdata.stats.load_stats`: a missing file is a FormatError
    naming the path and the command that writes it, ``wamdata stats DIR``)."""
    from wamdata.stats import load_stats

    return load_stats(dataset_path)


class Normalizer:
    """Per (embodiment, feature) affine maps x -> (x - offset) / scale, built once per dataset."""

    def __init__(self, stats: dict | None, mode_of, where: str):
        self._stats = (stats or {}).get("by_embodiment", {})
        self._mode_of = mode_of
        self._where = where
        self._cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray] | None] = {}

    def affine(self, embodiment: str, feature: str, width: int | None = None):
        """(offset, scale) of the feature for the embodiment, or None when it is not normalised;
        ``width``, the data's, must match the statistics' (denormalising passes none)."""
        key = (embodiment, feature)
        if key not in self._cache:
            self._cache[key] = self._build(embodiment, feature)
        aff = self._cache[key]
        if aff is not None and width is not None and aff[0].shape != (width,):
            raise FormatError(f"{self._where}: stats for {feature!r} have {aff[0].size} dims, data has {width}")
        return aff

    def _build(self, embodiment: str, feature: str):
        mode = self._mode_of(feature)
        if mode is None:
            return None
        by_feat = self._stats.get(embodiment)
        if by_feat is None:
            raise FormatError(f"{self._where}: stats.json has no embodiment {embodiment!r} "
                              f"(has: {sorted(self._stats)}); rerun `wamdata stats`")
        s = by_feat.get(feature)
        if s is None:
            raise FormatError(f"{self._where}: stats.json has no {feature!r} for {embodiment!r} "
                              f"(has: {sorted(by_feat)}); rerun `wamdata stats` or normalize={{{feature!r}: None}}")
        if mode == "stats":
            offset, scale = _floats(s["mean"]), _floats(s["std"])
        else:
            lo, hi = _floats(s["q01"]), _floats(s["q99"])
            offset, scale = (hi + lo) / 2, (hi - lo) / 2
        # Dimensions without statistics (null) or constant ones pass through unscaled.
        offset = np.nan_to_num(offset, nan=0.0)
        scale = np.where(~np.isfinite(scale) | (np.abs(scale) < _EPS), 1.0, scale)
        return offset.astype(np.float32), scale.astype(np.float32)


def harmonise(layout: VectorLayout, columns: dict[str, np.ndarray], n: int, embodiment: str,
              normalizer: Normalizer) -> tuple[np.ndarray, np.ndarray]:
    """(values (n, width) float32, mask (width,) bool) from flattened per-feature columns (n, w)."""
    out = np.zeros((n, layout.width), np.float32)
    mask = np.zeros(layout.width, bool)
    for slot in layout.slots:
        col = columns.get(slot.name)
        if col is None:
            continue
        col = np.asarray(col, np.float32).reshape(n, -1)
        w = col.shape[1]
        aff = normalizer.affine(embodiment, slot.name, w)
        if aff is not None:
            col = (col - aff[0]) / aff[1]
        out[:, slot.start: slot.start + w] = col
        mask[slot.start: slot.start + w] = True
    return out, mask


def denormalise(layout: VectorLayout, values, embodiment: str, normalizer: Normalizer, present):
    """The inverse of :func:`harmonise`'s normalisation for vectors (..., width) of one dataset and
    embodiment, numpy or torch: each normalised feature the dataset has (``present``) back in its
    units; other dimensions are returned as they are."""
    torch_like = hasattr(values, "new_tensor")
    out = values.clone() if torch_like else np.array(values, np.float32, copy=True)
    for slot in layout.slots:
        aff = normalizer.affine(embodiment, slot.name) if slot.name in present else None
        if aff is None:
            continue
        offset, scale = aff
        span = slice(slot.start, slot.start + len(offset))
        if torch_like:
            offset, scale = out.new_tensor(offset), out.new_tensor(scale)
        out[..., span] = out[..., span] * scale + offset
    return out


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], np.float64)
