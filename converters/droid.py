"""DROID raw (``droid_raw/1.0.1``) -> Episode. One episode folder is one SourceItem.

An episode is ``<lab>/<success|failure>/<YYYY-MM-DD>/<time>/`` holding ``trajectory.h5`` (one row per
15 Hz step, written by DROID's TrajectoryWriter), ``metadata_<uuid>.json`` (DROID's postprocessing
record) and ``recordings/MP4/<serial>.mp4`` (left eye, MPEG-4 part 2; the writer transcodes it).

| source field                                   | feature / place                | units, convention                   |
|------------------------------------------------|--------------------------------|-------------------------------------|
| observation/robot_state/cartesian_position[:3] | state.eef_pos                  | m, robot base frame                 |
| observation/robot_state/cartesian_position[3:] | state.eef_rot                  | Euler "xyz" (extrinsic, scipy) rad -> quaternion xyzw |
| observation/robot_state/gripper_position       | state.gripper                  | 1 = closed already (1 - width/max)  |
| observation/robot_state/joint_positions        | state.joint_pos                | rad                                 |
| observation/robot_state/joint_velocities       | state.joint_vel                | rad/s                               |
| action/cartesian_position                      | action.eef_pos, action.eef_rot | absolute target, as the state       |
| action/gripper_position                        | action.gripper                 | 1 = closed                          |
| action/joint_position                          | action.joint_pos               | rad, absolute target                |
| action/joint_velocity                          | action.joint_vel (derived)     | normalised [-1, 1] x 0.2 rad/step x 15 Hz -> rad/s |
|                                                | extra.action.joint_velocity    | the raw normalised command          |
| action/gripper_velocity, or action/gripper_delta (a velocity despite its name, some DROID versions) | extra.action.gripper_velocity | normalised |
| observation/timestamp/robot_state/robot_timestamp_seconds + _nanos | timestamp | s from the first step, float64 (robot clock) |
| every other per-step h5 dataset <observation/>a/b/c | extra.a.b.c                | as recorded (torques Nm, clocks ms, controller_info bools, action/robot_state copy ...) |
| .../<serial>_<suffix> of a camera              | extra.<...>.<role>_<suffix>    | serial replaced by the camera role  |
| metadata wrist/ext1/ext2_cam_serial            | cameras wrist, exterior_1, exterior_2 | recordings/MP4/<serial>.mp4; <serial>-stereo.mp4 is not a camera |
| observation/camera_extrinsics/<serial>_left    | Camera.extrinsics              | [x y z, Euler xyz] -> 4x4 camera-to-base; (T,4,4) when it moves (wrist); metadata *_cam_extrinsics if the h5 lacks it |
| observation/camera_intrinsics/<serial>_left    | Camera.intrinsics              | 3x3 of the first step (full-resolution ZED left eye) |
| current_task (metadata, else h5 attr)          | tasks                          | or language_instruction1..3 from ``--option annotations=aggregated-annotations-030724.json`` (keyed by uuid) |
| metadata success, else h5 attr, else folder    | success                        |                                     |
| uuid lab user user_id building scene_id date timestamp robot_serial droid_version | metadata | raw metadata json and h5 attrs under metadata["droid"] |
| (derived)                                      | extra.idle                     | True on runs of >= 7 steps whose action/joint_velocity changes all stay < 1e-3; for curation, nothing is dropped |

Serials found in the h5 but not named in the metadata are stale (a camera swapped out): they are no
camera, their per-step columns are dropped and their serials listed in ``metadata["stale_camera_serials"]``.
When an MP4 holds fewer frames than the h5 has rows (DROID often loses the last frame), steps and the
other cameras are trimmed to the common length and ``metadata["trimmed_steps"]`` says by how many.

The input may be an fsspec URL (``gs://gresearch/robotics/droid_raw/1.0.1``, ``s3://...``): each
task then copies the files it reads of its episode — the metadata json, trajectory.h5 and the
cameras' left-eye MP4s, never the SVO or stereo recordings — to a temporary folder, removed once the
episode's frames are dropped, since h5py and the video decoder want seekable local files.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
from dataclasses import dataclass

import numpy as np

from converters.rotations import euler_xyz_to_quat, pose6_to_matrix
from wamdata.errors import ConfigError, WamdataError
from wamdata.media import VideoFileFrames
from wamdata.schema import TIMESTAMP, Camera, Episode
from wamdata.sources import (Converter, SourceError, SourceItem, check_read_size, is_local, json_value, register, source_fs,
                             url_of)

FPS = 15.0
MAX_JOINT_DELTA = 0.2  # rad per step at |command| = 1 (droid/robot_ik/robot_ik_solver.py)
IDLE_THRESHOLD, IDLE_MIN_STEPS = 1e-3, 7
CAMERA_ROLES = {"wrist": "wrist", "ext1": "exterior_1", "ext2": "exterior_2"}  # metadata prefix -> role
XYZ, QUAT = ("x", "y", "z"), ("qx", "qy", "qz", "qw")
JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8))
STATE, ACTION = "observation/robot_state/", "action/"
MAPPED = {STATE + "cartesian_position", STATE + "gripper_position", STATE + "joint_positions",
          STATE + "joint_velocities", ACTION + "cartesian_position", ACTION + "gripper_position",
          ACTION + "joint_position"}
CLOCK = "observation/timestamp/robot_state/robot_timestamp_"
UNITS = {"joint_torques_computed": "Nm", "prev_joint_torques_computed": "Nm", "motor_torques_measured": "Nm",
         "prev_joint_torques_computed_safened": "Nm", "prev_controller_latency_ms": "ms",
         "cartesian_velocity": "normalized", "gripper_velocity": "normalized", "joint_velocity": "normalized"}


def _unit(parts: list[str]) -> str | None:
    """Unit of an extra column. DROID stamps its own clocks (control loop, robot state reads, camera
    reads and captures: timestamp/<control|robot_state|cameras>/...) with ``time_ms()``, milliseconds
    since the epoch; only the robot's clock is split into seconds and nanoseconds. Other columns of
    the timestamp group (the boolean ``skip_action``) have none."""
    if parts[0] == "timestamp":
        if len(parts) < 3 or parts[1] not in ("control", "robot_state", "cameras"):
            return None
        return {"robot_timestamp_seconds": "s", "robot_timestamp_nanos": "ns"}.get(parts[-1], "ms")
    return UNITS.get(parts[-1])


def _is_episode_folder(filenames) -> bool:
    return "trajectory.h5" in filenames or any(_is_metadata(f) for f in filenames)


def _episode_folders(root: str):
    """(filesystem, root path, the episode folders under it). Locally a walk that does not enter an
    episode's recordings/; in an object store one recursive listing (a listing call per folder would
    be ~10^5 sequential requests for DROID raw). A folder that cannot be listed is an error, never a
    silently missing subtree."""
    fs, base = source_fs(root)
    if is_local(fs):
        folders = []
        for dirpath, dirnames, filenames in fs.walk(base, topdown=True, on_error="raise"):
            if _is_episode_folder(filenames):
                dirnames[:] = []  # an episode folder: do not walk into recordings/
                folders.append(dirpath)
        return fs, base, folders
    found = [p for p in fs.find(base) if _is_episode_folder([posixpath.basename(p)])]
    return fs, base, sorted({posixpath.dirname(p) for p in found})


def idle_mask(velocity, threshold: float = IDLE_THRESHOLD, min_steps: int = IDLE_MIN_STEPS) -> np.ndarray:
    """True on maximal runs of >= min_steps steps whose consecutive velocity changes all stay < threshold."""
    v = np.asarray(velocity, np.float64).reshape(len(velocity), -1)
    still = np.all(np.abs(np.diff(v, axis=0)) < threshold, axis=1)  # still[i]: step i -> i+1
    out = np.zeros(len(v), bool)
    i = 0
    while i < len(still):
        if not still[i]:
            i += 1
            continue
        j = i
        while j < len(still) and still[j]:
            j += 1
        if j - i + 1 >= min_steps:  # changes i..j-1 cover steps i..j
            out[i:j + 1] = True
        i = j
    return out


def _is_metadata(name: str) -> bool:
    return name.startswith("metadata_") and name.endswith(".json")


@register("droid")
class DroidRaw(Converter):
    family = "teleop"
    revision = 3   # 2: units for the extra.timestamp.* clocks; 3: cameras record extrinsics_frame

    @dataclass
    class Options:
        annotations: str | None = None  # DROID's aggregated-annotations-*.json: uuid -> language_instruction1..3
        max_trim: int = 3  # most steps an episode may lose to short videos before it is a SourceError

        def __post_init__(self):
            if self.annotations is not None and not os.path.isfile(self.annotations):
                raise ConfigError(f"droid: option annotations={self.annotations}: no such file")
            if self.max_trim < 0:
                raise ConfigError(f"droid: option max_trim must be >= 0, got {self.max_trim}")

    def __init__(self, **options):
        super().__init__(**options)
        self._annotations: dict | None = None

    def discover(self, root: str):
        items = []
        fs, base, folders = _episode_folders(root)
        for folder in folders:
            rel = posixpath.relpath(folder, base)
            rel = posixpath.basename(base) if rel == "." else rel
            items.append(SourceItem(id=f"droid/{rel}", path=url_of(fs, folder)))
        return iter(sorted(items, key=lambda it: it.id))

    def read(self, item: SourceItem) -> Episode:
        folder, mp4_names, staging = self._local_folder(item)
        try:
            return self._read_folder(item, folder, mp4_names, staging)
        except Exception as e:
            if staging is None:
                raise
            staging.cleanup()   # now: the traceback would keep the copy alive as long as the error
            if not isinstance(e, SourceError):
                raise
            # name the source, not the temporary copy
            raise SourceError(item, e.reason.replace(staging.name, item.path)) from None

    def _read_folder(self, item: SourceItem, folder: str, mp4_names: set[str], staging) -> Episode:
        meta = self._metadata(item, folder)
        attrs, data = self._read_h5(item, folder)
        for key in sorted(MAPPED | {ACTION + "joint_velocity"}):
            if key not in data:
                raise SourceError(item, f"trajectory.h5: missing dataset {key!r}")
        lengths = {len(v) for v in data.values()}
        h5_steps = min(lengths)
        serials, stale = self._camera_serials(meta, data)
        frames = self._videos(item, folder, serials)
        for f in frames.values():
            f.keepalive = staging
        T = min([h5_steps] + [f.num_frames for f in frames.values()])
        if h5_steps - T > self.options.max_trim:
            short = min(frames, key=lambda r: frames[r].num_frames)
            rel = os.path.relpath(frames[short].path, folder)
            raise SourceError(item, f"{rel}: {frames[short].num_frames} frames for {h5_steps} steps; more than "
                                    f"max_trim={self.options.max_trim} steps would be lost")
        if T == 0:
            raise SourceError(item, "trajectory.h5: the episode has no steps")
        for f in frames.values():
            f.limit = T
        d = {k: v[:T] for k, v in data.items()}

        outcome = next((p for p in item.id.split("/") if p in ("success", "failure")), None)
        # the first that is recorded: DROID's postprocessing writes "success": null when the h5 has no attr
        success = next((v for v in (meta.get("success"), attrs.get("success")) if v is not None),
                       None if outcome is None else outcome == "success")
        ep = Episode(episode_id=item.id, source="droid", family=self.family, embodiment="franka_panda", fps=FPS,
                     steps={TIMESTAMP: self._timestamps(d, T)}, success=None if success is None else bool(success),
                     action_space="eef_abs+joint")
        if not np.all(np.diff(ep.steps[TIMESTAMP]) > 0):  # no robot clock, or it stalled
            ep.steps[TIMESTAMP] = np.arange(T) / FPS
            ep.metadata["timestamp_source"] = "step index / 15 Hz (robot clock missing or not increasing)"
        ep.metadata.update(self._episode_metadata(item, meta, attrs, outcome))
        ep.metadata.update(camera_serials=serials, stale_camera_serials=stale, trimmed_steps=h5_steps - T,
                           h5_steps=h5_steps, droid={"metadata_json": meta, "h5_attrs": attrs})
        if len(lengths) > 1:
            ep.metadata["h5_ragged_rows"] = max(lengths) - h5_steps

        self._add_steps(ep, d)
        for role, serial in serials.items():
            ep.cameras[role] = self._camera(role, serial, frames[role], d, meta,
                                            stereo=f"{serial}-stereo.mp4" in mp4_names)
        self._add_extras(ep, d, serials, stale)
        ep.tasks = self._tasks(meta, attrs)
        return ep

    # --- pieces of read() -------------------------------------------------------------------------

    def _local_folder(self, item) -> tuple[str, set[str], object]:
        """(the episode folder on this machine, names in its recordings/MP4, a staging folder to
        keep alive while the frames are read, or None). A remote folder is copied in part: the
        metadata json, trajectory.h5 and the left-eye MP4s (SVO and stereo recordings are large and
        unused); ``fs.get`` errors name the file."""
        fs, path = source_fs(item.path)
        mp4_dir = posixpath.join(path, "recordings", "MP4")
        staging = None
        try:
            mp4_names = {posixpath.basename(p) for p in fs.ls(mp4_dir, detail=False)} if fs.isdir(mp4_dir) else set()
            if is_local(fs):
                return path, mp4_names, None
            staging = tempfile.TemporaryDirectory(prefix="wamdata-droid-")
            for p in fs.ls(path, detail=False):
                name = posixpath.basename(p.rstrip("/"))
                if name == "trajectory.h5" or _is_metadata(name):
                    fs.get(p, os.path.join(staging.name, name))
            if fs.isdir(posixpath.join(path, "recordings")):
                os.makedirs(os.path.join(staging.name, "recordings", "MP4"))
            for name in sorted(mp4_names):
                if name.endswith(".mp4") and not name.endswith("-stereo.mp4"):
                    fs.get(posixpath.join(mp4_dir, name), os.path.join(staging.name, "recordings", "MP4", name))
        except OSError as e:
            if staging is not None:
                staging.cleanup()
            raise SourceError(item, f"cannot copy the episode folder from {item.path} ({e})") from None
        return staging.name, mp4_names, staging

    def _metadata(self, item, folder: str) -> dict:
        names = sorted(f for f in os.listdir(folder) if _is_metadata(f))
        if not names:
            return {}
        path = os.path.join(folder, names[0])
        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError) as e:
            raise SourceError(item, f"{names[0]}: unreadable metadata json ({e})") from None

    def _read_h5(self, item, folder: str):
        import h5py

        path = os.path.join(folder, "trajectory.h5")
        if not os.path.isfile(path):
            raise SourceError(item, "trajectory.h5: missing")
        data = {}

        def load(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.ndim >= 1:
                check_read_size(item, f"trajectory.h5:/{name}", obj.shape, obj.dtype)
                data[name] = obj[()]

        try:
            with h5py.File(path, "r") as f:
                attrs = {k: json_value(v) for k, v in f.attrs.items()}
                f.visititems(load)
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise SourceError(item, f"trajectory.h5: truncated or unreadable HDF5 file ({e})") from None
        if not data:
            raise SourceError(item, "trajectory.h5: no per-step datasets (an incomplete recording)")
        return attrs, data

    def _camera_serials(self, meta, data):
        serials = {role: str(meta[f"{p}_cam_serial"])
                   for p, role in CAMERA_ROLES.items() if meta.get(f"{p}_cam_serial")}
        types = {k.rsplit("/", 1)[1]: v for k, v in data.items() if k.startswith("observation/camera_type/")}
        if not serials:  # no metadata json: wrist = camera_type 0, exteriors by sorted serial (as DROID does)
            ext = ["exterior_1", "exterior_2"]
            for s in sorted(types):
                role = "wrist" if int(types[s][0]) == 0 else (ext.pop(0) if ext else None)
                if role and role not in serials:
                    serials[role] = s
        in_h5 = set(types) | {k.rsplit("/", 1)[1].split("_")[0] for k in data
                              if k.startswith(("observation/camera_extrinsics/", "observation/camera_intrinsics/"))}
        return serials, sorted(in_h5 - set(serials.values()))

    def _videos(self, item, folder: str, serials) -> dict:
        mp4_dir = os.path.join(folder, "recordings", "MP4")
        if not os.path.isdir(os.path.join(folder, "recordings")):
            cams = ", ".join(f"{r}={s}" for r, s in serials.items())
            raise SourceError(item, f"no recordings/ folder in the episode folder (expected recordings/MP4/<serial>.mp4 "
                                    f"for {cams})")
        frames = {}
        for role, serial in serials.items():
            path = os.path.join(mp4_dir, f"{serial}.mp4")
            if not os.path.isfile(path):
                raise SourceError(item, f"recordings/MP4/{serial}.mp4: missing video of camera {role}")
            frames[role] = VideoFileFrames(path)
            try:
                frames[role].num_frames  # probe now: an unreadable file is this item's error
            except WamdataError as e:
                raise SourceError(item, f"recordings/MP4/{serial}.mp4: unreadable video ({e})") from None
        return frames

    def _timestamps(self, d, T) -> np.ndarray:
        sec, nanos = d.get(CLOCK + "seconds"), d.get(CLOCK + "nanos")
        if sec is None or nanos is None:
            return np.zeros(T)  # not increasing: read() falls back to the step index
        ns = sec.astype(np.int64) * 1_000_000_000 + nanos.astype(np.int64)
        return (ns - ns[0]) / 1e9

    def _add_steps(self, ep: Episode, d) -> None:
        for prefix, key in (("state", STATE + "cartesian_position"), ("action", ACTION + "cartesian_position")):
            ep.add(f"{prefix}.eef_pos", d[key][:, :3], names=XYZ)
            ep.add(f"{prefix}.eef_rot", euler_xyz_to_quat(d[key][:, 3:6]), names=QUAT,
                   description=f"from {key}[3:6], Euler xyz (extrinsic) rad")
        ep.add("state.gripper", d[STATE + "gripper_position"])
        ep.add("action.gripper", d[ACTION + "gripper_position"])
        ep.add("state.joint_pos", d[STATE + "joint_positions"], names=JOINTS)
        ep.add("state.joint_vel", d[STATE + "joint_velocities"], names=JOINTS)
        ep.add("action.joint_pos", d[ACTION + "joint_position"], names=JOINTS)
        ep.add("action.joint_vel", d[ACTION + "joint_velocity"] * (MAX_JOINT_DELTA * FPS), names=JOINTS, derived=True,
               description="action/joint_velocity (normalised) x 0.2 rad/step x 15 Hz")

    def _camera(self, role, serial, frames, d, meta, stereo: bool) -> Camera:
        ext = d.get(f"observation/camera_extrinsics/{serial}_left")
        prefix = next(p for p, r in CAMERA_ROLES.items() if r == role)
        extrinsics, source = None, None
        if ext is not None:
            extrinsics, source = pose6_to_matrix(ext[0] if np.all(ext == ext[0]) else ext), "h5"
        elif meta.get(f"{prefix}_cam_extrinsics") is not None:
            extrinsics, source = pose6_to_matrix(meta[f"{prefix}_cam_extrinsics"]), "metadata"
        K = d.get(f"observation/camera_intrinsics/{serial}_left")
        return Camera(name=role, frames=frames, fps=FPS, extrinsics=extrinsics, extrinsics_frame="base",
                      intrinsics=None if K is None else np.asarray(K[0], np.float64),
                      metadata={"serial": serial, "source_frames": frames.info["frames"], "eye": "left",
                                "extrinsics_source": source, "stereo_file_present": stereo})

    def _add_extras(self, ep: Episode, d, serials, stale) -> None:
        role_of = {s: r for r, s in serials.items()}
        for key in sorted(d):
            values = d[key]
            if key in MAPPED:
                continue
            parts = key.split("/")
            if parts[0] == "observation":
                parts = parts[1:]
            if parts[0] == "camera_type":
                continue  # constant per camera; the roles say it
            head, _, suffix = parts[-1].partition("_")
            if head in stale:
                continue
            if head in role_of:
                parts[-1] = role_of[head] + ("_" + suffix if suffix else "")
            if parts == ["action", "gripper_delta"]:  # DROID quirk: holds the gripper velocity
                parts = ["action", "gripper_velocity"]
                ep.metadata["gripper_velocity_source"] = "action/gripper_delta"
            if values.dtype.kind not in "biuf":
                ep.metadata.setdefault("unmapped_h5_datasets", []).append(key)
                continue
            # the declaration must not depend on the episode (serials, quirks): the writer merges them
            where = "action/gripper_velocity or gripper_delta" if parts[-1] == "gripper_velocity" else "/".join(parts)
            ep.add("extra." + ".".join(parts), values, unit=_unit(parts), description=f"h5 {where}")
        ep.add("extra.idle", idle_mask(d[ACTION + "joint_velocity"]), derived=True,
               description=f"action/joint_velocity changes < {IDLE_THRESHOLD} for >= {IDLE_MIN_STEPS} steps")

    def _tasks(self, meta, attrs) -> list[str]:
        task = meta.get("current_task") or attrs.get("current_task") or ""
        tasks = []
        if self.options.annotations:
            entry = self._load_annotations().get(meta.get("uuid", ""), {})
            for k in (1, 2, 3):
                text = (entry.get(f"language_instruction{k}") or "").strip()
                if text and text not in tasks:
                    tasks.append(text)
        return tasks or ([task] if task else [])

    def _load_annotations(self) -> dict:
        if self._annotations is None:
            try:
                with open(self.options.annotations, encoding="utf-8") as fh:
                    self._annotations = json.load(fh)
            except (OSError, ValueError) as e:
                raise SourceError(self.options.annotations, f"unreadable annotations json ({e})") from None
        return self._annotations

    def _episode_metadata(self, item, meta, attrs, outcome) -> dict:
        """Metadata json fields, else the h5 attrs (DROID's data collector), else the folder names."""
        parts = item.id.split("/")[1:]
        at = parts.index(outcome) if outcome in parts else None
        path = {"lab": parts[at - 1] if at else None,
                "date": parts[at + 1] if at is not None and at + 1 < len(parts) else None}
        out = {"outcome_folder": outcome, "source_path": "/".join(parts), "recorded_time": attrs.get("time")}
        for key, attr in (("uuid", None), ("lab", None), ("date", None), ("user", "user"), ("user_id", None),
                          ("timestamp", None), ("building", "building"), ("scene_id", "scene_id"),
                          ("robot_serial", "robot_serial_number"), ("droid_version", "version_number"),
                          ("controller_type", "controller_type"), ("current_task", "current_task"),
                          ("trajectory_length", "timesteps")):
            value = meta.get(key)
            out[key] = value if value is not None else attrs.get(attr) if attr else path.get(key)
        return out
