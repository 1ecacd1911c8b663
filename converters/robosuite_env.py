"""What a robosuite recording's environment description says about its actions and gripper, for the
robosuite-family converters (robomimic's ``env_args["env_kwargs"]``, raw robosuite's ``env_info``).

The arm controller config is one dict in robosuite <= 1.4 (``{"type": "OSC_POSE", "input_max": 1,
"input_min": -1, "output_max": [0.05]*3 + [0.5]*3, ..., "control_delta": true}``, goals in the world
frame) and sits under ``body_parts.right`` of a composite controller in 1.5 (``{"type": "BASIC",
"body_parts": {"right": {"type": "OSC_POSE", ..., "input_type": "delta", "input_ref_frame":
"base"}}}``). robosuite's ``Controller.scale_action`` clips an action to [input_min, input_max] and maps
it affinely onto [output_min, output_max]: metres and axis-angle radians for OSC. The arm's columns come
first in the action vector, the gripper's next (one for the Panda gripper: -1 open .. +1 close,
PandaGripper.format_action moves the fingers by the sign), anything else (a mobile base) after.

The Panda gripper's finger joints (panda_gripper.xml): ``finger_joint1`` slides in [0, 0.04] m,
``finger_joint2`` in [-0.04, 0] m; ``robot0_gripper_qpos`` is the pair, so the opening is q1 - q2 in
[0, 0.08] m and closure = 1 - opening / 0.08 (clipped: MuJoCo's soft limits overshoot slightly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PANDA_OPENING_M = 0.08   # finger_joint1 range [0, 0.04] minus finger_joint2 range [-0.04, 0]
ARM_DIMS = {"OSC_POSE": 6, "OSC_POSITION": 3}
PANDA_GRIPPERS = ("default", "PandaGripper")


@dataclass(frozen=True)
class ArmControl:
    """The arm part of a robosuite controller config. ``dims`` is None for controllers whose actions
    have no canonical mapping here (joint position / velocity / torque, IK); ``scale`` / ``offset``
    are None when the config does not give the input and output ranges."""

    type: str
    dims: int | None
    delta: bool
    frame: str
    input_min: np.ndarray | None
    input_max: np.ndarray | None
    scale: np.ndarray | None
    offset: np.ndarray | None
    config: dict

    def scaled(self, actions: np.ndarray) -> np.ndarray:
        """robosuite's scale_action on (T, dims) normalised actions: clip, then map onto the output range."""
        a = np.clip(np.asarray(actions, np.float64), self.input_min, self.input_max)
        return (a - (self.input_max + self.input_min) / 2) * self.scale + self.offset


def _vec(value, n: int) -> np.ndarray | None:
    if value is None:
        return None
    v = np.asarray(value, np.float64).ravel()
    return np.full(n, float(v[0])) if v.size == 1 else v[:n]


def arm_control(env_kwargs: dict) -> ArmControl | None:
    """The arm controller of the first robot, or None when env_kwargs has no controller config."""
    cfg = env_kwargs.get("controller_configs")
    if isinstance(cfg, list):
        cfg = cfg[0] if cfg else None
    if isinstance(cfg, dict) and isinstance(cfg.get("body_parts"), dict):   # robosuite 1.5 composite
        parts = cfg["body_parts"]
        cfg = parts.get("right") or parts.get("left")
    if not isinstance(cfg, dict) or "type" not in cfg:
        return None
    kind = str(cfg["type"])
    dims = ARM_DIMS.get(kind)
    delta = cfg.get("input_type", "delta" if cfg.get("control_delta", True) else "absolute") == "delta"
    n = dims or 0
    lo, hi = _vec(cfg.get("input_min"), n), _vec(cfg.get("input_max"), n)
    out_lo, out_hi = _vec(cfg.get("output_min"), n), _vec(cfg.get("output_max"), n)
    scale = offset = None
    if dims and all(v is not None and v.size == dims for v in (lo, hi, out_lo, out_hi)):
        scale, offset = np.abs(out_hi - out_lo) / np.abs(hi - lo), (out_hi + out_lo) / 2
    return ArmControl(kind, dims, delta, str(cfg.get("input_ref_frame", "world")), lo, hi, scale, offset, cfg)


def robot_names(env_kwargs: dict) -> list[str]:
    robots = env_kwargs.get("robots") or []
    return [robots] if isinstance(robots, str) else [str(r) for r in robots]


def _first_gripper(env_kwargs: dict):
    """robosuite's gripper_types: "default" when not given; None (JSON null) means no gripper."""
    g = env_kwargs.get("gripper_types", "default")
    return (g[0] if g else None) if isinstance(g, list) else g


def has_gripper(env_kwargs: dict) -> bool:
    return _first_gripper(env_kwargs) not in (None, "None")


def has_panda_gripper(env_kwargs: dict) -> bool:
    """A Panda-family robot (Panda, PandaOmron, LIBERO's MountedPanda ...) with its default gripper."""
    robots = robot_names(env_kwargs)
    return bool(robots) and "panda" in robots[0].lower() and _first_gripper(env_kwargs) in PANDA_GRIPPERS


def panda_closure(qpos: np.ndarray) -> np.ndarray:
    """(T, 2) Panda finger positions [finger_joint1, finger_joint2] -> (T, 1) closure, 0 open .. 1 closed."""
    q = np.asarray(qpos, np.float64)
    return np.clip(1.0 - (q[:, :1] - q[:, 1:2]) / PANDA_OPENING_M, 0.0, 1.0)


def gripper_command_closure(a: np.ndarray) -> np.ndarray:
    """robosuite gripper command -1 open .. +1 close -> closure 0 .. 1 (clipped as robosuite clips it)."""
    return np.clip((np.asarray(a, np.float64) + 1.0) / 2.0, 0.0, 1.0)
