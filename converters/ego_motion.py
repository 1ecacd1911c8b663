"""``--option ego_motion=true``: camera motion between consecutive output frames, a derived pseudo-action.

| feature                    | shape | meaning |
|----------------------------|-------|---------|
| action.ego_motion[k, 0:3]  | 3     | direction of the camera's translation from frame k to frame k+1, in camera k's frame (OpenCV axes: x right, y down, z forward); **unit norm, no scale** (an essential matrix fixes direction only); 0 when translation is unobservable |
| action.ego_motion[k, 3:6]  | 3     | rotation of camera k+1 relative to camera k, axis-angle rad, same axes (a pan to the right is +y) |
| extra.ego_motion_model[k]  | int8  | 0 = not estimated (too few tracked features, or the clip's last step: the values are zeros, not a measurement), 1 = essential matrix (translation direction + rotation), 2 = homography (rotation only: no parallax, translation set to 0) |

Method (OpenCV): Shi-Tomasi corners on a grey copy (longest side MOTION_SIZE) tracked by pyramidal
Lucas-Kanade into the next frame; an essential matrix (RANSAC) and ``recoverPose`` give R and the
translation direction; a RANSAC homography explaining as many tracks as the essential matrix means no
measurable parallax (a pure rotation, or a distant scene), and the rotation is then K^-1 H K projected
onto SO(3). Intrinsics: the source's when it has them, otherwise a pinhole with focal length
``ego_focal`` x image width (default 0.5: a 90 degree horizontal field of view) at the image centre.
The focal used is recorded in the feature's description and the episode metadata.
"""

from __future__ import annotations

import numpy as np

from wamdata.quality import grey
from wamdata.schema import Episode

MOTION_SIZE = 320
MIN_TRACKS = 12
NAMES = ("tx", "ty", "tz", "rx", "ry", "rz")


class EgoMotion:
    """Fills an episode's (T, 6) ego-motion rows as its frames are decoded (``add`` per frame)."""

    def __init__(self, ep: Episode, focal: float):
        T = ep.num_steps
        self.values = np.zeros((T, 6), np.float64)
        self.model = np.zeros(T, np.int8)
        self.focal = focal
        self.reset()

    def reset(self) -> None:
        self.values[:] = 0.0
        self.model[:] = 0
        self._prev, self._k = None, 0

    def add(self, frame: np.ndarray) -> None:
        g = grey(frame, MOTION_SIZE)
        if self._prev is not None:
            self.values[self._k - 1], self.model[self._k - 1] = motion(self._prev, g, self.focal)
        self._prev, self._k = g, self._k + 1


def add_ego_motion(ep: Episode, ego: EgoMotion) -> None:
    """Declare the two columns; their values are filled in place while the clip's frames are decoded."""
    ep.add("action.ego_motion", ego.values, unit="unit_direction+rad_axis_angle", frame="camera",
           encoding="delta", derived=True, names=NAMES,
           description=f"camera motion to the next step (pseudo-action, OpenCV essential matrix / homography, "
                       f"focal {ego.focal} x width): translation is a unit direction without scale, rotation "
                       "axis-angle rad, camera frame x right y down z forward")
    ep.add("extra.ego_motion_model", ego.model, derived=True,
           description="0 not estimated (zeros), 1 essential matrix, 2 homography (rotation only)")
    ep.action_space = "ego_motion"
    ep.metadata["ego_motion"] = {"focal_over_width": ego.focal, "size": MOTION_SIZE}


def motion(a: np.ndarray, b: np.ndarray, focal: float) -> tuple[np.ndarray, int]:
    """(6-vector, model) of the camera motion from grey frame ``a`` to grey frame ``b``."""
    import cv2

    out = np.zeros(6)
    p0 = cv2.goodFeaturesToTrack(a, maxCorners=400, qualityLevel=0.01, minDistance=5)
    if p0 is None or len(p0) < MIN_TRACKS:
        return out, 0
    p1, status, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, winSize=(21, 21), maxLevel=3)
    ok = status.ravel() == 1
    p0, p1 = p0[ok].reshape(-1, 2), p1[ok].reshape(-1, 2)
    if len(p0) < MIN_TRACKS:
        return out, 0
    h, w = a.shape
    K = np.array([[focal * w, 0, w / 2], [0, focal * w, h / 2], [0, 0, 1]], np.float64)
    E, emask = cv2.findEssentialMat(p0, p1, K, cv2.RANSAC, 0.999, 1.0)
    H, hmask = cv2.findHomography(p0, p1, cv2.RANSAC, 1.0)
    e_in = int(emask.sum()) if E is not None and E.shape == (3, 3) else 0
    h_in = int(hmask.sum()) if H is not None else 0
    if h_in >= 0.95 * e_in and H is not None:
        U, _, Vt = np.linalg.svd(np.linalg.inv(K) @ H @ K)
        R = U @ Vt
        R = R * np.sign(np.linalg.det(R))
        t, model = np.zeros(3), 2
    elif e_in >= MIN_TRACKS:
        _, R, t, _ = cv2.recoverPose(E, p0, p1, K, mask=emask)
        t, model = t.ravel(), 1
    else:
        return out, 0
    # recoverPose / H give x_b = R x_a + t (points from camera a to b); the camera's own motion is the inverse
    Rc = R.T
    tc = -Rc @ t
    n = np.linalg.norm(tc)
    out[:3] = tc / n if n > 0 else 0.0
    out[3:] = cv2.Rodrigues(Rc)[0].ravel()
    return out, model
