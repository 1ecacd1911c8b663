"""``--source aloha``: ALOHA-style bimanual HDF5 episodes (one ``episode_N.hdf5`` per episode).

The layout written by ALOHA's ``record_episodes.py`` / ACT's ``record_sim_episodes.py`` and read by
LeRobot's aloha tooling: ``/observations/{qpos,qvel,effort}`` (T, 14), ``/action`` (T, 14),
``/observations/images/<cam>`` either raw uint8 (T, H, W, 3) or JPEG rows zero-padded to a common
width (T, padded) with ``/compress_len`` (num_cams, T); file attrs ``sim`` and ``compress``.

| source field                     | canonical              | units / conventions |
|----------------------------------|------------------------|---------------------|
| /observations/qpos (T, 14)       | state.joint_pos (T, 12) | rad; the 12 arm joints, names left_waist .. left_wrist_rotate, right_waist .. right_wrist_rotate |
| qpos[:, 6], qpos[:, 13]          | state.gripper (T, 2)   | left, right; ALOHA normalises gripper positions to 0 = closed .. 1 = open (ACT's ``PUPPET_GRIPPER_POSITION_NORMALIZE_FN``), so closure = 1 - x, clipped to [0, 1] |
| /observations/qvel (T, 14)       | state.joint_vel (T, 12) | rad/s, the arm joints (gripper entries are normalised velocities: only in extra.qvel) |
| /action (T, 14)                  | action.joint_pos (T, 12), action.gripper (T, 2) | commanded positions of the leader arms, split and converted as qpos |
| qpos, qvel, action as recorded   | extra.qpos, extra.qvel, extra.action | (T, 14), raw, for anyone who needs ALOHA's own convention |
| /observations/effort (T, 14)     | extra.effort           | motor effort as recorded (unitless Dynamixel current) |
| /base_action (T, 2) (mobile)     | extra.base_action      | as recorded |
| /compress_len (num_cams, T)      | extra.compress_len     | transposed to (T, num_cams); JPEG byte length per camera |
| any other dataset                | extra.<path>           | as recorded |
| /observations/images/cam_high    | camera ``exterior_1``  | |
| /observations/images/top (sim)   | camera ``exterior_1``  | |
| /observations/images/cam_low     | camera ``low``         | |
| /observations/images/cam_left_wrist  | camera ``wrist_left``  | |
| /observations/images/cam_right_wrist | camera ``wrist_right`` | |
| /observations/images/<other>     | camera ``<other>``     | made safe for a member name (``schema.camera_name``) |
| attr ``sim``                     | family ``sim`` / ``teleop`` | all attrs kept in ``metadata.attrs`` |
| (none)                           | timestamp              | i / fps, fps = 50 (ALOHA's DT = 0.02 s) unless ``--option fps`` |

Frames: raw images are stored RGB (ALOHA writes the camera arrays as received). Compressed rows were
JPEG-encoded by ``cv2.imencode`` from those same RGB arrays, so ``cv2.imdecode`` returns RGB as is
(``jpeg_channels=as_stored``, the default); ``jpeg_channels=bgr`` swaps channels for recordings whose
encoder was handed BGR (recorded as the ``bgr_to_rgb`` transform). The padding after the JPEG/PNG end
marker is ignored by the decoder; the JPEG length is checked against ``compress_len`` when present.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from converters.hdf5_io import open_h5
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import Camera, Episode, camera_name
from wamdata.sources import Converter, SourceItem, check_read_size, json_value, register

ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
JOINT_NAMES = tuple(f"{side}_{j}" for side in ("left", "right") for j in ARM_JOINTS)   # ALOHA's 14 columns
GRIPPERS = (6, 13)
ARMS = tuple(i for i in range(len(JOINT_NAMES)) if i not in GRIPPERS)
CAMERA_ROLES = {"cam_high": "exterior_1", "top": "exterior_1", "cam_low": "low",
                "cam_left_wrist": "wrist_left", "cam_right_wrist": "wrist_right"}
RAW_NAMES = {"state.joint_pos": "extra.qpos", "state.joint_vel": "extra.qvel", "action.joint_pos": "extra.action"}
RAW_NOTE = "as recorded: 14 columns, *_gripper entries normalised 0 = closed .. 1 = open (not rad)"
_EPISODE_RE = re.compile(r"episode_(\d+)\.(hdf5|h5)$")


@dataclass
class HDF5Frames:
    """Frames of one camera dataset, read in chunks from the HDF5 file when iterated (picklable)."""

    path: str
    key: str
    num_frames: int
    height: int
    width: int
    compressed: bool
    swap_bgr: bool = False
    chunk: int = 16
    video_path: str | None = None
    codec: str | None = None

    def iter_frames(self) -> Iterator[np.ndarray]:
        import h5py

        with h5py.File(self.path, "r") as f:
            ds = f[self.key]
            for start in range(0, self.num_frames, self.chunk):
                for row in ds[start:min(start + self.chunk, self.num_frames)]:
                    yield _decode_row(row, self.swap_bgr) if self.compressed else row


def _decode_row(row: np.ndarray, swap_bgr: bool) -> np.ndarray:
    import cv2

    img = cv2.imdecode(np.ascontiguousarray(row, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"undecodable compressed image row ({len(row)} bytes)")
    return img[..., ::-1].copy() if swap_bgr else img


@register("aloha")
class Aloha(Converter):
    family = "teleop"

    @dataclass
    class Options:
        fps: float = 50.0
        embodiment: str = "aloha"
        task: str | None = None  # task text for every episode (ALOHA files carry none)
        jpeg_channels: str = "as_stored"  # as_stored | bgr

        def __post_init__(self):
            if not self.fps > 0:
                raise ConfigError(f"aloha: option fps must be > 0, got {self.fps}")
            if self.jpeg_channels not in ("as_stored", "bgr"):
                raise ConfigError(f"aloha: option jpeg_channels is as_stored or bgr, got {self.jpeg_channels!r}")

    def discover(self, root: str) -> Iterator[SourceItem]:
        if os.path.isfile(root):
            paths = [root]
            root = os.path.dirname(root)
        else:
            paths = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if _EPISODE_RE.search(n)]
        def key(p):
            m = _EPISODE_RE.search(p)
            return (os.path.dirname(p), int(m[1]) if m else -1, p)
        for p in sorted(paths, key=key):
            rel = os.path.relpath(p, root)
            yield SourceItem(id="aloha_" + re.sub(r"[^A-Za-z0-9_-]+", "_", os.path.splitext(rel)[0]), path=p,
                             info={"relpath": rel})

    def read(self, item: SourceItem) -> Episode:
        if self.options.jpeg_channels not in ("as_stored", "bgr"):
            raise SourceError(item, f"aloha: jpeg_channels={self.options.jpeg_channels!r}; known: as_stored, bgr")
        with open_h5(item, "aloha") as f:
            try:
                return self._read(item, f)
            except KeyError as e:
                raise SourceError(item, f"aloha: missing dataset {e}; episode skipped") from None

    def _read(self, item: SourceItem, f) -> Episode:
        import h5py

        check_read_size(item, "/observations/qpos", f["/observations/qpos"].shape, f["/observations/qpos"].dtype)
        qpos = np.asarray(f["/observations/qpos"][()])
        T = len(qpos)
        if T == 0:
            raise SourceError(item, "aloha: /observations/qpos has no steps")
        attrs = {k: json_value(v) for k, v in f.attrs.items()}
        fps = float(self.options.fps)
        ep = Episode(episode_id=item.id, source="aloha", family="sim" if attrs.get("sim") else "teleop",
                     embodiment=self.options.embodiment, fps=fps,
                     steps={"timestamp": np.arange(T, dtype=np.float64) / fps})
        mapped = {"/observations/qpos": "state.joint_pos", "/observations/qvel": "state.joint_vel",
                  "/action": "action.joint_pos"}
        datasets: dict[str, h5py.Dataset] = {}

        def collect(name, obj):  # visititems stops at the first non-None return
            if isinstance(obj, h5py.Dataset):
                datasets["/" + name] = obj

        f.visititems(collect)
        image_keys = sorted(k for k in datasets if k.startswith("/observations/images/"))
        for key in sorted(datasets):
            if key in image_keys:
                continue
            check_read_size(item, key, datasets[key].shape, datasets[key].dtype)
            values = np.asarray(datasets[key][()])
            if key == "/compress_len":
                values = values.T
            if values.ndim == 0 or len(values) != T:
                ep.metadata.setdefault("unconverted", {})[key] = f"shape {values.shape} is not per step (T={T})"
                continue
            name = mapped.get(key)
            if name is not None:
                self._joints(ep, name, values)
            else:
                short = key[len("/observations/"):] if key.startswith("/observations/") else key[1:]
                ep.add("extra." + short.replace("/", "."), values)
        if "action.joint_pos" in ep.steps:
            ep.action_space = "joint_pos"
        compress_len = np.asarray(f["/compress_len"][()]) if "/compress_len" in datasets else None
        for key in image_keys:
            self._camera(ep, item, datasets[key], key, T, compress_len)
        ep.tasks = [self.options.task] if self.options.task else []
        ep.metadata.update({"attrs": attrs, "provenance": {"path": item.info.get("relpath", item.path)},
                            "task_folder": os.path.basename(os.path.dirname(item.path))})
        return ep

    @staticmethod
    def _joints(ep: Episode, name: str, values: np.ndarray) -> None:
        """ALOHA's 14 columns: arm joints to ``*.joint_pos``/``joint_vel`` (rad), the two normalised
        gripper positions to ``*.gripper`` as closure (1 - x); the raw array to ``extra.``. Another
        width (not ALOHA's two 6-DoF arms) has no known gripper columns: kept raw only."""
        values = values.astype(np.float64) if not np.issubdtype(values.dtype, np.floating) else values
        raw = RAW_NAMES[name]
        if values.ndim != 2 or values.shape[1] != len(JOINT_NAMES):
            ep.add(raw, values)
            ep.metadata.setdefault("unconverted", {})[raw] = f"{values.shape[1:]} columns, not ALOHA's 14"
            return
        ep.add(raw, values, names=JOINT_NAMES, description=RAW_NOTE)
        ep.add(name, values[:, ARMS], names=tuple(JOINT_NAMES[i] for i in ARMS))
        if name.endswith("joint_pos"):
            # ALOHA's normalisation can overshoot [0, 1] a little on real grippers; closure is clipped
            ep.add(name.split(".")[0] + ".gripper", np.clip(1.0 - values[:, GRIPPERS], 0.0, 1.0),
                   names=("left", "right"))

    def _camera(self, ep: Episode, item: SourceItem, ds, key: str, T: int, compress_len) -> None:
        src = key.rsplit("/", 1)[-1]
        role = CAMERA_ROLES.get(src, camera_name(src))
        if role in ep.cameras:
            role = camera_name(src)
        if len(ds) != T:
            raise SourceError(item, f"aloha: {key} has {len(ds)} frames for {T} steps")
        compressed = ds.ndim == 2
        swap = compressed and self.options.jpeg_channels == "bgr"
        if compressed:
            first_row = np.asarray(ds[0])
            first = _decode_row(first_row, swap)
            if compress_len is not None:  # the end marker must sit where compress_len says
                n = int(np.trim_zeros(first_row, "b").size)
                if n not in {int(c) for c in np.asarray(compress_len)[:, 0]}:
                    raise SourceError(item, f"aloha: {key}: frame 0 is {n} bytes, not a length in /compress_len")
            h, w = first.shape[:2]
        elif ds.ndim == 4 and ds.shape[-1] == 3:
            h, w = ds.shape[1:3]
        else:
            ep.metadata.setdefault("unconverted", {})[key] = f"image dataset of shape {ds.shape} is not RGB"
            return
        frames = HDF5Frames(item.path, key, T, int(h), int(w), compressed, swap)
        ep.cameras[role] = Camera(role, frames, fps=ep.fps, transforms=["bgr_to_rgb"] if swap else [],
                                  metadata={"source_name": src, "compressed": compressed})
