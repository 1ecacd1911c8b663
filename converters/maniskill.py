"""``--source maniskill``: ManiSkill 3 trajectories, ``<name>.h5`` + the same-named ``<name>.json``
as ManiSkill's ``RecordEpisode`` writes them; one item per ``traj_N``: ``maniskill/<relpath>:traj_N``.

Layout: the json holds ``env_info`` (``env_id``, ``env_kwargs`` with ``obs_mode``, ``control_mode``,
``max_episode_steps``) and ``episodes[{episode_id, control_mode, elapsed_steps, success, reset_kwargs,
...}]``; the h5 ``traj_N/{actions (T, A), terminated, truncated, success?, fail?, rewards? (T,),
env_states, obs?}``. ``env_states`` and ``obs`` have T + 1 rows: the state after reset, then one per
action. ``env_states`` is one flat (T + 1, D) array in early ManiSkill 3 files and a group
``actors/<name>``, ``articulations/<name>`` in later ones; ``obs`` is absent for ``obs_mode`` none (the
demonstrations as downloaded), a flat array for ``state``, else ``agent/{qpos, qvel}``, ``extra/*``,
``sensor_data/<cam>/{rgb, depth, segmentation}``, ``sensor_param/<cam>/{intrinsic_cv, extrinsic_cv,
cam2world_gl}``.

Alignment: step t is (obs[t], env_states[t], actions[t]) for t < T: the observation each action was
taken from. The final observation obs[T] (after the last action) is **dropped from the steps**: its
non-image values go to ``metadata.final_obs`` (keyed by h5 path), its images are listed in
``metadata.final_obs_dropped``. Length is the action count, checked against the json
``elapsed_steps``; never the ``terminated`` / ``truncated`` flags (truncated may be true long before
the recording ends).

| source field                           | canonical                  | units / conventions |
|----------------------------------------|----------------------------|---------------------|
| obs/agent/qpos[:, :7] (Panda)          | state.joint_pos            | rad, arm joints |
| obs/agent/qpos[:, 7:9] (Panda fingers) | state.gripper              | closure 1 - (q7 + q8) / 0.08 m, clipped, derived |
| obs/agent/qvel[:, :7] (Panda)          | state.joint_vel            | rad/s |
| actions by control_mode (Panda)        | action.* (converters/maniskill_control.py) | scaled by the Panda's controller bounds, derived |
| actions as recorded                    | extra.actions              | (T, A) float32; the only action column for other robots / modes |
| obs/sensor_data/<cam>/rgb (T+1,H,W,3)  | camera ``wrist`` (hand_camera), else the camera's name | RGB uint8, upright (ManiSkill renders OpenCV-style, row 0 at the top) |
| obs/sensor_param/<cam>/intrinsic_cv    | Camera.intrinsics (3x3)    | when constant over the episode; always also extra.obs.sensor_param.<cam>.intrinsic_cv |
| obs/sensor_param/<cam>/extrinsic_cv    | Camera.extrinsics          | inverse of the 3x4 world->camera (OpenCV axes) = camera-to-**world** 4x4, (T, 4, 4) when it moves |
| obs/sensor_param/<cam>/cam2world_gl    | extra.obs.sensor_param.<cam>.cam2world_gl | camera-to-world, OpenGL axes (x right, y up, z back) |
| obs/sensor_data/<cam>/depth            | extra.obs.sensor_data.<cam>.depth | int16 mm, (H, W, 1) per step (``--option depth=false`` drops it) |
| every other obs/*, obs (state mode)    | extra.obs.<path with dots> | as recorded, rows 0..T-1 |
| env_states (flat) / env_states/<kind>/<name> | extra.env_states / extra.env_states.<kind>.<name> | as recorded, rows 0..T-1 (SAPIEN pose + velocities; articulations add qpos, qvel) |
| terminated, truncated, success, fail   | meta.terminated ...        | bool per step, as recorded |
| rewards                                | meta.reward                | float per step |
| json episode success (else success[-1]) | success                   | |
| env_info.env_id / --option task        | task                       | e.g. ``PickCube-v1``; no language |
| robot: env_kwargs robot_uids, else the articulation named in env_states, else --option robot | embodiment | |
| (none)                                 | timestamp                  | t / fps: ``--option fps``, else env_kwargs sim_config.control_freq, else ManiSkill's default 20 Hz |
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from converters.aloha import HDF5Frames
from converters.hdf5_io import find_h5, open_h5
from converters.maniskill_control import PANDA_ROBOTS, map_panda_actions, map_panda_state
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import Camera, Episode, camera_name
from wamdata.sources import Converter, SourceItem, check_read_size, register

DEFAULT_FPS = 20.0   # ManiSkill's SimConfig default control_freq
CAMERA_ROLES = {"hand_camera": "wrist"}
STEP_FLAGS = {"terminated": "meta.terminated", "truncated": "meta.truncated", "success": "meta.success",
              "fail": "meta.fail", "rewards": "meta.reward"}
_TRAJ_RE = re.compile(r"traj_(\d+)$")


@register("maniskill")
class ManiSkill(Converter):
    family = "sim"
    revision = 2   # 2: delta joint targets as action.joint_delta_pos (were extra.action_joint_delta_pos)

    @dataclass
    class Options:
        robot: str | None = None       # robot uid whose controller bounds scale actions (panda, panda_wristcam)
        fps: float | None = None       # default: env_kwargs sim_config.control_freq, else 20
        embodiment: str | None = None  # default: the robot uid
        task: str | None = None        # default: env_info env_id
        depth: bool = True             # keep depth images as extra per-step arrays

        def __post_init__(self):
            if self.fps is not None and not self.fps > 0:
                raise ConfigError(f"maniskill: option fps must be > 0, got {self.fps}")

    def discover(self, root: str) -> Iterator[SourceItem]:
        root, paths = find_h5(root)
        for path in paths:
            if path.endswith(".h5"):
                yield from self._file_items(path, os.path.relpath(path, root))

    def _file_items(self, path: str, rel: str) -> Iterator[SourceItem]:
        import h5py

        json_path = path[:-3] + ".json"
        try:
            with open(json_path, encoding="utf-8") as f:
                meta = json.load(f)
            episodes = {int(e["episode_id"]): (i, e) for i, e in enumerate(meta["episodes"])}
            env_info = meta.get("env_info") or {}
        except (OSError, ValueError, KeyError, TypeError) as e:
            reason = f"{json_path}: no readable ManiSkill json with 'episodes[].episode_id' ({type(e).__name__}: {e})"
            yield SourceItem(id=f"maniskill/{rel}", path=path, info={"relpath": rel, "error": reason})
            return
        try:
            with h5py.File(path, "r") as f:
                trajs = {int(m[1]) for k in f if (m := _TRAJ_RE.match(k))}
        except OSError as e:
            yield SourceItem(id=f"maniskill/{rel}", path=path,
                             info={"relpath": rel, "error": f"not a readable HDF5 file ({e})"})
            return
        for n in sorted(trajs | set(episodes)):
            index, episode = episodes.get(n, (None, None))
            yield SourceItem(id=f"maniskill/{rel}:traj_{n}", path=path, index=n,
                             info={"relpath": rel, "json": json_path, "traj": f"traj_{n}", "in_h5": n in trajs,
                                   "json_index": index, "episode": episode, "env_info": env_info})

    def read(self, item: SourceItem) -> Episode:
        info = item.info
        if "error" in info:
            raise SourceError(item, f"maniskill: {info['error']}")
        if info["episode"] is None:
            raise SourceError(item, f"maniskill: {info['traj']} has no entry in {info['json']} 'episodes' "
                                    f"(no episode_id {item.index})")
        if not info["in_h5"]:
            raise SourceError(item, f"maniskill: {info['json']} 'episodes[{info['json_index']}]' (episode_id "
                                    f"{item.index}) has no group {info['traj']} in the h5")
        import h5py

        with open_h5(item, "maniskill") as f:
            g = f.get(info["traj"])
            if not isinstance(g, h5py.Group):
                raise SourceError(item, f"maniskill: {info['traj']} is not a group of the h5 (found {type(g).__name__})")
            return self._read(item, g)

    def _read(self, item: SourceItem, g) -> Episode:
        import h5py

        key, episode, env_info = item.info["traj"], item.info["episode"], item.info["env_info"]
        datasets: dict[str, h5py.Dataset] = {}
        g.visititems(lambda name, obj: datasets.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
        if "actions" not in datasets:
            raise SourceError(item, f"maniskill: dataset {key}/actions missing"
                                    + (" (a dict action space: not supported)" if "actions" in g else ""))
        actions = self._array(item, key, "actions", datasets["actions"])
        T = len(actions)
        if actions.ndim != 2 or T == 0:
            raise SourceError(item, f"maniskill: {key}/actions has shape {actions.shape}, want (T, A) with T > 0")
        elapsed = episode.get("elapsed_steps")
        if elapsed is not None and int(elapsed) != T:
            raise SourceError(item, f"maniskill: {item.info['json']} 'episodes[{item.info['json_index']}]"
                                    f".elapsed_steps' is {elapsed} but {key}/actions has {T} rows")
        for name, ds in datasets.items():
            want = T + 1 if name.startswith(("obs", "env_states")) else T
            if ds.ndim == 0 or len(ds) != want:
                extra = " (T + 1: one observation more than actions)" if want == T + 1 else " (one per action)"
                raise SourceError(item, f"maniskill: {key}/{name} has shape {ds.shape}, want {want} rows{extra} "
                                        f"for the {T} rows of {key}/actions")
        kwargs = env_info.get("env_kwargs") or {}
        robot = self._robot(kwargs, datasets)
        fps, fps_source = self._fps(kwargs)
        ep = Episode(episode_id=item.id, source="maniskill", family=self.family,
                     embodiment=self.options.embodiment or robot or "unknown", fps=fps,
                     steps={"timestamp": np.arange(T, dtype=np.float64) / fps})
        mode = episode.get("control_mode") or kwargs.get("control_mode") or "unknown"
        ep.add("extra.actions", actions, description=f"{key}/actions as recorded, control mode {mode} "
                                                     "(normalised to [-1, 1] unless the controller says otherwise)")
        ep.action_space = (robot in PANDA_ROBOTS and map_panda_actions(ep, actions, mode)) or f"maniskill_{mode}"
        images = {n for n in datasets if n.startswith("obs/sensor_data/") and n.endswith("/rgb")}
        depth = set() if self.options.depth else {n for n in datasets if n.startswith("obs/sensor_data/")
                                                    and n.endswith("/depth")}
        arrays = {n: self._array(item, key, n, ds) for n, ds in sorted(datasets.items())
                  if n != "actions" and n not in images | depth}
        if robot in PANDA_ROBOTS and {"obs/agent/qpos", "obs/agent/qvel"} & set(arrays):
            qpos, qvel = arrays.get("obs/agent/qpos"), arrays.get("obs/agent/qvel")
            for name, v in (("obs/agent/qpos", qpos), ("obs/agent/qvel", qvel)):
                if v is not None and (v.ndim != 2 or v.shape[1] < 9):
                    raise SourceError(item, f"maniskill: {key}/{name} has shape {v.shape}, want (T + 1, 9) "
                                            f"for {robot}")
            map_panda_state(ep, None if qpos is None else qpos[:T].astype(np.float64),
                            None if qvel is None else qvel[:T].astype(np.float64), key)
        final = {}
        for name, values in arrays.items():
            if name in STEP_FLAGS:
                ep.add(STEP_FLAGS[name], values, description=f"{key}/{name} as recorded")
            elif name.startswith(("obs", "env_states")):
                final[name] = values[T].tolist()
                ep.add("extra." + name.replace("/", "."), values[:T], **self._declared(name))
            else:
                ep.add("extra." + name.replace("/", "."), values)
        self._cameras(item, ep, key, datasets, images, arrays, T)
        task = self.options.task or env_info.get("env_id")
        ep.tasks = [task] if task else []
        success = episode.get("success", arrays["success"][-1].tolist() if "success" in arrays else None)
        ep.success = None if success is None else bool(success)
        ep.metadata.update({
            "env_id": env_info.get("env_id"), "env_kwargs": kwargs, "control_mode": mode, "robot": robot,
            "fps_source": fps_source, "episode": episode, "final_obs": final,
            "final_obs_dropped": sorted(images), **({"depth_dropped": sorted(depth)} if depth else {}),
            "alignment": "step t = obs[t], env_states[t], actions[t]; obs[T] dropped (its values in final_obs)",
            "provenance": {"path": item.info["relpath"], "traj": key, "json": os.path.basename(item.info["json"])}})
        return ep

    @staticmethod
    def _array(item, key: str, name: str, ds) -> np.ndarray:
        check_read_size(item, f"{key}/{name}", ds.shape, ds.dtype)
        return np.asarray(ds[()])

    @staticmethod
    def _declared(name: str) -> dict:
        if name.endswith("/depth"):
            return {"unit": "mm", "frame": "camera", "description": "ManiSkill depth: int16 millimetres along +z"}
        if "/sensor_param/" in name:
            return {"frame": "world", "description": f"{name}: ManiSkill camera parameters per step"}
        return {}

    def _robot(self, kwargs: dict, datasets: dict) -> str | None:
        if self.options.robot:
            return self.options.robot
        uids = kwargs.get("robot_uids")
        if isinstance(uids, str):
            return uids
        names = {n.split("/")[2] for n in datasets if n.startswith("env_states/articulations/")}
        known = sorted(names & set(PANDA_ROBOTS))
        return known[0] if len(known) == 1 else None

    def _fps(self, kwargs: dict) -> tuple[float, str]:
        if self.options.fps is not None:
            return float(self.options.fps), "option"
        freq = (kwargs.get("sim_config") or {}).get("control_freq")
        if freq:
            return float(freq), "env_kwargs.sim_config.control_freq"
        return DEFAULT_FPS, "ManiSkill default control_freq (20 Hz)"

    def _cameras(self, item, ep, key, datasets, images, arrays, T) -> None:
        for name in sorted(n for n in images if n.endswith("/rgb")):
            cam = name.split("/")[2]
            ds = datasets[name]
            if ds.dtype != np.uint8 or ds.ndim != 4 or ds.shape[-1] != 3:
                raise SourceError(item, f"maniskill: {key}/{name} has shape {ds.shape} {ds.dtype}, "
                                        "want (T + 1, H, W, 3) uint8")
            role = CAMERA_ROLES.get(cam, camera_name(cam))
            frames = HDF5Frames(item.path, f"{key}/{name}", T, int(ds.shape[1]), int(ds.shape[2]), compressed=False)
            param = f"obs/sensor_param/{cam}"
            K, E = arrays.get(f"{param}/intrinsic_cv"), arrays.get(f"{param}/extrinsic_cv")
            for pname, v, shape in (("intrinsic_cv", K, (3, 3)), ("extrinsic_cv", E, (3, 4))):
                if v is not None and v.shape[1:] != shape:
                    raise SourceError(item, f"maniskill: {key}/{param}/{pname} has shape {v.shape}, "
                                            f"want (T + 1, {shape[0]}, {shape[1]})")
            extrinsics = None
            if E is not None:
                world_to_cam = np.zeros((T, 4, 4))
                world_to_cam[:, :3, :] = E[:T]
                world_to_cam[:, 3, 3] = 1.0
                cam_to_world = np.linalg.inv(world_to_cam)
                extrinsics = cam_to_world[0] if np.all(E[:T] == E[0]) else cam_to_world
            ep.cameras[role] = Camera(
                role, frames, fps=ep.fps,
                intrinsics=K[0].astype(np.float64) if K is not None and np.all(K[:T] == K[0]) else None,
                extrinsics=extrinsics, extrinsics_frame="world",
                metadata={"source_name": name, "intrinsics_per_step": f"extra.{param.replace('/', '.')}.intrinsic_cv",
                          "extrinsics": "camera-to-world (OpenCV axes), the inverse of sensor_param extrinsic_cv; "
                                        "ManiSkill's scene world frame, not the robot base"})
