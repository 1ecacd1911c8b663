"""TFDS feature specs and preset mappings for ``converters.rlds`` (no TensorFlow).

``flatten_features`` turns a TFDS ``features.json`` into flat fields (``steps/observation/state`` ->
dtype, shape, kind, encoding, per-step or not); ``decode_field`` turns the values of one parsed
``tf.train.Example`` key into numpy arrays / bytes / text using that spec.

Presets are YAML data in ``converters/presets/<name>.yaml`` (the OXE "dataset kwargs" idea): camera
roles, canonical features as (source key, slice, conversion), language fields, success rule, fps,
embodiment. Conversions available to presets (all numpy, float64 math, output float32):

    identity             copy
    euler_xyz_to_quat    roll, pitch, yaw (extrinsic x-y-z, R = Rz Ry Rx; = scipy "xyz") -> quat xyzw
    euler_xyz_to_rotvec  same Euler convention -> axis-angle (rotation vector), rad
    open_to_closed       1 - x, clipped to [0, 1]   (sources where 1 = open)
    clip01               x clipped to [0, 1]        (sources already 0 = open, 1 = closed)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from importlib import resources

import numpy as np
import yaml

from converters.rotations import euler_xyz_to_quat, quat_to_rotvec
from wamdata.errors import ConfigError


@dataclass(frozen=True)
class FieldSpec:
    key: str  # flattened key, e.g. "steps/observation/image_0"
    kind: str  # "tensor" | "image" | "text"
    dtype: str
    shape: tuple[int, ...]
    encoding: str  # tensors: none | bytes | zlib; images: jpeg | png
    per_step: bool
    description: str = ""


def flatten_features(spec: dict) -> dict[str, FieldSpec]:
    """features.json -> {flattened key: FieldSpec}, keys sorted."""
    out: dict[str, FieldSpec] = {}

    def walk(node: dict, prefix: str, per_step: bool) -> None:
        desc = node.get("description", "")
        if "featuresDict" in node:
            for name, child in node["featuresDict"]["features"].items():
                walk(child, f"{prefix}/{name}" if prefix else name, per_step)
        elif "sequence" in node:
            walk(node["sequence"]["feature"], prefix, True)
        elif "image" in node:
            im = node["image"]
            shape = tuple(int(d) for d in im["shape"]["dimensions"])
            out[prefix] = FieldSpec(prefix, "image", im.get("dtype", "uint8"), shape,
                                    im.get("encodingFormat", "jpeg"), per_step, desc)
        elif "text" in node:
            out[prefix] = FieldSpec(prefix, "text", "string", (), "none", per_step, desc)
        elif "tensor" in node:
            t = node["tensor"]
            shape = tuple(int(d) for d in t.get("shape", {}).get("dimensions", []))
            kind = "text" if t["dtype"] == "string" else "tensor"
            out[prefix] = FieldSpec(prefix, kind, t["dtype"], shape, t.get("encoding", "none").lower(),
                                    per_step, desc)
        elif "classLabel" in node:
            out[prefix] = FieldSpec(prefix, "tensor", "int64", (), "none", per_step, desc)
        else:
            out[prefix] = FieldSpec(prefix, "unknown", node.get("pythonClassName", "?"), (), "none",
                                    per_step, desc)

    walk(spec, "", False)
    return dict(sorted(out.items()))


def decode_field(fs: FieldSpec, kind: str, values) -> object:
    """Values of one Example key -> per-step (T, *shape) array, list of bytes (images), list of str
    (text), or for episode-level fields the single value. Raises ValueError on a shape mismatch."""
    if fs.kind == "image":
        return list(values)
    if fs.kind == "text":
        texts = [bytes(v).decode("utf-8") for v in values]
        return texts if fs.per_step else (texts[0] if len(texts) == 1 else texts)
    dtype = np.dtype(fs.dtype)
    if kind == "bytes":  # Tensor(encoding=bytes|zlib): one serialized tensor per step, raw bytes
        raw = [zlib.decompress(v) if fs.encoding == "zlib" else bytes(v) for v in values]
        arr = np.stack([np.frombuffer(r, dtype=dtype).reshape(fs.shape) for r in raw]) if raw else \
            np.zeros((0, *fs.shape), dtype)
    else:
        flat = np.asarray(values)
        size = int(np.prod(fs.shape)) if fs.shape else 1
        if size == 0 or len(flat) % size:
            raise ValueError(f"{fs.key}: {len(flat)} values do not split into steps of shape {fs.shape}")
        arr = flat.astype(dtype).reshape(-1, *fs.shape)
    if fs.per_step:
        return arr
    if arr.shape[0] != 1:
        raise ValueError(f"{fs.key}: episode-level field holds {arr.shape[0]} values")
    return arr[0]


# --- presets --------------------------------------------------------------------------------------


def load_preset(name: str, converter: str = "rlds") -> dict:
    """The preset ``converters/presets/<name>.yaml`` (another converter's: ``presets/<converter>/``);
    an unknown name lists the shipped ones."""
    folder = resources.files("converters") / "presets"
    if converter != "rlds":
        folder = folder / converter
    known = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if name not in known:
        raise ConfigError(f"{converter}: unknown preset {name!r}; known: {', '.join(known)}")
    return yaml.safe_load((folder / f"{name}.yaml").read_text())


CONVERSIONS = {
    "identity": lambda x: x,
    "euler_xyz_to_quat": euler_xyz_to_quat,
    "euler_xyz_to_rotvec": lambda x: quat_to_rotvec(euler_xyz_to_quat(x)),
    "open_to_closed": lambda x: np.clip(1.0 - np.asarray(x, np.float64), 0.0, 1.0),
    "clip01": lambda x: np.clip(np.asarray(x, np.float64), 0.0, 1.0),
}


def apply_conversion(name: str, values: np.ndarray) -> np.ndarray:
    if name not in CONVERSIONS:
        raise ConfigError(f"rlds preset: unknown conversion {name!r}; known: {', '.join(CONVERSIONS)}")
    out = CONVERSIONS[name](values)
    return np.asarray(out, dtype=np.float32 if name != "identity" else None)
