"""Collation of windows into batches, copying every frame exactly once.

Windows cut with ``stack=False`` hold their frames as lists of per-step arrays (references into the
episode's decoded frames); :func:`collate` copies them straight into (B, n, H, W, 3) batch arrays.
``alloc(shape, dtype)`` provides those arrays (numpy by default; the torch adapter allocates shared
memory tensors in DataLoader workers so batches cross to the trainer without another copy).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def _np_alloc(specs):
    return [np.empty(shape, dtype) for shape, dtype in specs]


def collate(samples: list[dict], alloc: Callable | None = None) -> dict:
    """``alloc(specs)`` gets every (shape, dtype) of the batch at once and returns the arrays, so an
    allocator can carve them all from one buffer."""
    first, B = samples[0], len(samples)
    specs, slots = [], []
    for key, v in first.items():
        if isinstance(v, dict):
            for cam, frames in v.items():
                n = len(frames)
                h, w = (frames[0].shape[:2]) if n else (0, 0)
                specs.append(((B, n, h, w, 3), np.dtype(np.uint8)))
                slots.append((key, cam))
        elif isinstance(v, np.ndarray):
            specs.append(((B, *v.shape), v.dtype))
            slots.append((key, None))
    arrays = (alloc or _np_alloc)(specs)
    out = {}
    for (key, cam), arr in zip(slots, arrays):
        if cam is not None:
            for b, s in enumerate(samples):
                for j, f in enumerate(s[key][cam]):
                    arr[b, j] = f
            out.setdefault(key, {})[cam] = arr
        else:
            for b, s in enumerate(samples):
                arr[b] = s[key]
            out[key] = arr
    for key, v in first.items():
        if isinstance(v, str):
            out[key] = [s[key] for s in samples]
        elif not isinstance(v, (dict, np.ndarray)):
            out[key] = np.array([s[key] for s in samples])
    return {k: out[k] for k in first}
