"""Collation of windows into batches, copying every frame exactly once.

Windows cut with ``stack=False`` hold their frames as lists of per-step arrays (references into the
episode's decoded frames); :func:`collate` copies them straight into (B, n, H, W, 3) batch arrays.
``alloc(shape, dtype)`` provides those arrays (numpy by default; the torch adapter allocates shared
memory tensors in DataLoader workers so batches cross to the trainer without another copy).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _np_alloc(shape, dtype):
    return np.empty(shape, dtype)


def collate(samples: list[dict], alloc: Callable | None = None) -> dict:
    alloc = alloc or _np_alloc
    first = samples[0]
    out = {}
    for key, v in first.items():
        if isinstance(v, dict):
            out[key] = {}
            for cam, frames in v.items():
                frames = list(frames) if not isinstance(frames, np.ndarray) else frames
                n = len(frames)
                h, w = (frames[0].shape[:2]) if n else (0, 0)
                arr = alloc((len(samples), n, h, w, 3), np.uint8)
                for b, s in enumerate(samples):
                    for j, f in enumerate(s[key][cam]):
                        arr[b, j] = f
                out[key][cam] = arr
        elif isinstance(v, np.ndarray):
            arr = alloc((len(samples), *v.shape), v.dtype)
            for b, s in enumerate(samples):
                arr[b] = s[key]
            out[key] = arr
        elif isinstance(v, str):
            out[key] = [s[key] for s in samples]
        else:
            out[key] = np.array([s[key] for s in samples])
    return out
