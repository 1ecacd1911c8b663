"""``--source robomimic``: robomimic-layout HDF5 files (robosuite simulation), with presets for LIBERO,
RoboCasa and MimicGen. One item per demo: ``robomimic/<relpath>:demo_N``, in numeric demo order.

Layout (robomimic ``dataset_states_to_obs.py``): ``data`` attrs ``env_args`` (JSON: ``env_name``,
``env_kwargs`` with ``robots``, ``controller_configs``, ``control_freq``) and ``total``;
``data/demo_N/{actions, states, rewards, dones, obs/*, next_obs/*}``, attr ``num_samples``;
``mask/<filter_key>``: bytes demo names. Every per-step array must have T = len(actions) rows.

| source field                         | canonical                | units / conventions |
|--------------------------------------|--------------------------|---------------------|
| obs/robot0_eef_pos                   | state.eef_pos            | m, **world** frame (robosuite's site_xpos) |
| obs/robot0_eef_quat                  | state.eef_rot            | xyzw (robosuite: convert_quat(body_xquat, to="xyzw")), world frame |
| obs/robot0_base_to_eef_{pos,quat}    | state.eef_pos / eef_rot  | base frame; preferred when present (RoboCasa); robot0_eef_* then stay in extra. |
| obs/robot0_gripper_qpos (Panda, 2)   | state.gripper            | closure 1 - (q1 - q2) / 0.08 m, clipped (converters/robosuite_env.py); raw in extra. |
| obs/robot0_joint_pos, robot0_joint_vel | state.joint_pos / joint_vel | rad, rad/s |
| actions[:, :6] (OSC_POSE, delta)     | action.eef_delta_pos / eef_delta_rot | robosuite scale_action from env_args' controller config (0.05 m, 0.5 rad per unit by default), frame of the config (world <= 1.4, input_ref_frame in 1.5); unit "normalized" when the config lacks the ranges |
| actions[:, 6] (gripper)              | action.gripper           | -1 open .. +1 close -> (a + 1) / 2 |
| obs/<cam>_image uint8 (T,H,W,3)      | camera agentview, wrist (robot0_eye_in_hand), others by name | RGB, upright (robomimic flips at extraction); camera_info intrinsics; its extrinsics (camera-to-world, OpenCV axes, taken once at the demo's initial state) as the extrinsics of a fixed camera; for an eye-in-hand camera, which moves, only in metadata.extrinsics_at_first_step |
| actions, states, rewards, dones, other obs/*, action_dict/*, datagen_info/*, src_demo_labels | extra.<path with dots> | as recorded |
| next_obs/*                           | metadata.final_next_obs  | equal to obs shifted by one step (checked): only the last row, the observation after the final action; an array that differs is kept whole as extra.next_obs.<k>; next_obs images are dropped |
| env_args env_name / --option task    | task                     | |
| rewards[-1] > 0 (sparse rewards)     | success                  | None with reward_shaping or without rewards |
| (none)                               | timestamp                | i / fps: fps option, else env_kwargs control_freq, else 20 Hz |

Presets (``--option preset=``; never guessed: discovery only warns when a file looks like one):

- ``libero``: task = ``problem_info`` ``language_instruction``; ``obs/agentview_rgb`` / ``eye_in_hand_rgb``
  are robosuite's OpenGL renders, upside down, flipped upright (``flip_vertical`` recorded) unless
  ``macros_image_convention`` is ``opencv``; ``ee_states`` (pos + axis-angle) -> state.eef_pos and
  state.eef_rot (quaternion from the axis-angle, derived), ``joint_states`` -> state.joint_pos,
  ``gripper_states`` -> state.gripper (Panda closure); success = rewards[-1] == 1 (create_dataset.py
  writes 1 on the last step of each kept demo).
- ``robocasa``: task = ``ep_meta`` ``lang`` (per demo attr, required); ep_meta in metadata; the arm and
  gripper are the first 7 of the 12 action columns (base motion and mode stay in extra.actions).
- ``mimicgen``: ``datagen_info/*`` required and kept under extra.; ``src_demo_inds`` (source demo per
  subtask) in metadata.provenance, ``src_demo_labels`` per step in extra.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from converters.aloha import HDF5Frames
from converters.hdf5_io import find_h5, open_h5
from converters.robomimic_meta import describe, json_attr, looks_like
from converters.robosuite_env import (arm_control, gripper_command_closure, has_gripper, has_panda_gripper,
                                      panda_closure, robot_names)
from converters.rotations import rotvec_to_quat
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import Camera, Episode
from wamdata.sources import Converter, SourceItem, check_read_size, json_value, register

log = logging.getLogger(__name__)

PRESETS = ("none", "libero", "robocasa", "mimicgen")
CAMERA_ROLES = {"agentview": "agentview", "robot0_eye_in_hand": "wrist", "eye_in_hand": "wrist"}
STEP_PREFIXES = ("actions", "states", "rewards", "dones", "obs/", "next_obs/", "action_dict/", "datagen_info/",
                 "src_demo_labels")
DEFAULT_FPS = 20.0
_DEMO_RE = re.compile(r"demo_(\d+)$")


def _demo_order(name: str):
    m = _DEMO_RE.match(name)
    return (0, int(m[1]), name) if m else (1, 0, name)


@dataclass
class FlippedFrames:
    """Frames of another source turned upright (rows reversed)."""

    inner: HDF5Frames
    video_path: str | None = None
    codec: str | None = None

    num_frames = property(lambda self: self.inner.num_frames)
    height = property(lambda self: self.inner.height)
    width = property(lambda self: self.inner.width)

    def iter_frames(self) -> Iterator[np.ndarray]:
        for frame in self.inner.iter_frames():
            yield np.ascontiguousarray(frame[::-1])


def _is_image(ds) -> bool:
    return ds.dtype == np.uint8 and ds.ndim == 4 and ds.shape[-1] == 3


@register("robomimic")
class Robomimic(Converter):
    family = "sim"
    revision = 2   # 2: fixed cameras' extrinsics in the camera (extrinsics_frame world), not in its metadata

    @dataclass
    class Options:
        preset: str = "none"              # none | libero | robocasa | mimicgen
        filter_key: str | None = None     # convert only the demos listed in mask/<filter_key>
        fps: float | None = None          # default: env_kwargs control_freq, else 20
        embodiment: str | None = None     # default: the first robot in env_kwargs, lower case
        task: str | None = None           # task text for every episode (overrides the file's)

        def __post_init__(self):
            if self.preset not in PRESETS:
                raise ConfigError(f"robomimic: option preset={self.preset!r}; known: {', '.join(PRESETS)}")
            if self.fps is not None and not self.fps > 0:
                raise ConfigError(f"robomimic: option fps must be > 0, got {self.fps}")

    def discover(self, root: str) -> Iterator[SourceItem]:
        root, paths = find_h5(root)
        for path in paths:
            yield from self._file_items(path, os.path.relpath(path, root))

    def _file_items(self, path: str, rel: str) -> Iterator[SourceItem]:
        import h5py

        def failed(suffix, reason):
            return SourceItem(id=f"robomimic/{rel}{suffix}", path=path, info={"relpath": rel, "error": reason})

        try:
            f = h5py.File(path, "r")
        except OSError as e:
            yield failed("", f"not a readable HDF5 file ({e})")
            return
        with f:
            if "data" not in f:
                yield failed("", "no group 'data' (not a robomimic file)")
                return
            self._hint(path, f["data"])
            key = self.options.filter_key
            if key is None:
                names = [k for k in f["data"] if _DEMO_RE.match(k)]
            elif f"mask/{key}" not in f:
                known = ", ".join(sorted(f["mask"])) if "mask" in f else "none"
                yield failed(f":mask/{key}", f"mask/{key} missing (filter_key={key}); masks in the file: {known}")
                return
            else:
                mask = f[f"mask/{key}"]
                try:
                    check_read_size(path, f"mask/{key}", mask.shape, mask.dtype)
                except SourceError as e:
                    yield failed(f":mask/{key}", e.reason)
                    return
                listed = np.asarray(mask[()]).ravel()
                names = {n.decode() if isinstance(n, bytes) else str(n) for n in listed}
        for name in sorted(names, key=_demo_order):
            m = _DEMO_RE.match(name)
            yield SourceItem(id=f"robomimic/{rel}:{name}", path=path, index=int(m[1]) if m else None,
                             info={"relpath": rel, "demo": name})

    def _hint(self, path: str, data) -> None:
        """Warn (never switch) when a file converted without a preset looks like one."""
        looks = looks_like(data) if self.options.preset == "none" else None
        if looks:
            why = ": frames stored upside down" if looks == "libero" else ""
            log.warning("robomimic: %s looks like %s; converting with preset=none (pass --option preset=%s "
                        "for its quirks%s)", path, looks, looks, why)

    def read(self, item: SourceItem) -> Episode:
        if "error" in item.info:
            raise SourceError(item, f"robomimic: {item.info['error']}")
        with open_h5(item, "robomimic") as f:
            return self._read(item, f)

    def _read(self, item: SourceItem, f) -> Episode:
        import h5py

        preset, demo = self.options.preset, item.info["demo"]
        key = f"data/{demo}"
        if key not in f:
            where = f" but named in mask/{self.options.filter_key}" if self.options.filter_key else ""
            raise SourceError(item, f"robomimic: {key} is absent from the file{where}")
        data, g = f["data"], f[key]
        env_args = json_attr(item, data, "env_args", "data")
        kwargs = env_args.get("env_kwargs") or {}
        datasets: dict[str, h5py.Dataset] = {}
        g.visititems(lambda name, obj: datasets.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
        if "actions" not in datasets:
            raise SourceError(item, f"robomimic: dataset {key}/actions missing")
        for name, ds in datasets.items():   # headers bounded before anything is read (images included)
            check_read_size(item, f"{key}/{name}", ds.shape, ds.dtype)
        actions = np.asarray(datasets["actions"][()])
        T = len(actions)
        if actions.ndim != 2 or T == 0:
            raise SourceError(item, f"robomimic: {key}/actions has shape {actions.shape}, want (T, A) with T > 0")
        if "num_samples" in g.attrs and int(g.attrs["num_samples"]) != T:
            raise SourceError(item, f"robomimic: {key} attr num_samples is {int(g.attrs['num_samples'])} but "
                                    f"{key}/actions has {T} rows")
        for name, ds in datasets.items():
            if name.startswith(STEP_PREFIXES) and (ds.ndim == 0 or len(ds) != T):
                raise SourceError(item, f"robomimic: {key}/{name} has shape {ds.shape}, want {T} rows (one per action)")
        if preset == "mimicgen" and "datagen_info" not in g:
            raise SourceError(item, f"robomimic: group {key}/datagen_info missing (preset=mimicgen)")
        robots = robot_names(kwargs)
        fps = float(self.options.fps or kwargs.get("control_freq") or DEFAULT_FPS)
        ep = Episode(episode_id=item.id, source="robomimic", family=self.family,
                     embodiment=self.options.embodiment or (robots[0].lower() if robots else "robosuite"), fps=fps,
                     steps={"timestamp": np.arange(T, dtype=np.float64) / fps})
        images = {n for n, ds in datasets.items() if n.startswith(("obs/", "next_obs/")) and _is_image(ds)}
        arrays = {n: np.asarray(ds[()]) for n, ds in datasets.items() if n not in images}
        unconverted = ep.metadata.setdefault("unconverted", {})
        consumed = self._state(item, ep, arrays, kwargs, key, unconverted)
        self._actions(item, ep, actions, kwargs, key, unconverted)
        self._cameras(item, ep, f, g, key, datasets, images)
        final_next = {}
        for name, values in sorted(arrays.items()):
            if name in consumed or name == "src_demo_inds":
                continue
            if name.startswith("next_obs/"):
                obs = arrays.get("obs/" + name[len("next_obs/"):])
                if obs is not None and np.array_equal(values[:-1], obs[1:]):
                    final_next[name[len("next_obs/"):]] = values[-1].tolist()
                    continue
            if name.startswith(STEP_PREFIXES) or (values.ndim > 0 and len(values) == T):
                ep.add("extra." + name.replace("/", "."), values)
            else:
                ep.metadata.setdefault("per_demo", {})[name] = values.tolist()
        describe(item, ep, data, g, env_args, arrays, self.options, final_next,
                 sorted(n for n in images if n.startswith("next_obs/")))
        if not unconverted:
            del ep.metadata["unconverted"]
        return ep

    def _state(self, item, ep, arrays, kwargs, key, unconverted) -> set[str]:
        """Canonical state features; returns the obs arrays mapped unchanged (not repeated in extra.)."""
        def take(name, canonical, width=None, **declared):
            v = arrays.get(name)
            if v is None:
                return None
            if v.ndim != 2 or (width is not None and v.shape[1] != width):
                raise SourceError(item, f"robomimic: {key}/{name} has shape {v.shape}, want (T, {width or 'N'})")
            v = v if np.issubdtype(v.dtype, np.floating) else v.astype(np.float64)
            if canonical:
                ep.add(canonical, v, description=f"{key.split('/')[0]}/demo_N/{name}", **declared)
            return v

        consumed = set()
        if self.options.preset == "libero":
            ee = take("obs/ee_states", None, 6)
            if ee is not None:
                ep.add("state.eef_pos", ee[:, :3], frame="world", description="obs/ee_states[:, :3]")
                ep.add("state.eef_rot", rotvec_to_quat(ee[:, 3:6]), frame="world", derived=True,
                       description="obs/ee_states[:, 3:6] (robosuite quat2axisangle) as a quaternion xyzw")
            joint, grip = "obs/joint_states", "obs/gripper_states"
        else:
            side = "base_to_eef" if "obs/robot0_base_to_eef_pos" in arrays else "eef"
            frame = "base" if side == "base_to_eef" else "world"
            for name, canonical, width in ((f"obs/robot0_{side}_pos", "state.eef_pos", 3),
                                           (f"obs/robot0_{side}_quat", "state.eef_rot", 4)):
                if take(name, canonical, width, frame=frame) is not None:
                    consumed.add(name)
            if take("obs/robot0_joint_vel", "state.joint_vel") is not None:
                consumed.add("obs/robot0_joint_vel")
            joint, grip = "obs/robot0_joint_pos", "obs/robot0_gripper_qpos"
        if take(joint, "state.joint_pos") is not None:
            consumed.add(joint)
        if grip in arrays:
            if has_panda_gripper(kwargs) and arrays[grip].ndim == 2 and arrays[grip].shape[1] == 2:
                ep.add("state.gripper", panda_closure(arrays[grip]), derived=True,
                       description=f"Panda closure 1 - ({grip}[:, 0] - {grip}[:, 1]) / 0.08 m, clipped to [0, 1]")
            else:
                unconverted[grip] = (f"no closure mapping for robots {robot_names(kwargs)} "
                                     f"with shape {arrays[grip].shape}")
        return consumed

    def _actions(self, item, ep, actions, kwargs, key, unconverted) -> None:
        ctrl = arm_control(kwargs)
        if ctrl is None:
            ep.action_space = "raw"
            unconverted["actions"] = "env_args has no controller_configs: kept raw in extra.actions"
            return
        if ctrl.dims is None or not ctrl.delta:
            ep.action_space = f"robosuite_{ctrl.type.lower()}" + ("" if ctrl.delta else "_absolute")
            kind = "delta" if ctrl.delta else "absolute"
            unconverted["actions"] = f"controller {ctrl.type} ({kind}) has no canonical mapping"
            return
        if actions.shape[1] < ctrl.dims:
            raise SourceError(item, f"robomimic: {key}/actions has {actions.shape[1]} columns; controller "
                                    f"{ctrl.type} needs at least {ctrl.dims}")
        ep.metadata["controller"] = ctrl.config
        if ctrl.scale is not None:
            values, unit, how = ctrl.scaled(actions[:, :ctrl.dims]), {}, (
                f"robosuite scale_action of actions[:, :{ctrl.dims}]: clip to [{ctrl.input_min.tolist()}, "
                f"{ctrl.input_max.tolist()}], x {ctrl.scale.tolist()} + {ctrl.offset.tolist()}")
        else:
            values, unit, how = actions[:, :ctrl.dims].astype(np.float64), {"unit": "normalized"}, (
                f"actions[:, :{ctrl.dims}] as recorded: the controller config gives no input/output range")
        ep.add("action.eef_delta_pos", values[:, :3], frame=ctrl.frame, derived=True, description=how, **unit)
        if ctrl.dims == 6:
            ep.add("action.eef_delta_rot", values[:, 3:6], frame=ctrl.frame, derived=True, description=how, **unit)
        if has_gripper(kwargs) and actions.shape[1] > ctrl.dims:
            ep.add("action.gripper", gripper_command_closure(actions[:, ctrl.dims:ctrl.dims + 1]), derived=True,
                   description=f"(actions[:, {ctrl.dims}] + 1) / 2: robosuite's -1 open .. +1 close")
        ep.action_space = "eef_delta"

    def _cameras(self, item, ep, f, g, key, datasets, images) -> None:
        convention = json_value(f["data"].attrs.get("macros_image_convention", "opengl"))
        flip = self.options.preset == "libero" and convention != "opencv"
        info = json_attr(item, g, "camera_info", key)
        for name in sorted(n for n in images if n.startswith("obs/")):
            src = re.sub(r"_(image|rgb)$", "", name[len("obs/"):])
            role = CAMERA_ROLES.get(src, src)
            if role in ep.cameras:
                role = src
            ds = datasets[name]
            frames = HDF5Frames(item.path, f"{key}/{name}", len(ds), int(ds.shape[1]), int(ds.shape[2]),
                                compressed=False)
            cam = info.get(src, {})
            # robomimic takes camera_info once, at the demo's initial state: the world pose of a fixed
            # camera, but only the first step's pose of one riding on the gripper
            moves = "eye_in_hand" in src
            extrinsics = np.asarray(cam["extrinsics"], np.float64) if "extrinsics" in cam and not moves else None
            ep.cameras[role] = Camera(
                role, FlippedFrames(frames) if flip else frames, fps=ep.fps,
                intrinsics=np.asarray(cam["intrinsics"], np.float64) if "intrinsics" in cam else None,
                extrinsics=extrinsics, extrinsics_frame="world",
                transforms=["flip_vertical"] if flip else [],
                metadata={"source_name": name,
                          **({"extrinsics_at_first_step": cam["extrinsics"]} if "extrinsics" in cam and moves else {})})
