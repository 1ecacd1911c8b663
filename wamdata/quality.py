"""Frame-level quality measures shared by converters (per-clip signals on the way in) and curation.

Each function takes RGB uint8 frames (H, W, 3) and returns plain floats, cheap enough to run on every
output frame of a conversion. Measures are taken on a small grey copy (:func:`grey`, longest side
``QUALITY_SIZE``) so that they mean the same at every resolution a dataset was converted to.

- blur: variance of the Laplacian (Pech-Pacheco et al. 2000); low = blurred. Sharp natural frames at
  ``QUALITY_SIZE`` score in the hundreds, a defocused or motion-blurred one under ~50.
- exposure: mean luma in [0, 1] and the fractions of under- (< 16) and over-exposed (> 239) pixels.
- change: mean absolute grey-level difference between two frames in [0, 1]; ~0 for frozen or
  duplicated frames, large at a scene cut.
- cut: histogram distance between two frames (Bhattacharyya, [0, 1]); a scene cut is a large jump that a
  pan or a moving hand does not produce.
- dhash: a 64-bit difference hash of a frame, for near-duplicate episodes (Hamming distance of hashes).
"""

from __future__ import annotations

import numpy as np

QUALITY_SIZE = 128          # longest side of the grey copy the measures are taken on
DARK, BRIGHT = 16, 239      # luma thresholds of under- / over-exposed pixels (8-bit video range)


def grey(frame: np.ndarray, size: int = QUALITY_SIZE) -> np.ndarray:
    """A small uint8 grey copy of an RGB frame, longest side ``size`` (never upscaled)."""
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame
    h, w = g.shape
    scale = size / max(h, w)
    if scale < 1:
        g = cv2.resize(g, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return g


def blur(g: np.ndarray) -> float:
    """Variance of the Laplacian of a grey frame: low means blurred (or flat)."""
    import cv2

    return float(cv2.Laplacian(g, cv2.CV_64F).var())


def exposure(g: np.ndarray) -> dict[str, float]:
    """Mean luma in [0, 1] and the fractions of dark and of saturated pixels."""
    return {"luma": float(g.mean()) / 255.0, "dark": float(np.mean(g < DARK)),
            "bright": float(np.mean(g > BRIGHT))}


def change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two grey frames in [0, 1]: ~0 when a frame is frozen or repeated."""
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16)))) / 255.0


def histogram(g: np.ndarray) -> np.ndarray:
    """A normalised 32-bin grey histogram (float32), the input of :func:`cut`."""
    import cv2

    h = cv2.calcHist([g], [0], None, [32], [0, 256])
    return cv2.normalize(h, h, 1.0, 0.0, cv2.NORM_L1)


def cut(hist_a: np.ndarray, hist_b: np.ndarray) -> float:
    """Bhattacharyya distance of two histograms in [0, 1]: above ~0.5 is a scene cut."""
    import cv2

    return float(cv2.compareHist(hist_a, hist_b, cv2.HISTCMP_BHATTACHARYYA))


def dhash(g: np.ndarray) -> int:
    """64-bit difference hash: each bit says whether a pixel of a 9x8 copy is brighter than its right
    neighbour. Frames that look alike have hashes a few bits apart (:func:`hamming`)."""
    import cv2

    small = cv2.resize(g, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return int(bin(a ^ b).count("1"))
