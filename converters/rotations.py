"""Rotation conversions the converters share (numpy, batched over leading axes): one convention,
one implementation. Quaternions are xyzw with w >= 0; Euler angles are extrinsic x-y-z (scipy's
``"xyz"``), as DROID and Bridge record them."""

from __future__ import annotations

import numpy as np


def euler_xyz_to_quat(euler) -> np.ndarray:
    """Extrinsic x-y-z Euler angles (scipy ``"xyz"``, R = Rz(c) Ry(b) Rx(a)) -> quaternion xyzw with
    w >= 0 (q and -q are one rotation; every converter emits the same one)."""
    e = np.asarray(euler, np.float64) / 2
    cr, sr = np.cos(e[..., 0]), np.sin(e[..., 0])
    cp, sp = np.cos(e[..., 1]), np.sin(e[..., 1])
    cy, sy = np.cos(e[..., 2]), np.sin(e[..., 2])
    q = np.stack([sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
                  cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy], axis=-1)
    return q * np.where(q[..., 3:] < 0, -1.0, 1.0)   # w >= 0: one representative per rotation


def pose6_to_matrix(pose) -> np.ndarray:
    """[x, y, z, Euler xyz] (..., 6) -> homogeneous (..., 4, 4)."""
    p = np.asarray(pose, np.float64)
    x, y, z, w = np.moveaxis(euler_xyz_to_quat(p[..., 3:6]), -1, 0)
    m = np.zeros(p.shape[:-1] + (4, 4))
    m[..., 0, :3] = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1)
    m[..., 1, :3] = np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1)
    m[..., 2, :3] = np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)
    m[..., :3, 3] = p[..., :3]
    m[..., 3, 3] = 1.0
    return m


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Quaternion xyzw -> rotation vector (axis * angle, rad), angle in [0, pi]."""
    q = q * np.where(q[..., 3:] < 0, -1.0, 1.0)
    v, w = q[..., :3], q[..., 3]
    s = np.linalg.norm(v, axis=-1)
    angle = 2 * np.arctan2(s, w)
    scale = np.where(s > 1e-12, angle / np.maximum(s, 1e-12), 2.0 / np.maximum(w, 1e-12))
    return v * scale[..., None]


def rotvec_to_quat(rotvec) -> np.ndarray:
    """Rotation vector (axis * angle, rad) -> quaternion xyzw with w >= 0; the inverse of
    :func:`quat_to_rotvec` (robosuite's ``quat2axisangle`` writes LIBERO's ``ee_ori`` this way)."""
    r = np.asarray(rotvec, np.float64)
    angle = np.linalg.norm(r, axis=-1, keepdims=True)
    half = angle / 2
    # sin(a/2)/a -> 1/2 as a -> 0 (Taylor to a^2 is exact in float64 below 1e-6)
    k = np.where(angle > 1e-6, np.sin(half) / np.maximum(angle, 1e-300), 0.5 - angle ** 2 / 48)
    q = np.concatenate([r * k, np.cos(half)], axis=-1)
    return q * np.where(q[..., 3:] < 0, -1.0, 1.0)


def matrix_to_quat(m) -> np.ndarray:
    """Rotation matrices (..., 3, 3) (the rotation block of a pose) -> quaternion xyzw with w >= 0,
    normalised. Shepperd's method: each matrix pivots on the largest of |w|, |x|, |y|, |z|, so no
    branch divides by a near-zero component."""
    m = np.asarray(m, np.float64)
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    d = np.stack([tr, m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], axis=-1)
    pivot = np.argmax(d, axis=-1)
    # 4 |q_pivot| = 2 sqrt(1 + 2 d_pivot - tr)
    s = 2 * np.sqrt(np.maximum(1.0 + 2.0 * np.take_along_axis(d, pivot[..., None], -1)[..., 0] - tr, 1e-300))
    a, b, c = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    xy, xz, yz = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    p = s * s / 4
    q = np.select([(pivot == k)[..., None] for k in range(4)], [
        np.stack([a, b, c, p], -1),        # w largest
        np.stack([p, xy, xz, a], -1),      # x largest
        np.stack([xy, p, yz, b], -1),      # y largest
        np.stack([xz, yz, p, c], -1),      # z largest
    ]) / s[..., None]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return q * np.where(q[..., 3:] < 0, -1.0, 1.0)
