"""``--source robosuite``: raw robosuite demonstrations (``demo.hdf5`` as written by robosuite's
``collect_human_demonstrations.py``), one item per ``data/demo_N``. States and actions only: raw
robosuite demonstrations hold no rendered observations (robomimic's layout adds ``obs/``).

Layout: ``data`` attrs ``env``, ``env_info`` (JSON: env_name, robots, controller_configs, ...),
``repository_version``, ``date``, ``time``; ``data/demo_N/{states (T, D), actions (T, A),
joint_torques (T, J)?}`` and a ``model_file`` attr (the MuJoCo model XML, or a file name). States and
actions have one row per control step: ``states[t]`` is the flattened MuJoCo state from which
``actions[t]`` was applied (robosuite's collector drops the state after the last action, and its
playback script checks ``actions[j]`` leads to ``states[j + 1]``).

| source field                        | canonical              | units / conventions |
|-------------------------------------|------------------------|---------------------|
| actions[:, 0:3] (OSC_POSE)          | action.eef_delta_pos   | m: robosuite's ``scale_action`` (clip to input_min..max, map to output_min..max) with the env_info controller's bounds, derived; frame ``world`` (1.x OSC) or the controller's ``input_ref_frame`` |
| actions[:, 3:6] (OSC_POSE)          | action.eef_delta_rot   | axis-angle rad, scaled the same way (robosuite turns it into a quaternion with axisangle2quat) |
| actions[:, 6] (7-D OSC_POSE)        | action.gripper         | robosuite's command -1 = open .. 1 = close -> closure (a + 1) / 2, clipped; derived. Grippers without a DoF (Wipe) give 6-D actions and no gripper |
| (no output_max / input_max)         | action.eef_delta_*     | kept as recorded, unit ``normalized`` (the scaling is not in the file) |
| actions as recorded                 | extra.actions          | (T, A); the only action column for controllers other than delta OSC_POSE |
| states                              | extra.states           | MuJoCo flattened sim state [time, qpos (nq), qvel (nv)] |
| joint_torques                       | extra.joint_torques    | N m, as recorded |
| any other per-step dataset          | extra.<name>           | as recorded |
| env_info.control_freq               | fps                    | else 1 / the step of the states' sim-time column (robosuite's collector runs at 20 Hz without writing it); ``--option fps`` overrides |
| env_info.robots                     | embodiment             | lower case, ``+``-joined for several robots |
| attr env (env_info.env_name)        | task                   | CamelCase split into words: ``PickPlaceCan`` -> ``pick place can`` |
| attrs, env_info, model_file         | metadata               | the model XML as sha256 + length (``--option keep_model_xml=true`` keeps it whole) |
| (none)                              | timestamp              | step / fps |
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from converters.hdf5_io import find_h5, open_h5
from converters.robosuite_env import arm_control, gripper_command_closure, robot_names
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import Episode
from wamdata.sources import Converter, SourceItem, check_read_size, json_value, register

_DEMO_RE = re.compile(r"demo_(\d+)$")
_H5_RE = re.compile(r"\.(hdf5|h5)$")
OSC_NAMES = ("dx", "dy", "dz", "dax", "day", "daz")
STATES_NOTE = "MuJoCo flattened sim state: [time, qpos (nq), qvel (nv)]"


def task_from_env_name(name: str) -> str:
    """``PickPlaceCan`` -> ``pick place can``; ``PickCube-v1`` -> ``pick cube`` (a version suffix dropped)."""
    name = re.sub(r"-v\d+$", "", name)
    return " ".join(w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name))


def _demo_sort_key(name: str):
    m = _DEMO_RE.search(name)
    return (0, int(m[1]), name) if m else (1, 0, name)


@register("robosuite")
class Robosuite(Converter):
    family = "sim"

    @dataclass
    class Options:
        fps: float | None = None          # overrides env_info control_freq and the states' sim-time step
        embodiment: str | None = None     # overrides env_info robots
        task: str | None = None           # overrides the task text derived from the env name
        keep_model_xml: bool = False      # the whole model XML in metadata (default: sha256 + length)

        def __post_init__(self):
            if self.fps is not None and not self.fps > 0:
                raise ConfigError(f"robosuite: option fps must be > 0, got {self.fps}")

    def discover(self, root: str) -> Iterator[SourceItem]:
        import h5py

        root, paths = find_h5(root)
        for path in paths:
            rel = os.path.relpath(path, root)
            stem = "robosuite_" + re.sub(r"[^A-Za-z0-9_-]+", "_", _H5_RE.sub("", rel))
            try:
                with h5py.File(path, "r") as f:
                    data = f.get("data")
                    demos = sorted((k for k in data.keys() if isinstance(data[k], h5py.Group)), key=_demo_sort_key) \
                        if isinstance(data, h5py.Group) else []
            except OSError:
                demos = []
            if not demos:   # unreadable, or no data/demo_N: one item, so read() records why
                yield SourceItem(id=stem, path=path, info={"relpath": rel, "demo": None})
            for demo in demos:
                yield SourceItem(id=f"{stem}_{demo}", path=path, info={"relpath": rel, "demo": demo})

    def read(self, item: SourceItem) -> Episode:
        import h5py

        with open_h5(item, "robosuite") as f:
            demo = item.info.get("demo")
            if "data" not in f or not isinstance(f["data"], h5py.Group):
                raise SourceError(item, "robosuite: missing group 'data'; episode skipped")
            if demo is None or demo not in f["data"]:
                raise SourceError(item, f"robosuite: no demonstration group under 'data' ({demo or 'data/demo_N'})")
            return self._read(item, f["data"], f"data/{demo}")

    def _read(self, item: SourceItem, data, key: str) -> Episode:
        attrs = {k: json_value(v) for k, v in data.attrs.items()}
        try:
            env_info = json.loads(attrs["env_info"]) if "env_info" in attrs else {}
        except json.JSONDecodeError as e:
            raise SourceError(item, f"robosuite: data attr 'env_info' is not JSON ({e})") from None
        g = data[key.split("/", 1)[1]]
        arrays = {}
        for name in ("actions", "states"):
            if name not in g:
                raise SourceError(item, f"robosuite: missing dataset '{key}/{name}'; episode skipped")
            check_read_size(item, f"{key}/{name}", g[name].shape, g[name].dtype)
            arrays[name] = np.asarray(g[name][()])
            if arrays[name].ndim != 2:
                raise SourceError(item, f"robosuite: '{key}/{name}' has shape {arrays[name].shape}, want (T, D)")
        actions, states = arrays["actions"], arrays["states"]
        T = len(actions)
        if T == 0:
            raise SourceError(item, f"robosuite: '{key}/actions' has no steps")
        if len(states) != T:
            raise SourceError(item, f"robosuite: '{key}/states' has {len(states)} rows for {T} rows of "
                                    f"'{key}/actions' (robosuite stores one state per action)")
        fps, fps_source = self._fps(item, env_info, states, key)
        robots = robot_names(env_info)
        env = attrs.get("env") or env_info.get("env_name", "")
        ep = Episode(episode_id=item.id, source="robosuite", family="sim",
                     embodiment=self.options.embodiment or "+".join(r.lower() for r in robots if r) or "unknown",
                     fps=fps, steps={"timestamp": np.arange(T, dtype=np.float64) / fps})
        ep.action_space = self._actions(ep, actions, env_info)
        ep.add("extra.states", states, description=STATES_NOTE)
        for name in sorted(g.keys()):
            if name in ("actions", "states"):
                continue
            obj = g[name]
            if not hasattr(obj, "shape"):
                ep.metadata.setdefault("unconverted", {})[f"{key}/{name}"] = "a group, not a per-step dataset"
                continue
            if len(obj.shape) == 0 or obj.shape[0] != T:
                raise SourceError(item, f"robosuite: '{key}/{name}' has shape {obj.shape}, not {T} rows like "
                                        f"'{key}/actions'")
            ep.add(f"extra.{name}", np.asarray(obj[()]), **({"unit": "N m"} if name == "joint_torques" else {}))
        ep.tasks = [self.options.task] if self.options.task else ([task_from_env_name(env)] if env else [])
        ep.metadata.update({"env": env, "env_info": env_info, "attrs": attrs, "fps_source": fps_source,
                            "demo_attrs": self._demo_attrs(g),
                            "provenance": {"path": item.info.get("relpath", item.path), "demo": key}})
        return ep

    def _fps(self, item, env_info: dict, states: np.ndarray, key: str) -> tuple[float, str]:
        if self.options.fps is not None:
            return float(self.options.fps), "option"
        if env_info.get("control_freq"):
            return float(env_info["control_freq"]), "env_info.control_freq"
        dt = np.diff(states[:, 0]) if states.shape[1] and len(states) > 1 else np.zeros(0)
        if len(dt) and dt[0] > 0 and np.allclose(dt, dt[0], rtol=1e-6, atol=1e-9):
            return round(1.0 / float(np.mean(dt)), 6), f"{key}/states[:, 0] (sim time step {np.mean(dt):.6g} s)"
        raise SourceError(item, f"robosuite: no control_freq in data attr 'env_info' and '{key}/states[:, 0]' is "
                                "not a regular sim-time column; give --option fps=")

    @staticmethod
    def _actions(ep: Episode, actions: np.ndarray, env_info: dict) -> str:
        """Delta OSC_POSE actions (6 columns, a 7th for a gripper) to the canonical delta pose and
        gripper; the recorded array always under extra.actions."""
        arm = arm_control(env_info)
        width = actions.shape[1]
        ep.add("extra.actions", actions, description=f"as recorded: {width} columns of the robosuite "
                                                      f"controller {arm.type if arm else '(not in env_info)'}")
        if arm is None or arm.type != "OSC_POSE" or not arm.delta or width not in (6, 7):
            return arm.type.lower() if arm else "unknown"
        frame = "base" if arm.frame == "base" else "world"
        if arm.scale is None:
            pose, decl = actions[:, :6], dict(unit="normalized", description=(
                "robosuite OSC_POSE input as recorded (input/output ranges not in env_info: not scaled)"))
        else:
            pose, decl = arm.scaled(actions[:, :6]), dict(derived=True, description=(
                f"robosuite scale_action: clip to input_min {arm.config['input_min']} .. input_max "
                f"{arm.config['input_max']}, map onto output_min {arm.config['output_min']} .. output_max "
                f"{arm.config['output_max']}"))
        ep.add("action.eef_delta_pos", pose[:, :3], frame=frame, names=OSC_NAMES[:3], **decl)
        ep.add("action.eef_delta_rot", pose[:, 3:6], frame=frame, names=OSC_NAMES[3:], **decl)
        if width == 7:
            ep.add("action.gripper", gripper_command_closure(actions[:, 6:7]), derived=True,
                   description="robosuite gripper command -1 = open .. 1 = close, as (a + 1) / 2")
        return "eef_delta"

    def _demo_attrs(self, g) -> dict:
        out = {}
        for k, v in g.attrs.items():
            v = json_value(v)
            if k == "model_file" and isinstance(v, str) and v.lstrip().startswith("<") and not self.options.keep_model_xml:
                v = {"sha256": hashlib.sha256(v.encode()).hexdigest(), "chars": len(v)}
            out[k] = v
        return out
