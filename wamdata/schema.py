"""Episode, Feature, Camera, the canonical feature vocabulary and `validate`.

An Episode is what a converter produces and what the writer stores: metadata, a table of steps
(``timestamp`` in seconds from the episode start plus named state / action / extra features, each a
numpy array whose first axis is the step), camera streams whose frame ``i`` belongs to step ``i``, and
optional language segments.

Semantics are declared, never guessed: every feature carries its unit, frame (``base``, ``camera``,
``world``), whether it is ``absolute`` or ``delta``, and whether wamdata ``derived`` it. Canonical
features take those from :data:`CANONICAL`; everything else lives under ``extra.<source name>``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from wamdata.errors import SchemaError

FAMILIES = ("teleop", "human_demo", "sim", "egocentric_video")
FRAMES = ("base", "camera", "world")
ENCODINGS = ("absolute", "delta")


@dataclass(frozen=True)
class CanonicalSpec:
    """What the vocabulary fixes for a canonical feature. ``shape`` None means "N, any length"."""

    shape: tuple[int, ...] | None
    unit: str
    frame: str | None
    encoding: str
    description: str


def _spec(shape, unit, frame, encoding, description):
    return CanonicalSpec(shape, unit, frame, encoding, description)


CANONICAL: dict[str, CanonicalSpec] = {
    "state.eef_pos": _spec((3,), "m", "base", "absolute", "end-effector position"),
    "action.eef_pos": _spec((3,), "m", "base", "absolute", "commanded end-effector position"),
    "state.eef_rot": _spec((4,), "quat_xyzw", "base", "absolute", "end-effector orientation"),
    "action.eef_rot": _spec((4,), "quat_xyzw", "base", "absolute", "commanded end-effector orientation"),
    "action.eef_delta_pos": _spec((3,), "m", "base", "delta", "end-effector translation per step"),
    "action.eef_delta_rot": _spec((3,), "rad_axis_angle", "base", "delta", "end-effector rotation per step"),
    "state.gripper": _spec(None, "normalized", None, "absolute",
                           "gripper closure, 0 = open, 1 = closed; one per arm, left then right"),
    "action.gripper": _spec(None, "normalized", None, "absolute",
                            "commanded closure, 0 = open, 1 = closed; one per arm, left then right"),
    "state.joint_pos": _spec(None, "rad", None, "absolute", "joint positions"),
    "action.joint_pos": _spec(None, "rad", None, "absolute", "commanded joint positions"),
    "state.joint_vel": _spec(None, "rad/s", None, "absolute", "joint velocities"),
    "action.joint_vel": _spec(None, "rad/s", None, "absolute", "commanded joint velocities"),
    "action.joint_delta_pos": _spec(None, "rad", None, "delta", "joint position change per step"),
    "state.hand_keypoints": _spec((2, 21, 3), "m", "camera", "absolute", "hand joints, left then right"),
    "state.wrist_pose": _spec((2, 7), "m+quat_xyzw", "camera", "absolute", "wrist xyz + quaternion, left then right"),
    "action.ego_motion": _spec((6,), "m+rad_axis_angle", "camera", "delta", "camera motion between steps"),
    "action.latent": _spec(None, "code", None, "absolute", "latent action codes from a labelling pass"),
}

# Camera names become tar member names (<key>.<camera>.mp4) and LeRobot feature keys: a name from
# source metadata must not carry a path, a dot (webdataset splits keys at the first one) or a NUL.
CAMERA_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def camera_name(raw: str) -> str:
    """A safe camera name for a source's own name: unsafe runs become ``_``, cut to 64 characters;
    deterministic, so the same source camera gets the same name in every episode."""
    name = re.sub(r"[^A-Za-z0-9_\-]+", "_", str(raw)).strip("_")[:64]
    return name or "camera"


# Step columns the format itself defines (not features of the source).
TIMESTAMP = "timestamp"
QUATERNION_FEATURES = ("state.eef_rot", "action.eef_rot")
GRIPPER_FEATURES = ("state.gripper", "action.gripper")


@dataclass(frozen=True)
class Feature:
    """Declared semantics of one step column. ``shape`` is per step (without the time axis)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    unit: str | None = None
    frame: str | None = None
    encoding: str | None = None
    derived: bool = False
    names: tuple[str, ...] | None = None
    description: str = ""

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        d["names"] = list(self.names) if self.names is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Feature":
        d = dict(d)
        d["shape"] = tuple(d["shape"])
        d["names"] = tuple(d["names"]) if d.get("names") is not None else None
        return cls(**d)


SEMANTIC_FIELDS = ("dtype", "shape", "unit", "frame", "encoding", "derived", "names")


def declaration_conflict(a: dict, b: dict) -> str | None:
    """Why two JSON declarations of one feature disagree (dtype, shape, unit, frame, encoding,
    derived or names), or None when they agree. Descriptions may differ."""
    diffs = [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in SEMANTIC_FIELDS if a.get(k) != b.get(k)]
    return "; ".join(diffs) or None


def feature_for(name: str, values: np.ndarray, **declared) -> Feature:
    """The Feature of a step column: canonical defaults for canonical names, dtype/shape from values.

    ``declared`` overrides or adds semantics (``names``, ``unit``, ``derived``, ``frame`` ...), which is
    how a converter states what the source leaves implicit.
    """
    spec = CANONICAL.get(name)
    base = {}
    if spec is not None:
        base = dict(unit=spec.unit, frame=spec.frame, encoding=spec.encoding, description=spec.description)
    base.update(declared)
    if base.get("names") is not None:
        base["names"] = tuple(base["names"])
    return Feature(name=name, dtype=str(values.dtype), shape=tuple(values.shape[1:]), **base)


@runtime_checkable
class FrameSource(Protocol):
    """Frames of one camera, produced lazily so a converter never holds a whole video in memory.

    ``iter_frames`` yields RGB, upright uint8 arrays (H, W, 3) in step order. ``video_path`` and
    ``codec`` are set when the source already holds an encoded stream that could be stream-copied.
    """

    num_frames: int
    height: int
    width: int

    def iter_frames(self) -> Iterator[np.ndarray]: ...


@dataclass
class ArrayFrames:
    """Frames already in memory: a (T, H, W, 3) uint8 array, or a list of (H, W, 3) arrays."""

    array: np.ndarray | Sequence[np.ndarray]
    video_path: str | None = None
    codec: str | None = None

    @property
    def num_frames(self) -> int:
        return len(self.array)

    @property
    def height(self) -> int:
        return int(self.array[0].shape[0]) if len(self.array) else 0

    @property
    def width(self) -> int:
        return int(self.array[0].shape[1]) if len(self.array) else 0

    def iter_frames(self) -> Iterator[np.ndarray]:
        yield from self.array


# What Camera.extrinsics map camera coordinates into.
EXTRINSICS_FRAMES = ("base", "world")


@dataclass
class Camera:
    """One camera stream. Cameras are first-class metadata: role, resolution, fps, calibration.

    ``intrinsics`` is a 3x3 matrix; ``extrinsics`` a 4x4 camera-to-reference transform, or (T, 4, 4)
    when the rig moves; None marks them missing. ``extrinsics_frame`` names the reference, as feature
    frames do, and is required with extrinsics: ``base`` (the robot base: DROID's calibration) or
    ``world`` (a simulator's scene or ARKit's origin: robomimic, ManiSkill, EgoDex). Sources differ
    here, and a consumer mixing them must know which it has. ``transforms`` records what the converter
    did to make frames RGB and upright (e.g. ``["flip_vertical"]``, ``["bgr_to_rgb"]``).
    """

    name: str
    frames: FrameSource
    fps: float | None = None
    intrinsics: np.ndarray | None = None
    extrinsics: np.ndarray | None = None
    extrinsics_frame: str | None = None
    transforms: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LanguageSegment:
    """A timestamped narration or instruction covering [start_s, end_s] of the episode."""

    start_s: float
    end_s: float
    text: str


@dataclass
class Episode:
    """One episode, source-independent. ``steps`` maps column name -> array with T rows."""

    episode_id: str
    source: str
    family: str
    embodiment: str
    fps: float
    steps: dict[str, np.ndarray]
    features: dict[str, Feature] = field(default_factory=dict)
    cameras: dict[str, Camera] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)
    language: list[LanguageSegment] = field(default_factory=list)
    success: bool | None = None
    action_space: str = "none"
    metadata: dict = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(len(self.steps[TIMESTAMP]))

    @property
    def duration_s(self) -> float:
        ts = self.steps[TIMESTAMP]
        if len(ts) == 0:
            return 0.0
        return float(ts[-1] - ts[0]) + 1.0 / self.fps

    @property
    def task(self) -> str:
        return self.tasks[0] if self.tasks else ""

    def add(self, name: str, values, **declared) -> None:
        """Add a step column and its Feature (canonical defaults filled in, ``declared`` on top)."""
        values = np.asarray(values)
        if values.ndim == 1 and name in CANONICAL:   # (T,) of a vector feature: one component
            values = values.reshape(-1, *(CANONICAL[name].shape or (1,)))
        self.steps[name] = values
        self.features[name] = feature_for(name, values, **declared)


def _fail(episode: Episode, fieldname: str, reason: str) -> SchemaError:
    return SchemaError(f"episode {episode.episode_id!r}: {fieldname}: {reason}")


def validate(episode: Episode) -> Episode:
    """Check what can be checked; raise SchemaError naming the episode and the field."""
    if episode.family not in FAMILIES:
        raise _fail(episode, "family", f"unknown family {episode.family!r}; known: {', '.join(FAMILIES)}")
    if not episode.fps or episode.fps <= 0:
        raise _fail(episode, "fps", f"must be positive, got {episode.fps!r}")
    if TIMESTAMP not in episode.steps:
        raise _fail(episode, TIMESTAMP, "missing")
    ts = np.asarray(episode.steps[TIMESTAMP])
    T = len(ts)
    if T == 0:
        raise _fail(episode, TIMESTAMP, "episode has no steps")
    if ts.dtype != np.float64:
        raise _fail(episode, TIMESTAMP, f"must be float64 seconds, got {ts.dtype}")
    if np.any(np.diff(ts) <= 0):
        i = int(np.argmax(np.diff(ts) <= 0))
        raise _fail(episode, TIMESTAMP, f"not strictly increasing at step {i + 1} ({ts[i]} -> {ts[i + 1]})")
    for name, values in episode.steps.items():
        if name == TIMESTAMP:
            continue
        if name not in episode.features:
            raise _fail(episode, name, "step column without a Feature declaration")
        feat = episode.features[name]
        if len(values) != T:
            raise _fail(episode, name, f"has {len(values)} rows, timestamps have {T}")
        if tuple(values.shape[1:]) != feat.shape:
            raise _fail(episode, name, f"shape {tuple(values.shape[1:])} per step, declared {feat.shape}")
        prefix = name.split(".", 1)[0]
        if prefix not in ("state", "action", "extra", "meta"):
            raise _fail(episode, name, "column names start with state., action., extra. or meta.")
        if prefix in ("state", "action") and name not in CANONICAL:
            raise _fail(episode, name, "not in the canonical vocabulary; keep it under extra.<name>")
        if name in CANONICAL:
            _validate_canonical(episode, name, values, feat)
    if episode.action_space == "none" and any(n.startswith("action.") for n in episode.steps):
        raise _fail(episode, "action_space", "'none' but the episode has action features")
    for cam_name, cam in episode.cameras.items():
        if not CAMERA_NAME.match(cam_name):
            raise _fail(episode, f"cameras.{cam_name!r}", "camera names are 1-64 of [A-Za-z0-9_-] (they name tar "
                                                          "members); map a source name with schema.camera_name")
        if cam.frames.num_frames != T:
            raise _fail(episode, f"cameras.{cam_name}", f"{cam.frames.num_frames} frames for {T} steps")
        if cam.intrinsics is not None and np.shape(cam.intrinsics) != (3, 3):
            raise _fail(episode, f"cameras.{cam_name}.intrinsics", f"shape {np.shape(cam.intrinsics)}, want (3, 3)")
        if cam.extrinsics is not None and np.shape(cam.extrinsics) not in ((4, 4), (T, 4, 4)):
            raise _fail(episode, f"cameras.{cam_name}.extrinsics", f"shape {np.shape(cam.extrinsics)}, want (4, 4) or (T, 4, 4)")
        if cam.extrinsics is not None and cam.extrinsics_frame not in EXTRINSICS_FRAMES:
            raise _fail(episode, f"cameras.{cam_name}.extrinsics_frame",
                        f"{cam.extrinsics_frame!r}; extrinsics need their reference frame, one of "
                        f"{', '.join(EXTRINSICS_FRAMES)}")
    for seg in episode.language:
        if seg.end_s < seg.start_s:
            raise _fail(episode, "language", f"segment ends before it starts: {seg}")
    return episode


def _validate_canonical(episode: Episode, name: str, values: np.ndarray, feat: Feature) -> None:
    spec = CANONICAL[name]
    if spec.shape is not None and tuple(values.shape[1:]) != spec.shape:
        raise _fail(episode, name, f"canonical shape is {spec.shape}, got {tuple(values.shape[1:])}")
    if spec.shape is None and values.ndim != 2:
        raise _fail(episode, name, f"must be (T, N), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        raise _fail(episode, name, f"must be floating point, got {values.dtype}")
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0]
        raise _fail(episode, name, f"NaN/Inf at step {int(bad[0])}")
    if name in QUATERNION_FEATURES:
        norms = np.linalg.norm(values, axis=-1)
        if np.any(np.abs(norms - 1.0) > 1e-3):
            i = int(np.argmax(np.abs(norms - 1.0)))
            raise _fail(episode, name, f"not a unit quaternion at step {i} (norm {norms[i]:.4f})")
    if name in GRIPPER_FEATURES:
        if values.min() < -1e-3 or values.max() > 1 + 1e-3:
            raise _fail(episode, name, f"outside [0, 1]: min {values.min():.4f}, max {values.max():.4f}")
