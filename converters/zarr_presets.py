"""Key mappings of ``converters.zarr_replay``: the ``pusht`` and ``umi`` presets and ``--option map=``.

A plan says, for each ``data/<key>`` of a store, where it goes: a step feature (canonical or
``extra.``, with a conversion and declared semantics), a camera role, or nowhere (``skip``, only when
a user asks). Keys no plan names are kept as ``extra.<key>`` by the converter and listed in the
episode's ``metadata.unmapped_keys``: nothing is guessed silently, nothing is lost.

``map=`` entries (``key:target`` separated by commas) override the preset for their key; a target is
``camera.<role>``, ``skip``, ``extra.<name>`` or a canonical feature taken as recorded (the user
states that the key already has the canonical unit and convention).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from converters.rotations import rotvec_to_quat
from wamdata.errors import ConfigError
from wamdata.schema import CANONICAL


@dataclass(frozen=True)
class Target:
    key: str                     # the array's name under data/
    kind: str                    # "feature" | "camera" | "skip"
    name: str = ""               # feature name or camera role
    convert: str | None = None   # a key of CONVERSIONS
    declared: dict = field(default_factory=dict, hash=False, compare=False)
    next_action: str | None = None   # where --option derive_action=next_state puts the next-step value


@dataclass
class Plan:
    targets: list[Target]
    required: list[str]          # keys whose absence fails the item
    fps: float
    embodiment: str
    family: str
    task: str | None = None
    action_space: str = "none"   # when the store itself records actions


def _closure(width: np.ndarray, max_width: float) -> np.ndarray:
    return np.clip(1.0 - np.asarray(width, np.float64) / max_width, 0.0, 1.0)


CONVERSIONS = {
    "rotvec_to_quat": lambda x, o: rotvec_to_quat(x),
    "width_to_closure": lambda x, o: _closure(x, o.gripper_max_width),
}


def convert(name: str | None, values: np.ndarray, options) -> np.ndarray:
    return values if name is None else CONVERSIONS[name](values, options).astype(np.float32)


# --- pusht ----------------------------------------------------------------------------------------

PUSHT_TASK = "push the T-shaped block onto the T-shaped target"
_PX = dict(frame="world", encoding="absolute")


def _pusht(keys: list[str], options) -> Plan:
    targets = [
        Target("img", "camera", "agentview"),
        Target("state", "feature", "extra.state", declared=dict(
            _PX, unit="px,px,px,px,rad", names=("agent_x", "agent_y", "block_x", "block_y", "block_angle"),
            description="agent position and T-block pose in the 512x512 Push-T workspace (px, y down), "
                        "block angle in rad")),
        Target("action", "feature", "extra.action", declared=dict(
            _PX, unit="px", names=("target_x", "target_y"),
            description="commanded agent (mouse) target position in the 512x512 workspace, px; not metres")),
        Target("keypoint", "feature", "extra.keypoint", declared=dict(
            _PX, unit="px", description="9 keypoints (x, y) of the T block in the 512x512 workspace, px")),
        Target("n_contacts", "feature", "extra.n_contacts", declared=dict(
            unit="count", description="agent-block contact points")),
    ]
    return Plan(targets, required=["img", "state", "action"], fps=10.0, embodiment="pusht_2d_point",
                family="sim", task=PUSHT_TASK, action_space="agent_target_px")


# --- umi ------------------------------------------------------------------------------------------

_ROBOT = re.compile(r"^robot(\d+)_(.+)$")
_CAMERA = re.compile(r"^camera(\d+)_rgb$")
_WORLD = "UMI's SLAM map frame aligned to the table tag (tx_slam_tag), not a robot base"


def _umi_camera_role(j: int, n_robots: int) -> str:
    """UMI's convention (scripts_slam_pipeline/06_generate_dataset_plan.py): camera i < n_grippers is
    gripper i's wrist camera, numbered from right (0) to left (1); other cameras follow."""
    if j >= n_robots:
        return f"exterior_{j - n_robots + 1}"
    if n_robots == 1:
        return "wrist"
    if n_robots == 2:
        return ("wrist_right", "wrist_left")[j]
    return f"wrist_robot{j}"


def _umi_robot(i: int, field_: str, key: str, max_width: float) -> list[Target]:
    pose = dict(frame="world", encoding="absolute")
    pre = "" if i == 0 else f"extra.robot{i}_"
    act = "action." if i == 0 else f"extra.robot{i}_action_"
    if field_ == "eef_pos":
        name = "state.eef_pos" if i == 0 else pre + "eef_pos"
        return [Target(key, "feature", name, declared=dict(pose, unit="m", description=f"robot{i} TCP position, "
                       f"metres, {_WORLD}"), next_action=act + "eef_pos")]
    if field_ == "eef_rot_axis_angle":
        name = "state.eef_rot" if i == 0 else pre + "eef_rot"
        return [Target(key, "feature", name, "rotvec_to_quat", dict(pose, unit="quat_xyzw", derived=True,
                       description=f"robot{i} TCP orientation from {key} (axis-angle) as quaternion xyzw, w >= 0, "
                       f"{_WORLD}"), next_action=act + "eef_rot"),
                Target(key, "feature", f"extra.{key}", declared=dict(pose, unit="rad_axis_angle"))]
    if field_ == "gripper_width":
        name = "state.gripper" if i == 0 else pre + "gripper"
        return [Target(key, "feature", name, "width_to_closure", dict(
                    unit="normalized", derived=True, names=(f"robot{i}",),
                    description=f"1 - width / {max_width} m, clipped to [0, 1] (0 = open, 1 = closed)"),
                    next_action=act + "gripper"),
                Target(key, "feature", f"extra.{key}", declared=dict(unit="m", description="finger gap, metres"))]
    if field_ in ("demo_start_pose", "demo_end_pose"):
        return [Target(key, "feature", f"extra.{key}", declared=dict(
            pose, unit="m+rad_axis_angle", names=("x", "y", "z", "rx", "ry", "rz"),
            description=f"robot{i} TCP pose at the demonstration's {field_.split('_')[1]}, repeated every step"))]
    return []


def _umi(keys: list[str], options) -> Plan:
    robots = sorted({int(m[1]) for k in keys if (m := _ROBOT.match(k))} | {0})
    targets = []
    for k in keys:
        if (m := _ROBOT.match(k)):
            targets += _umi_robot(int(m[1]), m[2], k, options.gripper_max_width)
        elif (m := _CAMERA.match(k)):
            targets.append(Target(k, "camera", _umi_camera_role(int(m[1]), len(robots))))
    required = [f"robot{i}_{f}" for i in robots for f in ("eef_pos", "eef_rot_axis_angle", "gripper_width")]
    return Plan(targets, required, fps=59.94, embodiment="umi_gripper" if len(robots) == 1 else "umi_bimanual",
                family="human_demo")


def _generic(keys: list[str], options) -> Plan:
    return Plan([], [], fps=0.0, embodiment="unknown", family="human_demo")


PRESETS = {"pusht": _pusht, "umi": _umi}


def parse_map(text: str | None) -> list[Target]:
    """``key:target,key:target`` -> Targets; a bad target raises ConfigError naming it."""
    out = []
    for entry in filter(None, (e.strip() for e in (text or "").split(","))):
        key, sep, target = entry.partition(":")
        if not sep or not key or not target:
            raise ConfigError(f"zarr_replay: map entry {entry!r} is not key:target")
        if target == "skip":
            out.append(Target(key, "skip"))
        elif target.startswith("camera.") and len(target) > 7:
            out.append(Target(key, "camera", target[7:]))
        elif target.startswith("extra.") or target in CANONICAL:
            out.append(Target(key, "feature", target))
        else:
            raise ConfigError(f"zarr_replay: map target {target!r} for {key!r}: use camera.<role>, skip, "
                              f"extra.<name> or a canonical feature ({', '.join(CANONICAL)})")
    return out


def make_plan(keys: list[str], options) -> Plan:
    """The preset's plan for these keys with the ``map=`` entries on top and the options' overrides."""
    plan = PRESETS.get(options.preset, _generic)(keys, options)
    overrides = parse_map(options.map)
    mapped = {t.key for t in overrides}
    plan.targets = [t for t in plan.targets if t.key not in mapped] + overrides
    plan.required = sorted(set(plan.required) | mapped)
    plan.fps = options.fps or plan.fps
    plan.embodiment = options.embodiment or plan.embodiment
    plan.family = options.family or plan.family
    plan.task = options.task or plan.task
    return plan
