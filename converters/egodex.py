"""``--source egodex``: Apple's EgoDex (2025) — egocentric Vision Pro recordings of both hands.

One episode is ``<task>/<i>.hdf5`` + ``<task>/<i>.mp4`` (1920x1080, 30 Hz, frame i = pose row i). The
HDF5 holds ``transforms/<joint>`` (T, 4, 4) float32 SE(3) poses in the ARKit origin frame (a
stationary frame set when the session starts) for ``camera`` and 68 ARKit joints (upper body:
hip, spine1-7, neck1-4, {left,right}{Shoulder,Arm,Forearm,Hand}; per hand 24 finger joints:
Thumb{Knuckle,IntermediateBase,IntermediateTip,Tip} and {Index,Middle,Ring,Little}Finger{Metacarpal,
Knuckle,IntermediateBase,IntermediateTip,Tip}; ``leftHand``/``rightHand`` are the wrists),
``confidences/<joint>`` (T,) in [0, 1] (optional: older files have none), ``camera/intrinsic`` (3, 3)
and file attrs (``llm_description``, ``llm_description2``, ``which_llm_description``, ``llm_type``,
``task``, ``environment``, ``object``, ``session_name``, ``llm_verbs``, ``llm_objects``, ...).

| source field                        | canonical                  | units / conventions |
|-------------------------------------|----------------------------|---------------------|
| inv(transforms/camera) @ transforms/{left,right}Hand | state.wrist_pose (T, 2, 7) | camera frame; xyz m + quaternion xyzw (w >= 0), left then right |
| inv(camera) @ the 21 hand joints (translation)  | state.hand_keypoints (T, 2, 21, 3) | m, camera frame, left then right; MediaPipe/MANO order (``KEYPOINTS``): wrist, then per finger thumb..little 4 joints base to tip; ARKit ``*Knuckle, *IntermediateBase, *IntermediateTip, *Tip`` = MediaPipe CMC/MCP/IP/TIP (thumb), MCP/PIP/DIP/TIP (fingers) |
| transforms/<joint> (every one, camera included) | extra.transforms.<joint> (T, 4, 4) | as recorded, world (ARKit origin) frame; the 4 metacarpals per hand, forearms, arms, shoulders, spine, neck live only here (``--option transforms=none`` drops them: ~4.4 kB a step) |
| confidences/<joint>                 | extra.confidences.<joint> (T,) | as recorded, 0..1 (a wrist's is whether the hand was tracked at all) |
| transforms/camera                   | camera ``ego`` extrinsics (T, 4, 4) | camera-to-world per step, float64 of the recorded float32 |
| camera/intrinsic (3, 3)             | camera ``ego`` intrinsics  | pixels at 1920x1080; the writer rescales them with ``--resolution`` |
| <i>.mp4                             | camera ``ego``             | RGB, upright; decoded lazily, transcoded frame by frame to the requested size |
| llm_description / llm_description2  | tasks[0]                   | llm_description2 when ``llm_type`` is reversible and ``which_llm_description`` is 2; ``description``/``description2``/``type`` in files without llm_* attrs |
| the task folder                     | tasks[1], metadata.task_folder | underscores as spaces in tasks |
| all file attrs                      | metadata.attrs             | strings decoded |
| any other per-step dataset          | extra.<path>               | as recorded |
| (none)                              | timestamp                  | i / fps, fps = 30 unless ``--option fps`` |

No robot action: ``action_space = "none"`` and no ``action.*`` features. The camera frame is EgoDex's
own (``inv(transforms/camera) @ transforms/<joint>``, as Apple's ``convert_to_camera_frame``), axes as
ARKit defines them for the camera transform; no axis flip is applied. An MP4 with fewer frames than
pose rows fails the item; one with more is trimmed to the pose rows (``metadata.trimmed_video_frames``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from converters.hdf5_io import open_h5
from converters.rotations import matrix_to_quat
from wamdata.errors import ConfigError, FormatError, SourceError
from wamdata.media import VideoFileFrames
from wamdata.schema import Camera, Episode
from wamdata.sources import Converter, SourceItem, check_read_size, json_value, register

SIDES = ("left", "right")
FINGERS = (("Thumb", "thumb"), ("IndexFinger", "index_finger"), ("MiddleFinger", "middle_finger"),
           ("RingFinger", "ring_finger"), ("LittleFinger", "pinky"))
PARTS = ("Knuckle", "IntermediateBase", "IntermediateTip", "Tip")
MP_PARTS = {"thumb": ("cmc", "mcp", "ip", "tip")}
MP_DEFAULT = ("mcp", "pip", "dip", "tip")
# The 21 keypoints, MediaPipe names (wrist, thumb_cmc .. pinky_tip), and EgoDex's joint for each, per side
KEYPOINTS = ("wrist",) + tuple(f"{mp}_{p}" for _, mp in FINGERS for p in MP_PARTS.get(mp, MP_DEFAULT))


def hand_joints(side: str) -> tuple[str, ...]:
    """EgoDex's joints of one hand in :data:`KEYPOINTS` order."""
    return (f"{side}Hand",) + tuple(f"{side}{f}{p}" for f, _ in FINGERS for p in PARTS)


CAMERA_KEY = "transforms/camera"
WRIST_NAMES = tuple(f"{s}_{c}" for s in SIDES for c in ("x", "y", "z", "qx", "qy", "qz", "qw"))
KEYPOINT_NAMES = tuple(f"{s}_{k}_{a}" for s in SIDES for k in KEYPOINTS for a in "xyz")
_STEM_RE = re.compile(r"^(\d+)\.hdf5$")


def description(attrs: dict) -> str:
    """The episode's instruction: the reversible task's active direction, else the first description."""
    for first, second, kind in (("llm_description", "llm_description2", "llm_type"),
                                ("description", "description2", "type")):
        if first in attrs:
            which = str(attrs.get("which_llm_description", "1")).strip()
            use_second = str(attrs.get(kind, "")) == "reversible" and which == "2" and second in attrs
            return str(attrs[second] if use_second else attrs[first]).strip()
    return ""


@register("egodex")
class EgoDex(Converter):
    family = "human_demo"
    revision = 2   # 2: the camera records extrinsics_frame

    @dataclass
    class Options:
        fps: float = 30.0
        embodiment: str = "human_hands"
        transforms: str = "all"   # all: every transforms/<joint> kept under extra. | none: only the canonical features

        def __post_init__(self):
            if not self.fps > 0:
                raise ConfigError(f"egodex: option fps must be > 0, got {self.fps}")
            if self.transforms not in ("all", "none"):
                raise ConfigError(f"egodex: option transforms is all or none, got {self.transforms!r}")

    def discover(self, root: str) -> Iterator[SourceItem]:
        root = os.path.abspath(root)
        if os.path.isfile(root):
            paths, root = [root], os.path.dirname(os.path.dirname(root))
        else:
            paths = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names if _STEM_RE.match(n)]
        def key(p):
            return (os.path.dirname(p), int(_STEM_RE.match(os.path.basename(p))[1]))
        for p in sorted(paths, key=key):
            rel = os.path.relpath(p, root)
            yield SourceItem(id="egodex/" + os.path.splitext(rel)[0].replace(os.sep, "/"), path=p,
                             info={"relpath": rel})

    def read(self, item: SourceItem) -> Episode:
        with open_h5(item, "egodex") as f:
            return self._read(item, f)

    def _read(self, item: SourceItem, f) -> Episode:
        transforms = self._transforms(item, f)
        T = len(transforms["camera"])
        fps = float(self.options.fps)
        ep = Episode(episode_id=item.id, source="egodex", family=self.family, embodiment=self.options.embodiment,
                     fps=fps, steps={"timestamp": np.arange(T, dtype=np.float64) / fps})
        cam = transforms["camera"].astype(np.float64)
        try:
            world_to_cam = np.linalg.inv(cam)
        except np.linalg.LinAlgError:
            raise SourceError(item, f"egodex: {CAMERA_KEY} has a singular pose") from None
        in_cam = {j: world_to_cam @ transforms[j].astype(np.float64)
                  for s in SIDES for j in hand_joints(s)}
        wrists = np.stack([in_cam[f"{s}Hand"] for s in SIDES], axis=1)                  # (T, 2, 4, 4)
        wrist_pose = np.concatenate([wrists[..., :3, 3], matrix_to_quat(wrists[..., :3, :3])], axis=-1)
        keypoints = np.stack([np.stack([in_cam[j][:, :3, 3] for j in hand_joints(s)], axis=1) for s in SIDES], axis=1)
        derived = "computed as inv(transforms/camera) @ transforms/<joint> per step"
        ep.add("state.wrist_pose", wrist_pose.astype(np.float32), names=WRIST_NAMES, derived=True, description=derived)
        ep.add("state.hand_keypoints", keypoints.astype(np.float32), names=KEYPOINT_NAMES, derived=True,
               description=derived)
        if self.options.transforms == "all":
            for joint in sorted(transforms):
                ep.add(f"extra.transforms.{joint}", transforms[joint], unit="m", frame="world",
                       description=f"transforms/{joint} as recorded: joint-to-world SE(3), ARKit origin frame")
        self._others(item, f, ep, T)
        intrinsic = self._dataset(item, f, "camera/intrinsic", (3, 3))
        attrs = {k: json_value(v) for k, v in f.attrs.items()}
        folder = os.path.basename(os.path.dirname(item.path))
        ep.tasks = [t for t in (description(attrs), folder.replace("_", " ")) if t]
        ep.cameras["ego"] = self._camera(item, T, intrinsic, cam, ep)
        ep.metadata.update({"attrs": attrs, "task_folder": folder,
                            "provenance": {"path": item.info.get("relpath", item.path)},
                            "hand_keypoint_joints": {s: list(hand_joints(s)) for s in SIDES}})
        return ep

    def _transforms(self, item: SourceItem, f) -> dict[str, np.ndarray]:
        """Every transforms/<joint> (T, 4, 4), checked: the camera and the 42 keypoint joints must exist."""
        if "transforms" not in f:
            raise SourceError(item, "egodex: missing group transforms/; episode skipped")
        for joint in ("camera",) + hand_joints("left") + hand_joints("right"):
            if joint not in f["transforms"]:
                raise SourceError(item, f"egodex: missing dataset transforms/{joint}; episode skipped")
        shape = getattr(f[CAMERA_KEY], "shape", None)   # None: a group
        if shape is None or len(shape) != 3 or shape[0] == 0:
            raise SourceError(item, f"egodex: {CAMERA_KEY} has shape {shape}, want (T, 4, 4) with T > 0")
        T = shape[0]
        return {j: self._dataset(item, f, f"transforms/{j}", (T, 4, 4)) for j in f["transforms"]}

    @staticmethod
    def _dataset(item: SourceItem, f, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in f:
            raise SourceError(item, f"egodex: missing dataset {key}; episode skipped")
        import h5py

        ds = f[key]
        if not isinstance(ds, h5py.Dataset) or ds.shape != shape or ds.dtype.kind != "f":
            what = f"{ds.dtype} {ds.shape}" if isinstance(ds, h5py.Dataset) else "a group"
            raise SourceError(item, f"egodex: {key} is {what}, want float {shape}")
        check_read_size(item, key, ds.shape, ds.dtype)   # T comes from a header too
        return np.asarray(ds[()])

    def _others(self, item: SourceItem, f, ep: Episode, T: int) -> None:
        """confidences/<joint> (T,) and any other per-step dataset, under extra."""
        import h5py

        datasets = {}

        def collect(name, obj):   # visititems stops at the first non-None return
            if isinstance(obj, h5py.Dataset):
                datasets[name] = obj

        f.visititems(collect)
        for key in sorted(datasets):
            if key.startswith("transforms/") or key == "camera/intrinsic":
                continue
            if key.startswith("confidences/"):
                ep.add("extra." + key.replace("/", "."), self._dataset(item, f, key, (T,)),
                       description=f"{key} as recorded, 0..1")
                continue
            check_read_size(item, key, datasets[key].shape, datasets[key].dtype)
            values = np.asarray(datasets[key][()])
            if values.ndim and len(values) == T:
                ep.add("extra." + key.replace("/", "."), values)
            else:
                ep.metadata.setdefault("unconverted", {})[key] = f"shape {values.shape} is not per step (T={T})"

    @staticmethod
    def _camera(item: SourceItem, T: int, intrinsic, cam: np.ndarray, ep: Episode) -> Camera:
        mp4 = os.path.splitext(item.path)[0] + ".mp4"
        if not os.path.exists(mp4):
            raise SourceError(item, f"egodex: no video {mp4} next to the poses; episode skipped")
        frames = VideoFileFrames(mp4, limit=T)
        try:
            n = frames.info["frames"]
        except FormatError as e:
            raise SourceError(item, f"egodex: {e}; episode skipped") from None
        if n < T:
            raise SourceError(item, f"egodex: {mp4} has {n} frames, {CAMERA_KEY} has {T} poses; episode skipped")
        ep.metadata["trimmed_video_frames"] = n - T
        return Camera("ego", frames, fps=ep.fps, intrinsics=intrinsic.astype(np.float64), extrinsics=cam,
                      extrinsics_frame="world",
                      metadata={"source_name": os.path.basename(mp4),
                                "extrinsics": f"camera-to-world per step ({CAMERA_KEY}, ARKit origin frame)"})
