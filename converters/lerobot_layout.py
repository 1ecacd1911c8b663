"""The on-disk layout of local LeRobot datasets, codebase_version v2.0, v2.1 and v3.0 (for
``converters.lerobot``): where an episode's rows, frames, tasks and metadata are.

v2.0 / v2.1 (one file per episode, ``episode_chunk = episode_index // chunks_size``)::

    meta/info.json           codebase_version, fps, chunks_size, features, data_path / video_path templates
    meta/episodes.jsonl      {"episode_index", "tasks": [...], "length", ...}
    meta/tasks.jsonl         {"task_index", "task"}
    meta/episodes_stats.jsonl   (v2.1 only) per-episode stats: derived, not read
    data/chunk-000/episode_000000.parquet
    videos/chunk-000/<video_key>/episode_000000.mp4

v3.0 (several episodes per file, located by the rows of ``meta/episodes/``)::

    meta/episodes/chunk-000/file-000.parquet   episode_index, tasks, length, data/chunk_index,
                                               data/file_index, videos/<key>/{chunk_index, file_index,
                                               from_timestamp, to_timestamp}, stats/...
    meta/tasks.parquet                         task text (the index) -> task_index
    data/chunk-000/file-000.parquet            rows of several episodes (filtered by episode_index)
    videos/<video_key>/chunk-000/file-000.mp4  episodes back to back; episode e starts at frame
                                               round(from_timestamp * fps)

The paths always come from the templates in ``info.json`` (defaults: LeRobot's own). Real datasets
differ from the spec in ways read here without failing: ``total_chunks`` 0 (chunks are computed, not
counted), a declared video feature without files (reported by :func:`video_file` returning None).
Other JSON files under ``meta/`` (e.g. GR00T's ``modality.json``, which names slices of the state and
action vectors) are returned by :func:`extra_meta` for the episode metadata and presets.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from wamdata.errors import SourceError
from wamdata.sources import check_read_size

V2_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V2_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V3_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V3_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
VERSIONS = ("v2.0", "v2.1", "v3.0")
STANDARD_META = {"info.json", "episodes.jsonl", "tasks.jsonl", "episodes_stats.jsonl", "stats.json",
                 "tasks.parquet"}
MAX_META_BYTES = 256 * 1024   # extra meta files larger than this are listed, not copied per episode


class LayoutError(Exception):
    """Raised with (file, reason); the converter turns it into a SourceError."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def _json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise LayoutError(path, "missing") from None
    except ValueError as e:
        raise LayoutError(path, f"not valid JSON ({e})") from None


def _jsonl(path: str) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as e:
                        raise LayoutError(path, f"line {n}: not valid JSON ({e})") from None
    except FileNotFoundError:
        raise LayoutError(path, "missing") from None
    return rows


@dataclass
class LeRobotMeta:
    """A LeRobot dataset's metadata, read once per dataset folder."""

    root: str
    info: dict
    version: str
    episodes: dict[int, dict]            # episode_index -> its row (v3: without the stats/ columns)
    tasks: dict[int, str]
    extra: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def features(self) -> dict:
        return self.info.get("features") or {}

    @property
    def video_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") == "video"]

    def _chunk(self, ep: int) -> int:
        return ep // int(self.info.get("chunks_size") or 1000)

    def data_file(self, ep: int) -> str:
        row = self.episodes[ep]
        if self.version == "v3.0":
            rel = (self.info.get("data_path") or V3_DATA).format(
                chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"]))
        else:
            rel = (self.info.get("data_path") or V2_DATA).format(episode_chunk=self._chunk(ep), episode_index=ep)
        return os.path.join(self.root, rel)

    def video_file(self, ep: int, key: str) -> tuple[str, float] | None:
        """(path, start time in the file in s) of an episode's video, or None when the declared
        video has no file (real datasets ship such features)."""
        row = self.episodes[ep]
        template = self.info.get("video_path")
        if self.version == "v3.0":
            if row.get(f"videos/{key}/chunk_index") is None:
                return None
            rel = (template or V3_VIDEO).format(video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                                                file_index=int(row[f"videos/{key}/file_index"]))
            start = float(row.get(f"videos/{key}/from_timestamp") or 0.0)
        else:
            rel = (template or V2_VIDEO).format(episode_chunk=self._chunk(ep), video_key=key, episode_index=ep)
            start = 0.0
        path = os.path.join(self.root, rel)
        return (path, start) if os.path.isfile(path) else None

    def video_fps(self, key: str) -> float:
        f = self.features.get(key, {})
        vinfo = f.get("info") or f.get("video_info") or {}
        return float(vinfo.get("video.fps") or self.fps)


def is_dataset(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "meta", "info.json"))


def read_meta(root: str) -> LeRobotMeta:
    info_path = os.path.join(root, "meta", "info.json")
    info = _json(info_path)
    version = str(info.get("codebase_version", ""))
    if version not in VERSIONS:
        raise LayoutError(info_path, f"codebase_version {version!r}; this converter reads {', '.join(VERSIONS)}")
    if not info.get("fps") or float(info["fps"]) <= 0:
        raise LayoutError(info_path, f"key 'fps': must be a positive number, got {info.get('fps')!r}")
    if version == "v3.0":
        episodes, tasks = _v3_episodes(root), _v3_tasks(root)
    else:
        episodes = {int(r["episode_index"]): r for r in _jsonl(os.path.join(root, "meta", "episodes.jsonl"))}
        tasks_path = os.path.join(root, "meta", "tasks.jsonl")
        tasks = {int(r["task_index"]): str(r["task"]) for r in _jsonl(tasks_path)} if os.path.exists(tasks_path) else {}
    return LeRobotMeta(root, info, version, episodes, tasks, extra_meta(root))


def _v3_episodes(root: str) -> dict[int, dict]:
    import pyarrow.parquet as pq

    folder = os.path.join(root, "meta", "episodes")
    files = sorted(os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if n.endswith(".parquet"))
    if not files:
        raise LayoutError(folder, "no episode parquet files (meta/episodes/chunk-XXX/file-XXX.parquet)")
    out = {}
    for path in files:
        schema = pq.read_schema(path)
        cols = [c for c in schema.names if not c.startswith("stats/")]
        for row in pq.read_table(path, columns=cols).to_pylist():
            out[int(row["episode_index"])] = row
    return out


def _v3_tasks(root: str) -> dict[int, str]:
    import pyarrow.parquet as pq

    path = os.path.join(root, "meta", "tasks.parquet")
    if not os.path.exists(path):
        return {}
    t = pq.read_table(path)
    text = "task" if "task" in t.column_names else next(c for c in t.column_names if c != "task_index")
    return {int(i): str(s) for i, s in zip(t.column("task_index").to_pylist(), t.column(text).to_pylist())}


def extra_meta(root: str) -> dict:
    """Non-standard files under meta/: JSON content (parsed) for small ones, else their size."""
    folder = os.path.join(root, "meta")
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name in STANDARD_META or not os.path.isfile(path):
            continue
        size = os.path.getsize(path)
        if name.endswith((".json", ".jsonl")) and size <= MAX_META_BYTES:
            try:
                out[name] = _jsonl(path) if name.endswith(".jsonl") else _json(path)
                continue
            except LayoutError:
                pass
        out[name] = {"bytes": size}
    return out


def episode_rows(meta: LeRobotMeta, index: int) -> dict[str, np.ndarray]:
    """The episode's columns as numpy, rows in frame_index order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = meta.data_file(index)
    if not os.path.isfile(path):
        raise LayoutError(path, f"missing: the data file of episode {index}")
    try:
        footer = pq.read_metadata(path)
        # what decoding would allocate, as the footer declares it: a few kB of run-length-encoded
        # pages may decode to terabytes
        decoded = sum(footer.row_group(i).total_byte_size for i in range(footer.num_row_groups))
        check_read_size(path, "parquet row groups (uncompressed)", (decoded,), "u1")
        table = pq.read_table(path, filters=[("episode_index", "==", index)] if meta.version == "v3.0" else None)
    except SourceError as e:
        raise LayoutError(path, e.reason) from None
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise LayoutError(path, f"unreadable parquet ({type(e).__name__}: {e})") from None
    if table.num_rows == 0:
        raise LayoutError(path, f"key 'episode_index': no rows of episode {index}")
    if "frame_index" in table.column_names:
        table = table.sort_by("frame_index")
    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_struct(col.type):
            out[name] = np.array(col.to_pylist(), dtype=object)
        elif pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
            try:
                out[name] = np.stack([np.asarray(v) for v in col.to_numpy(zero_copy_only=False)])
            except ValueError:
                raise LayoutError(path, f"column {name!r}: rows of different lengths") from None
        elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            out[name] = np.array(col.to_pylist(), dtype=str)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def timestamps(cols: dict, fps: float) -> np.ndarray:
    """Seconds from the episode start: (frame_index - first) / fps when the timestamp column agrees
    with it within 1 ms (float32 precision; also when it starts at 1/fps while the video starts at 0),
    else the column less its first value."""
    T = len(next(iter(cols.values())))
    fi = cols.get("frame_index")
    ideal = (np.arange(T) if fi is None else fi.astype(np.int64) - int(fi[0])).astype(np.float64) / fps
    ts = cols.get("timestamp")
    if ts is None:
        return ideal
    rel = ts.astype(np.float64) - float(ts[0])
    if np.abs(rel - ideal).max() < 1e-3 or np.any(np.diff(rel) <= 0):
        return ideal
    return rel
