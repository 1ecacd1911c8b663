"""``--source lerobot``: local LeRobot datasets, codebase_version v2.0, v2.1 and v3.0.

Input: a dataset folder (``meta/info.json``) or a folder of several. One item per episode (the layout,
path templates and quirks are in :mod:`converters.lerobot_layout`). Frames are matched to rows by
index within the episode: row ``i`` (in ``frame_index`` order, file order without that column) is
frame ``i`` of the episode's video (from ``round(from_timestamp * fps)`` in a v3.0 file).

| source column / file                    | canonical                         | notes |
|-----------------------------------------|-----------------------------------|-------|
| observation.state, action (float vectors) | state.<f> / action.<f> by mapping | see Mapping; the raw vector stays in ``extra.observation.state`` / ``extra.action`` unless every dimension was copied exactly |
| observation.images.<cam> (video)        | camera ``<cam>`` (preset: role)   | MP4 (H.264/HEVC/AV1 stream-copied with ``--video-codec copy``) |
| <key> (image: PNG/JPEG bytes)           | camera ``<key>`` (dots -> ``_``)  | decoded lazily |
| timestamp (float32 s)                   | timestamp                         | from the episode start: ``(frame_index - first) / fps`` when the column agrees with it within 1 ms (float32), else the column - its first value; raw in ``extra.timestamp`` |
| task_index                              | ``tasks`` + ``language`` segments | text from tasks.jsonl / tasks.parquet; episode row ``tasks`` first; ``extra.task_index`` kept |
| annotation.* (GR00T, task indices)      | ``extra.annotation.*``            | texts in ``metadata.annotations`` |
| extra.* / meta.* (a wamdata export)     | the same name                     | |
| any other numeric / bool / string column | ``extra.<key>``                  | ``names`` from info.json |
| index, episode_index, frame_index       | (structural)                      | ``frame_index`` orders the rows; ids in ``metadata.lerobot`` |
| info.json robot_type, fps               | embodiment, fps                   | ``--option embodiment`` overrides |
| episode row (length, success, ...)      | ``metadata.lerobot.episode``      | ``success`` when the row has a bool one |
| other meta/ files (modality.json, ...)  | ``metadata.lerobot.meta_files``   | presets may use modality.json slices |

Mapping of observation.state / action, first that applies: ``--option state_map=`` / ``action_map=``
(``joint_pos=0:6,gripper=6:7:clip01``: canonical name = slice ``a:b`` or a modality.json entry, an
optional conversion of ``converters.rlds_mapping``); a preset (``--option preset=NAME`` from
``converters/presets/lerobot/`` or a YAML path; ``features: {state.joint_pos: {source, slice | modality,
convert, scale, names, description}}``, ``cameras: {role: video_key}``, ``embodiment``,
``action_space``); else ``mapping=auto``: dimension names ``<f>`` / ``<f>.<sub>`` whose ``state.<f>`` /
``action.<f>`` is canonical (as wamdata's own LeRobot export names them) map, when the run of dimensions
has the canonical width and valid values (unit quaternions, grippers in [0, 1]). ``mapping=none`` keeps
everything under ``extra.``. A declared video feature without files, or an unmappable dimension run,
is reported in ``metadata.missing_cameras`` / ``metadata.unmapped`` and the episode is converted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from converters import lerobot_layout as lay
from converters.rlds_mapping import apply_conversion, load_preset
from wamdata.errors import ConfigError, SourceError
from wamdata.media import LazyFrames, VideoFileFrames, decode_image
from wamdata.schema import CANONICAL, Camera, Episode, LanguageSegment
from wamdata.sources import Converter, SourceItem, register

STRUCTURAL = ("index", "episode_index", "frame_index", "timestamp")
VECTORS = {"observation.state": "state.", "action": "action."}
MODALITY = {"observation.state": "state", "action": "action"}


@dataclass(frozen=True)
class _Map:
    name: str          # canonical feature
    source: str        # LeRobot column
    a: int
    b: int
    convert: str = "identity"
    scale: float = 1.0
    names: tuple | None = None
    description: str = ""


def _names(feature: dict | None, width: int) -> list[str] | None:
    names = (feature or {}).get("names")
    if isinstance(names, dict) and len(names) == 1:   # v2.0 {"motors": [...]}
        names = next(iter(names.values()))
    return [str(n) for n in names] if isinstance(names, list) and len(names) == width else None


def _parse_map(text: str, source: str, prefix: str) -> list[_Map]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, spec = part.partition("=")
        bits = spec.split(":")
        if not eq or len(bits) not in (1, 2, 3):
            raise ConfigError(f"lerobot: map entry {part!r}: want NAME=A:B[:conversion] or NAME=<modality key>")
        canon = prefix + name.strip()
        if canon not in CANONICAL:
            raise ConfigError(f"lerobot: {canon!r} is not canonical; known: {', '.join(CANONICAL)}")
        if len(bits) == 1:   # a modality.json entry, resolved per dataset
            out.append(_Map(canon, source, -1, -1, description=f"modality:{bits[0]}"))
            continue
        try:
            a, b = int(bits[0]), int(bits[1])
        except ValueError:
            raise ConfigError(f"lerobot: map entry {part!r}: slice bounds must be integers") from None
        out.append(_Map(canon, source, a, b, bits[2] if len(bits) == 3 else "identity"))
    return out


def _auto_maps(source: str, names: list[str] | None, values: np.ndarray, unmapped: dict) -> list[_Map]:
    """Runs of dimension names ``<f>[.<sub>]`` whose ``<prefix><f>`` is canonical, checked."""
    if names is None:
        return []
    out, i = [], 0
    while i < len(names):
        short = names[i].split(".", 1)[0]
        j = i
        while j < len(names) and names[j].split(".", 1)[0] == short:
            j += 1
        canon = VECTORS[source] + short
        if canon in CANONICAL:
            spec, v = CANONICAL[canon], values[:, i:j]
            subs = tuple(n.split(".", 1)[1] for n in names[i:j] if "." in n)
            bad = (spec.shape is not None and (j - i,) != spec.shape and "width"
                   or canon.endswith(".gripper") and (v.min() < -1e-3 or v.max() > 1 + 1e-3) and "outside [0, 1]"
                   or canon.endswith("eef_rot") and np.abs(np.linalg.norm(v, axis=1) - 1).max() > 1e-3 and "not unit"
                   or not np.isfinite(v).all() and "NaN/Inf")
            if bad:
                unmapped[f"{source}[{i}:{j}]"] = f"{canon}: {bad}"
            else:
                out.append(_Map(canon, source, i, j, names=subs if len(subs) == j - i else None))
        i = j
    return out


@register("lerobot")
class LeRobot(Converter):
    family = "teleop"
    revision = 1

    @dataclass
    class Options:
        preset: str | None = None       # name in converters/presets/lerobot/ or a YAML path
        mapping: str = "auto"           # auto | none (when no map / preset covers a vector)
        state_map: str | None = None    # joint_pos=0:6,gripper=6:7[:conversion] or NAME=<modality key>
        action_map: str | None = None
        embodiment: str | None = None   # default: the preset's, else info.json robot_type
        family: str = "teleop"

        def __post_init__(self):
            if self.mapping not in ("auto", "none"):
                raise ConfigError(f"lerobot: option mapping is auto or none, got {self.mapping!r}")

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        self.preset = {}
        if o.preset:
            import yaml

            self.preset = (yaml.safe_load(open(o.preset, encoding="utf-8")) if o.preset.endswith((".yaml", ".yml"))
                           else load_preset(o.preset, "lerobot")) or {}
        self.maps = {"observation.state": _parse_map(o.state_map or "", "observation.state", "state."),
                     "action": _parse_map(o.action_map or "", "action", "action.")}
        self._meta: dict[str, lay.LeRobotMeta] = {}

    def _read_meta(self, root: str) -> lay.LeRobotMeta:
        if root not in self._meta:
            self._meta[root] = lay.read_meta(root)
        return self._meta[root]

    def discover(self, root: str) -> Iterator[SourceItem]:
        root = os.path.abspath(root)
        dirs = []
        for d, sub, _ in os.walk(root):
            if lay.is_dataset(d):
                dirs.append(d)
                sub.clear()   # a dataset's own folders hold no further datasets
        dirs.sort()
        for d in dirs:
            try:
                meta = self._read_meta(d)
            except lay.LayoutError as e:
                raise ConfigError(f"lerobot: {e}") from None
            rel = os.path.basename(d) if d == root else os.path.relpath(d, root)
            for ep in sorted(meta.episodes):
                yield SourceItem(id=f"lerobot/{rel}/episode_{ep:06d}", path=d, index=ep, info={"dataset": rel})

    def read(self, item: SourceItem) -> Episode:
        try:
            meta = self._read_meta(item.path)
            return self._episode(item, meta, lay.episode_rows(meta, item.index))
        except lay.LayoutError as e:
            raise SourceError(e.path, f"lerobot: {e.reason}") from None

    def _episode(self, item: SourceItem, meta: lay.LeRobotMeta, cols: dict) -> Episode:
        fps, T = meta.fps, len(next(iter(cols.values())))
        row = meta.episodes[item.index]
        ep = Episode(episode_id=item.id, source="lerobot", family=self.options.family,
                     embodiment=self.options.embodiment or self.preset.get("embodiment")
                     or meta.info.get("robot_type") or "unknown", fps=fps,
                     steps={"timestamp": lay.timestamps(cols, fps)})
        unmapped: dict = {}
        for key, values in sorted(cols.items()):
            feat = meta.features.get(key, {})
            if key in STRUCTURAL and key != "timestamp" or feat.get("dtype") == "image":
                continue
            if values.dtype == object:   # a struct column LeRobot does not declare as an image
                unmapped[key] = "struct column, not converted"
                continue
            if key in VECTORS and values.ndim == 2 and np.issubdtype(values.dtype, np.number):
                if self._vector(ep, meta, key, values, _names(feat, values.shape[1]), unmapped,
                                meta.data_file(item.index)):
                    continue
            name = key if key.startswith(("extra.", "meta.")) else "extra." + key
            ep.add(name, values, names=_names(feat, values.shape[1]) if values.ndim == 2 else None)
        mapped_actions = [n for n in ep.steps if n.startswith("action.")]
        ep.action_space = (self.preset.get("action_space") or "+".join(n[7:] for n in mapped_actions)
                           if mapped_actions else ("unmapped" if "action" in cols else "none"))
        self._tasks(ep, meta, row, cols)
        missing = self._cameras(ep, meta, item.index, cols, T)
        ep.success = row.get("success") if isinstance(row.get("success"), bool) else None
        ep.metadata.update({
            "lerobot": {"codebase_version": meta.version, "dataset": item.info.get("dataset"),
                        "episode_index": item.index, "robot_type": meta.info.get("robot_type"),
                        "episode": {k: v for k, v in row.items() if not k.startswith(("videos/", "data/", "meta/"))},
                        "meta_files": meta.extra},
            "provenance": {"path": meta.data_file(item.index), "episode_index": item.index},
            "missing_cameras": missing, "unmapped": unmapped, "preset": self.options.preset})
        return ep

    def _vector(self, ep, meta, key, values, names, unmapped, where) -> bool:
        """Map one vector column; True when every dimension was copied exactly (no raw copy needed)."""
        maps = self.maps[key] or [_Map(n, c["source"], *c.get("slice", (-1, -1)), c.get("convert", "identity"),
                                       float(c.get("scale", 1.0)), tuple(c["names"]) if c.get("names") else None,
                                       f"modality:{c['modality']}" if "modality" in c else c.get("description", ""))
                                  for n, c in (self.preset.get("features") or {}).items() if c["source"] == key]
        if not maps and not self.preset and self.options.mapping == "auto":
            maps = _auto_maps(key, names, values, unmapped)
        covered: set[int] = set()
        for m in maps:
            a, b = m.a, m.b
            if a < 0 and not m.description.startswith("modality:"):   # a preset entry without a slice
                a, b = 0, values.shape[1]
            if m.description.startswith("modality:"):
                entry = (meta.extra.get("modality.json") or {}).get(MODALITY[key], {}).get(m.description[9:])
                if not entry:
                    raise lay.LayoutError(os.path.join(meta.root, "meta", "modality.json"),
                                          f"no {MODALITY[key]}.{m.description[9:]} entry for {m.name}")
                a, b = int(entry["start"]), int(entry["end"])
            if not 0 <= a < b <= values.shape[1]:
                raise lay.LayoutError(where, f"column {key!r}: slice {a}:{b} outside width {values.shape[1]}")
            out = apply_conversion(m.convert, values[:, a:b].astype(np.float64) if m.convert != "identity" else values[:, a:b])
            out = out.astype(np.float32) if not np.issubdtype(out.dtype, np.floating) else out
            exact = m.convert == "identity" and m.scale == 1.0
            if not exact:
                out = out * out.dtype.type(m.scale)
            sub = names[a:b] if names and m.names is None else None
            ep.add(m.name, out, derived=not exact, names=m.names or sub,
                   description=m.description if not m.description.startswith("modality:") else
                   f"{key}[{a}:{b}] ({m.description})")
            if exact:
                covered.update(range(a, b))
        return covered == set(range(values.shape[1]))

    def _tasks(self, ep: Episode, meta: lay.LeRobotMeta, row: dict, cols: dict) -> None:
        ep.tasks = [str(t) for t in row.get("tasks") or [] if str(t)]
        ts = ep.steps["timestamp"]
        if "task_index" in cols:
            idx = cols["task_index"].astype(np.int64)
            ep.add("extra.task_index", idx)
            start = 0
            for i in range(1, len(idx) + 1):
                if i == len(idx) or idx[i] != idx[start]:
                    text = meta.tasks.get(int(idx[start]), "")
                    if text:
                        end = float(ts[i - 1] + 1.0 / ep.fps)
                        ep.language.append(LanguageSegment(float(ts[start]), end, text))
                        if text not in ep.tasks:
                            ep.tasks.append(text)
                    start = i
        for key in sorted(k for k in cols if k.startswith("annotation.")):
            v = cols[key]
            if np.issubdtype(v.dtype, np.integer) and set(np.unique(v).tolist()) <= set(meta.tasks):
                texts = list(dict.fromkeys(meta.tasks[int(x)] for x in v))
                ep.metadata.setdefault("annotations", {})[key] = texts

    def _cameras(self, ep: Episode, meta: lay.LeRobotMeta, index: int, cols: dict, T: int) -> list[str]:
        roles = {k: r for r, k in (self.preset.get("cameras") or {}).items()}
        missing = []
        for key in meta.video_keys:
            found = meta.video_file(index, key)
            if found is None:
                missing.append(key)
                continue
            path, from_ts = found
            frames = VideoFileFrames(path, limit=T, start=int(round(from_ts * meta.video_fps(key))))
            if frames.num_frames < T:
                raise lay.LayoutError(path, f"video {key!r}: {frames.num_frames} frames from frame "
                                            f"{frames.start} for the episode's {T} rows")
            role = roles.get(key, _camera_name(key))
            ep.cameras[role] = Camera(role, frames, fps=ep.fps, metadata={"source_key": key, "file": path,
                                                                         "start_frame": frames.start})
        for key, f in meta.features.items():
            if f.get("dtype") == "image" and key in cols:
                images = [d["bytes"] if isinstance(d, dict) else d for d in cols[key]]
                if any(b is None for b in images):
                    raise lay.LayoutError(meta.data_file(index), f"column {key!r}: image rows without bytes")
                first = decode_image(images[0])
                role = roles.get(key, _camera_name(key))
                ep.cameras[role] = Camera(role, LazyFrames(T, first.shape[0], first.shape[1],
                                                           lambda i, im=images: decode_image(im[i])),
                                          fps=ep.fps, metadata={"source_key": key})
        return missing


def _camera_name(key: str) -> str:
    return key[len("observation.images."):] if key.startswith("observation.images.") else key.replace(".", "_")
