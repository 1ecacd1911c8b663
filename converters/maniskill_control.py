"""What a ManiSkill 3 control mode says about its action columns and the robot's joints, for
``converters/maniskill.py``.

ManiSkill's PD controllers normalise actions to [-1, 1] (``normalize_action=True``) and map them with
``gym_utils.clip_and_scale_action`` (clip to [-1, 1], then ``low + (a + 1) / 2 * (high - low)``) onto the
bounds of the robot's controller config. Those bounds live in the robot's agent class, never in the
trajectory file, so actions are scaled to physical units only for robots whose configs are written down
here: the Panda (``mani_skill/agents/robots/panda/panda.py``; ``panda_wristcam`` is the same arm with a
hand camera). Its action vector is the 7 arm columns, then one gripper column for the
PDJointPosMimicController driving both fingers to a target in [-0.01, 0.04] m (normalised; -0.01 is
ManiSkill's trick to keep squeezing thin objects, so a target <= 0 is fully closed).

| control mode (Panda)                        | arm columns -> canonical | scaling |
|---------------------------------------------|--------------------------|---------|
| pd_joint_pos                                | action.joint_pos (7)     | rad, absolute, not normalised (as recorded) |
| pd_joint_delta_pos, pd_joint_target_delta_pos | action.joint_delta_pos (7) | +-0.1 rad added to the current qpos / to the previous target (the description says which) |
| pd_joint_vel                                | action.joint_vel (7)     | +-1 rad/s |
| pd_ee_delta_pos, pd_ee_target_delta_pos     | action.eef_delta_pos     | +-0.1 m, root (base) frame translation |
| pd_ee_delta_pose, pd_ee_target_delta_pose   | action.eef_delta_pos, action.eef_delta_rot | +-0.1 m; rotation clipped to norm 1, x 0.1 rad, applied as Euler ``XYZ`` (pytorch3d: R = Rx Ry Rz) on the root-aligned rotation -> axis-angle |
| pd_ee_pose                                  | action.eef_pos, action.eef_rot | absolute, base frame; Euler ``XYZ`` -> quaternion xyzw |
| gripper column (every mode above)           | action.gripper           | finger target -0.01 + (a + 1) / 2 * 0.05 m -> closure 1 - target / 0.04, clipped |

Any other mode or robot: no canonical action; ``extra.actions`` (always written) holds them as recorded.
State (Panda): ``obs/agent/qpos`` is the 7 arm joints (rad) then the two finger joints (m, 0 .. 0.04 each).
"""

from __future__ import annotations

import numpy as np

from converters.rotations import matrix_to_quat, pose6_to_matrix, quat_to_rotvec

PANDA_ROBOTS = ("panda", "panda_wristcam")
PANDA_ARM = 7
PANDA_FINGER_MAX_M = 0.04
GRIPPER_LOW, GRIPPER_HIGH = -0.01, 0.04
JOINT_DELTA, JOINT_VEL, EE_POS, EE_ROT = 0.1, 1.0, 0.1, 0.1
MODES = {"pd_joint_pos": "joint_pos", "pd_joint_delta_pos": "joint_delta", "pd_joint_target_delta_pos": "joint_delta",
         "pd_joint_vel": "joint_vel", "pd_ee_delta_pos": "ee_delta_pos", "pd_ee_target_delta_pos": "ee_delta_pos",
         "pd_ee_delta_pose": "ee_delta_pose", "pd_ee_target_delta_pose": "ee_delta_pose", "pd_ee_pose": "ee_pose"}
ARM_WIDTH = {"joint_pos": 7, "joint_delta": 7, "joint_vel": 7, "ee_delta_pos": 3, "ee_delta_pose": 6, "ee_pose": 6}
SCALE_NOTE = "ManiSkill clip_and_scale_action: clip to [-1, 1], then low + (a + 1) / 2 * (high - low)"


def clip_and_scale(a: np.ndarray, low: float, high: float) -> np.ndarray:
    """ManiSkill's ``clip_and_scale_action`` in float64."""
    return low + (np.clip(np.asarray(a, np.float64), -1.0, 1.0) + 1.0) / 2.0 * (high - low)


def euler_XYZ_to_matrix(euler) -> np.ndarray:
    """Intrinsic Euler ``XYZ`` as pytorch3d's ``euler_angles_to_matrix(e, "XYZ")``: R = Rx(a) Ry(b) Rz(c)."""
    e = np.asarray(euler, np.float64)
    axes = []
    for i in range(3):
        single = np.zeros(e.shape[:-1] + (6,))
        single[..., 3 + i] = e[..., i]
        axes.append(pose6_to_matrix(single)[..., :3, :3])
    return axes[0] @ axes[1] @ axes[2]


def panda_closure_from_fingers(fingers: np.ndarray) -> np.ndarray:
    """(T, 2) Panda finger joints (m, 0 open-shut .. 0.04 each) -> (T, 1) closure 0 open .. 1 closed."""
    f = np.asarray(fingers, np.float64)
    return np.clip(1.0 - f.sum(axis=1, keepdims=True) / (2 * PANDA_FINGER_MAX_M), 0.0, 1.0)


def map_panda_state(ep, qpos: np.ndarray | None, qvel: np.ndarray | None, key: str) -> None:
    """The Panda's arm joints and finger closure from obs/agent/qpos, qvel (9 columns each)."""
    if qpos is not None:
        ep.add("state.joint_pos", qpos[:, :PANDA_ARM], description=f"{key}/obs/agent/qpos[:, :7], Panda arm joints")
        ep.add("state.gripper", panda_closure_from_fingers(qpos[:, PANDA_ARM:PANDA_ARM + 2]), derived=True,
               description=f"1 - ({key}/obs/agent/qpos[:, 7] + qpos[:, 8]) / 0.08 m, clipped to [0, 1]")
    if qvel is not None:
        ep.add("state.joint_vel", qvel[:, :PANDA_ARM], description=f"{key}/obs/agent/qvel[:, :7], Panda arm joints")


def map_panda_actions(ep, actions: np.ndarray, mode: str) -> str | None:
    """Canonical action features for a Panda control mode; the action_space, or None when the mode
    (or the action width) has no mapping here."""
    kind = MODES.get(mode)
    if kind is None or actions.shape[1] != ARM_WIDTH[kind] + 1:
        return None
    arm, grip = actions[:, :ARM_WIDTH[kind]], actions[:, -1:]
    src = f"{mode} actions"
    if kind == "joint_pos":
        ep.add("action.joint_pos", arm, description=f"{src}[:, :7]: Panda arm joint targets as recorded")
    elif kind == "joint_delta":
        ep.add("action.joint_delta_pos", clip_and_scale(arm, -JOINT_DELTA, JOINT_DELTA), derived=True,
               description=f"{src}[:, :7] x +-0.1 rad ({SCALE_NOTE}); added to "
               + ("the previous joint target" if "target" in mode else "the current qpos"))
    elif kind == "joint_vel":
        ep.add("action.joint_vel", clip_and_scale(arm, -JOINT_VEL, JOINT_VEL), derived=True,
               description=f"{src}[:, :7] x +-1 rad/s ({SCALE_NOTE})")
    elif kind in ("ee_delta_pos", "ee_delta_pose"):
        ep.add("action.eef_delta_pos", clip_and_scale(arm[:, :3], -EE_POS, EE_POS), derived=True,
               description=f"{src}[:, :3] x +-0.1 m in the root frame ({SCALE_NOTE})")
        if kind == "ee_delta_pose":
            rot = np.asarray(arm[:, 3:6], np.float64)
            norm = np.linalg.norm(rot, axis=1, keepdims=True)
            rot = np.where(norm > 1, rot / np.maximum(norm, 1e-300), rot) * EE_ROT
            ep.add("action.eef_delta_rot", quat_to_rotvec(matrix_to_quat(euler_XYZ_to_matrix(rot))), derived=True,
                   description=f"{src}[:, 3:6] clipped to norm 1, x 0.1 rad, Euler XYZ (R = Rx Ry Rz) -> axis-angle, "
                               "root-aligned rotation")
    else:
        ep.add("action.eef_pos", arm[:, :3], description=f"{src}[:, :3]: target position in the robot base frame")
        ep.add("action.eef_rot", matrix_to_quat(euler_XYZ_to_matrix(arm[:, 3:6])), derived=True,
               description=f"{src}[:, 3:6] Euler XYZ (R = Rx Ry Rz) -> quaternion xyzw, base frame")
    target = clip_and_scale(grip, GRIPPER_LOW, GRIPPER_HIGH)
    ep.add("action.gripper", np.clip(1.0 - target / PANDA_FINGER_MAX_M, 0.0, 1.0), derived=True,
           description=f"{src}[:, -1]: finger target -0.01 + (a + 1) / 2 * 0.05 m -> closure "
                       "1 - target / 0.04, clipped")
    return {"joint_delta": "joint_delta", "ee_delta_pos": "eef_delta", "ee_delta_pose": "eef_delta",
            "ee_pose": "eef_abs"}.get(kind, kind)
