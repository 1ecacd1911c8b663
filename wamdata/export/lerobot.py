"""Export a wamdata dataset to the LeRobot v3.0 layout, as ``lerobot`` 0.4.x reads it.

Layout written (paths are LeRobot's own templates, also recorded in ``meta/info.json``)::

    meta/info.json                            codebase_version "v3.0", fps, totals, path templates, features
    meta/stats.json                           per-feature stats over the whole export
    meta/tasks.parquet                        task text (the index) -> task_index
    meta/episodes/chunk-000/file-000.parquet  one row per episode: length, tasks, where its frames and
                                              videos are, per-episode stats (``stats/<key>/<stat>``)
    data/chunk-XXX/file-XXX.parquet           one row per frame: index, episode_index, frame_index,
                                              timestamp, task_index, observation.state, action, extra.*
    videos/observation.images.<cam>/chunk-XXX/file-XXX.mp4   several episodes back to back

Feature mapping (wamdata -> LeRobot):

| wamdata | LeRobot |
|---|---|
| ``state.*`` (canonical order) | ``observation.state`` float32, concatenated, ``names`` per dimension |
| ``action.*`` (canonical order) | ``action`` float32, concatenated (absent when the source has none) |
| numeric / bool ``extra.*``, ``meta.*`` | the same key, flattened to one dimension |
| camera ``<cam>`` | ``observation.images.<cam>``, dtype ``video`` |
| step ``i`` | ``frame_index`` i, ``timestamp`` i / fps (LeRobot seeks video by it) |
| the episode's first task | ``task_index``; all of them in the episode row's ``tasks`` |

String features are left out (LeRobot has no per-frame strings), with a log line; so are features
some episodes lack (LeRobot has one feature set per dataset), with a warning, found before anything
is written. Statistics leave NaN/Inf out (``null`` where a dimension has none finite). The source
timestamps are not kept: LeRobot requires ``timestamp == frame_index / fps``.

Videos: an episode sits at integer frame offset ``k`` of its file and ``from_timestamp = k / fps``
exactly. Clips are concatenated by packet copy (:mod:`wamdata.export.mp4`) when they share codec, size
and decoder configuration; a clip at another size (LeRobot needs one shape per camera) or with
reordered frames is decoded and re-encoded with libx264. A new file starts at ``video_file_size_mb``
or when the stream parameters change.

The export is written to a temporary folder beside ``out_dir`` and renamed at the end, so ``out_dir``
exists whole or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import shutil
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import wamdata
from wamdata.export.source import ExportError, features_in_every_episode, open_selection
from wamdata.export.mp4 import Clip, Mp4Concat, open_clip
from wamdata.format import video
from wamdata.schema import CANONICAL

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
TASKS_PATH = "meta/tasks.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
IMAGE_KEY = "observation.images.{camera}"
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
# Data columns LeRobot itself defines, in the order we write them.
_DATA_INDEX_COLUMNS = ("index", "episode_index", "frame_index", "timestamp", "task_index")

# Names of the dimensions of canonical features, used when a Feature declares none.
_DEFAULT_NAMES = {
    "eef_pos": ("x", "y", "z"),
    "eef_rot": ("qx", "qy", "qz", "qw"),
    "eef_delta_pos": ("dx", "dy", "dz"),
    "eef_delta_rot": ("rx", "ry", "rz"),
    "gripper": ("gripper",),
    "ego_motion": ("dx", "dy", "dz", "rx", "ry", "rz"),
}


@dataclass
class _Column:
    """One LeRobot feature built from one or more wamdata step columns."""

    key: str
    dtype: str
    sources: list[tuple[str, int]] = field(default_factory=list)  # (wamdata name, flattened width)
    names: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return sum(w for _, w in self.sources)

    def info(self) -> dict:
        return {"dtype": self.dtype, "shape": [self.width], "names": self.names}


def _dim_names(feat) -> list[str]:
    short = feat.name.split(".", 1)[1]
    width = int(np.prod(feat.shape)) if feat.shape else 1
    if feat.names is not None and len(feat.names) == width:
        names = list(feat.names)
    elif short in _DEFAULT_NAMES and len(_DEFAULT_NAMES[short]) == width:
        names = list(_DEFAULT_NAMES[short])
    else:
        names = [str(i) for i in range(width)] if width > 1 else []
    return [n if n == short else f"{short}.{n}" for n in names] if names else [short]


def _canonical_order(names) -> list[str]:
    canon = list(CANONICAL)
    return sorted(names, key=lambda n: (canon.index(n) if n in canon else len(canon), n))


def plan_columns(features: dict) -> tuple[list[_Column], list[str]]:
    """LeRobot data columns for a dataset's features, and the wamdata features left out (strings)."""
    cols: list[_Column] = []
    skipped: list[str] = []
    for prefix, key in (("state.", "observation.state"), ("action.", "action")):
        names = _canonical_order(n for n in features if n.startswith(prefix))
        if names:
            col = _Column(key, "float32")
            for n in names:
                col.sources.append((n, int(np.prod(features[n].shape)) if features[n].shape else 1))
                col.names.extend(_dim_names(features[n]))
            cols.append(col)
    for n in sorted(features):
        if n.startswith(("state.", "action.")):
            continue
        dt = np.dtype(features[n].dtype) if features[n].dtype not in ("string", "str") else None
        if dt is None or dt.kind not in "biuf":
            skipped.append(n)
            continue
        dtype = "bool" if dt.kind == "b" else dt.name
        width = int(np.prod(features[n].shape)) if features[n].shape else 1
        col = _Column(n, dtype, [(n, width)], _dim_names(features[n]))
        cols.append(col)
    return cols, skipped


# ---------------------------------------------------------------- statistics (LeRobot's stats layout)

_FINITE = "_finite_count"   # kept for merging, not written: LeRobot's layout has "count" (frames) only


def _stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """min/max/mean/std/count/quantiles over axis 0 of (N, D) values; LeRobot's per-episode layout.
    NaN/Inf are left out, as ``wamdata stats`` does (a dimension with none finite: NaN)."""
    v = values.astype(np.float64)
    count = np.array([len(v)], dtype=np.int64)
    if np.isfinite(v).all():
        out = {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0), "count": count}
        for k, q in QUANTILES.items():
            out[k] = np.quantile(v, q, axis=0)
        return out
    finite = np.isfinite(v)
    v = np.where(finite, v, np.nan)
    with warnings.catch_warnings():   # all-NaN dimensions give NaN, which is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"min": np.nanmin(v, 0), "max": np.nanmax(v, 0), "mean": np.nanmean(v, 0), "std": np.nanstd(v, 0),
               "count": count, _FINITE: finite.sum(0)}
        for k, q in QUANTILES.items():
            out[k] = np.nanquantile(v, q, axis=0)
    return out


def _image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats of (n, H, W, 3) uint8 frames in [0, 1], shaped (3, 1, 1) like LeRobot's."""
    px = frames.reshape(-1, 3).astype(np.float64) / 255.0
    s = _stats(px)
    return {k: (v if k == "count" else v.reshape(3, 1, 1)) for k, v in s.items()} | {
        "count": np.array([len(frames)], dtype=np.int64)}


def aggregate_stats(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Merge per-episode stats: exact min/max/mean/std (pooled variance), count-weighted quantiles
    (LeRobot's own approximation)."""
    counts = np.array([p["count"][0] for p in parts], dtype=np.float64)
    # per dimension, the values each part's statistics were taken over (frames, less NaN/Inf)
    wb = np.stack([np.broadcast_to(p.get(_FINITE, p["count"][0]), np.shape(p["mean"])) for p in parts]).astype(np.float64)

    def weighted(values):   # count-weighted over the parts where the value is finite
        ok = np.isfinite(values)
        w = np.where(ok, wb, 0.0)
        total = w.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, (w * np.where(ok, values, 0.0)).sum(0) / total, np.nan)

    means = np.stack([p["mean"] for p in parts])
    mean = weighted(means)
    var = weighted(np.stack([p["std"] for p in parts]) ** 2 + (means - mean) ** 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"min": np.nanmin(np.stack([p["min"] for p in parts]), 0),
               "max": np.nanmax(np.stack([p["max"] for p in parts]), 0),
               "mean": mean, "std": np.sqrt(var), "count": np.array([int(counts.sum())], dtype=np.int64)}
    for k in QUANTILES:
        out[k] = weighted(np.stack([p[k] for p in parts]))
    return out


def _jsonable(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    """Nested lists, NaN as null (strict JSON has no NaN)."""
    def clean(x):
        if isinstance(x, list):
            return [clean(v) for v in x]
        return None if isinstance(x, float) and not np.isfinite(x) else x
    return {key: {k: clean(np.asarray(v).tolist()) for k, v in s.items()} for key, s in stats.items()}


# ---------------------------------------------------------------- validation before writing anything

def _check_dataset(ds, cameras: Sequence[str] | None) -> tuple[int, list[str]]:
    idx = ds.episodes
    if idx.num_rows == 0:
        raise ExportError(f"{ds.url}: the dataset has no episodes; nothing to export")
    ids = idx.column("episode_id").to_pylist()
    fpss = idx.column("fps").to_pylist()
    if len(set(fpss)) != 1:
        by = Counter(fpss)
        odd = next(i for i, f in zip(ids, fpss) if f != by.most_common(1)[0][0])
        raise ExportError(f"{ds.url}: episodes have different fps ({dict(by)}, e.g. {odd!r}); LeRobot "
                          f"stores one fps per dataset: export a curated view with one fps")
    fps = float(fpss[0])
    if abs(fps - round(fps)) > 1e-9:
        raise ExportError(f"{ds.url}: fps {fps} is not an integer; LeRobot v3.0 stores an integer fps")
    ep_cams = [set(c or []) for c in idx.column("cameras").to_pylist()]
    known = sorted(set().union(*ep_cams))
    if cameras is None:
        cameras = known
    cameras = list(dict.fromkeys(cameras))   # a camera named twice is one camera
    unknown = [c for c in cameras if c not in known]
    if unknown:
        raise ExportError(f"{ds.url}: unknown camera(s) {', '.join(unknown)}; "
                          f"the dataset has: {', '.join(known) or 'none'}")
    for cam in cameras:
        missing = [i for i, c in zip(ids, ep_cams) if cam not in c]
        if missing:
            raise ExportError(
                f"{ds.url}: camera {cam!r} is missing in {len(missing)} of {len(ids)} episodes "
                f"(e.g. {missing[0]!r}); LeRobot needs every camera in every episode: pass --cameras "
                f"with cameras all episodes have, or export a view without those episodes")
    return int(round(fps)), list(cameras)


def _file_index(n: int, chunks_size: int) -> dict[str, int]:
    return {"chunk_index": n // chunks_size, "file_index": n % chunks_size}


# ---------------------------------------------------------------- the export

@dataclass
class _CameraOut:
    """The open video file of one camera and where its episodes went."""

    key: str
    width: int
    height: int
    file_no: int = -1
    current: Mp4Concat | None = None
    codec: str | None = None
    reencoded: int = 0


class _DataOut:
    """The open data parquet file; rolls to a new file at ``limit_mb`` (in-memory Arrow size)."""

    def __init__(self, root: Path, schema: pa.Schema, chunks_size: int, limit_mb: float):
        self.root, self.schema, self.chunks_size = root, schema, chunks_size
        self.limit = limit_mb * 1024 * 1024
        self.file_no, self.size, self.writer = -1, 0, None

    def write(self, table: pa.Table) -> dict[str, int]:
        if self.writer is None or (self.size and self.size + table.nbytes > self.limit):
            self.close()
            self.file_no += 1
            path = self.root / DATA_PATH.format(**_file_index(self.file_no, self.chunks_size))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer, self.size = pq.ParquetWriter(str(path), self.schema, compression="snappy"), 0
        self.writer.write_table(table)
        self.size += table.nbytes
        return _file_index(self.file_no, self.chunks_size)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _arrow_column(values: np.ndarray, col: _Column) -> pa.Array:
    values = values.astype(np.bool_ if col.dtype == "bool" else col.dtype, copy=False)
    if _is_scalar(col):
        return pa.array(values.reshape(-1))
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, col.width)


def _is_scalar(col: _Column) -> bool:
    return col.width == 1 and col.key not in ("observation.state", "action")


def _schema(cols: list[_Column]) -> pa.Schema:
    fields = [pa.field(k, pa.float32() if k == "timestamp" else pa.int64()) for k in _DATA_INDEX_COLUMNS]
    for c in cols:
        t = pa.bool_() if c.dtype == "bool" else pa.from_numpy_dtype(np.dtype(c.dtype))
        fields.append(pa.field(c.key, t if _is_scalar(c) else pa.list_(t, c.width)))
    return pa.schema(fields)


def _sample_indices(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(int))


def export_lerobot(
    dataset_path: str,
    out_dir: str,
    cameras: Sequence[str] | None = None,
    repo_id: str = "wamdata/export",
    *,
    robot_type: str | None = None,
    chunks_size: int = 1000,
    data_files_size_in_mb: float = 100,
    video_files_size_in_mb: float = 200,
    image_stats_frames: int = 20,
    crf: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Write ``dataset_path`` (a wamdata dataset, or a view / manifest of one) as a LeRobot v3.0
    dataset in ``out_dir``.

    ``cameras`` picks cameras (all by default; each must be in every episode). ``robot_type`` defaults
    to the embodiment when there is one. ``image_stats_frames`` frames per episode and camera are
    decoded for the image stats (0 skips image stats). ``crf`` is the libx264 quality for clips that
    must be re-encoded. Returns ``out_dir``. ``repo_id`` is recorded for the dataset card only: open the
    result with ``LeRobotDataset(repo_id, root=out_dir)``.
    """
    from tqdm.auto import tqdm

    ds = open_selection(dataset_path)
    fps, cams = _check_dataset(ds, cameras)
    out = Path(out_dir)
    if "://" not in str(ds.url):
        src, dst = os.path.realpath(ds.url), os.path.realpath(out)
        if src == dst or src.startswith(dst + os.sep) or dst.startswith(src + os.sep):
            raise ExportError(f"{out}: the export would overlap the dataset {dataset_path}; choose a folder outside it")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"{out}: exists and is not empty; pass overwrite=True (--overwrite) or another --output")
        if not (out / "meta" / "info.json").is_file():
            raise ExportError(f"{out}: not a LeRobot dataset (no meta/info.json); refusing to delete it for --overwrite")
    cols, skipped = plan_columns(features_in_every_episode(ds, "lerobot"))
    for name in skipped:
        log.info("lerobot export: feature %s is not numeric; left out", name)
    index = ds.episodes
    if robot_type is None:
        embodiments = sorted(set(index.column("embodiment").to_pylist()))
        robot_type = embodiments[0] if len(embodiments) == 1 else None

    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        _write(ds, tmp, fps, cams, cols, repo_id, robot_type, chunks_size, data_files_size_in_mb,
               video_files_size_in_mb, image_stats_frames, crf, tqdm(total=index.num_rows, unit="episode",
                                                                      desc="lerobot export", disable=not progress))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(out)


def _write(ds, root: Path, fps: int, cams: list[str], cols: list[_Column], repo_id: str,
           robot_type: str | None, chunks_size: int, data_mb: float, video_mb: float,
           image_stats_frames: int, crf: int | None, bar) -> None:
    data = _DataOut(root, _schema(cols), chunks_size, data_mb)
    cam_out = {c: _CameraOut(IMAGE_KEY.format(camera=c), ds.cameras[c]["width"], ds.cameras[c]["height"])
               for c in cams}
    tasks: dict[str, int] = {}
    rows: list[dict] = []
    ep_stats: list[dict[str, dict]] = []
    total = 0
    try:
        for ep_index, ep in enumerate(ds.iter_episodes()):
            T = ep.num_steps
            ep_tasks = [str(t) for t in ep.meta.get("tasks") or []] or [""]
            for t in ep_tasks:
                tasks.setdefault(t, len(tasks))
            task_index = tasks[ep_tasks[0]]   # a frame has one task_index: the episode's first task
            frame_index = np.arange(T, dtype=np.int64)
            arrays = {
                "index": np.arange(total, total + T, dtype=np.int64),
                "episode_index": np.full(T, ep_index, dtype=np.int64),
                "frame_index": frame_index,
                "timestamp": (frame_index / fps).astype(np.float32),
                "task_index": np.full(T, task_index, dtype=np.int64),
            }
            for col in cols:
                parts = []
                for name, width in col.sources:   # every episode has them (features_in_every_episode)
                    parts.append(np.asarray(ep.array(name)).reshape(T, width))
                arrays[col.key] = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
            table = pa.table([pa.array(arrays[k]) for k in _DATA_INDEX_COLUMNS]
                             + [_arrow_column(arrays[c.key], c) for c in cols], schema=data.schema)
            where = data.write(table)
            row = {"episode_index": ep_index, "tasks": ep_tasks, "length": T,
                   "data/chunk_index": where["chunk_index"], "data/file_index": where["file_index"],
                   "dataset_from_index": total, "dataset_to_index": total + T}
            stats = {k: _stats(np.asarray(v, dtype=np.float64).reshape(T, -1)) for k, v in arrays.items()}
            for cam in cams:
                row.update(_export_camera(ep, cam, cam_out[cam], root, fps, chunks_size, video_mb,
                                          image_stats_frames, crf, stats))
            row["wamdata/episode_id"] = ep.episode_id
            rows.append(row)
            ep_stats.append(stats)
            total += T
            bar.update(1)
    finally:
        data.close()
        for co in cam_out.values():
            if co.current is not None:
                co.current.close()
        bar.close()

    _write_meta(root, rows, ep_stats, tasks, cols, cam_out, fps, total, repo_id, robot_type,
                chunks_size, data_mb, video_mb)


def _export_camera(ep, cam: str, co: _CameraOut, root: Path, fps: int, chunks_size: int,
                   video_mb: float, image_stats_frames: int, crf: int | None, stats: dict) -> dict:
    where = f"{ep.where} camera {cam!r}"
    T = ep.num_steps
    clip = open_clip(ep.video_bytes(cam), where)
    frames_for_stats = None
    sample = _sample_indices(T, image_stats_frames) if image_stats_frames > 0 else np.zeros(0, int)
    try:
        if clip.reordered or clip.signature.size != (co.width, co.height):
            clip.close()
            frames = list(ep.iter_frames(cam))
            frames_for_stats = np.stack([frames[i] for i in sample]) if len(sample) else None
            data, n, _ = video.encode_video(frames, fps, "h264", crf, size=(co.width, co.height), gop=30)
            clip = open_clip(data, where)
            co.reencoded += 1
        if clip.num_frames != T:
            raise ExportError(f"{where}: {clip.num_frames} video frames for {T} steps")
        if co.current is None or not co.current.accepts(clip) or (
                co.current.num_frames and co.current.num_bytes + sum(p.size for p in clip.packets)
                > video_mb * 1024 * 1024):
            if co.current is not None:
                co.current.close()
            co.file_no += 1
            path = root / VIDEO_PATH.format(video_key=co.key, **_file_index(co.file_no, chunks_size))
            co.current = Mp4Concat(path, fps)
        start = co.current.append(clip)
        co.codec = co.codec or clip.signature.codec
    finally:
        clip.close()
    if len(sample):
        if frames_for_stats is None:
            wanted = set(sample.tolist())
            frames_for_stats = np.stack([f for i, f in enumerate(ep.iter_frames(cam, 0, int(sample[-1]) + 1))
                                         if i in wanted])
        stats[co.key] = _image_stats(_downsample(frames_for_stats))
    loc = _file_index(co.file_no, chunks_size)
    return {f"videos/{co.key}/chunk_index": loc["chunk_index"],
            f"videos/{co.key}/file_index": loc["file_index"],
            f"videos/{co.key}/from_timestamp": start / fps,
            f"videos/{co.key}/to_timestamp": (start + T) / fps}


def _downsample(frames: np.ndarray, target: int = 150) -> np.ndarray:
    """Stride frames down to about ``target`` pixels on the short side (stats need no full frames)."""
    step = max(1, min(frames.shape[1], frames.shape[2]) // target)
    return frames[:, ::step, ::step]


def _write_meta(root: Path, rows: list[dict], ep_stats: list[dict], tasks: dict[str, int],
                cols: list[_Column], cam_out: dict[str, _CameraOut], fps: int, total: int, repo_id: str,
                robot_type: str | None, chunks_size: int, data_mb: float, video_mb: float) -> None:
    import pandas as pd

    features: dict[str, dict] = {}
    for co in cam_out.values():
        features[co.key] = {
            "dtype": "video", "shape": [co.height, co.width, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": co.height, "video.width": co.width, "video.codec": co.codec,
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": 3, "has_audio": False}}
    for c in cols:
        features[c.key] = c.info()
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        features[k] = {"dtype": "int64", "shape": [1], "names": None}

    stat_keys = [k for k in features if k in ep_stats[0]]
    for row, st in zip(rows, ep_stats):
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
        for key in stat_keys:
            for name, v in st[key].items():
                if name != _FINITE:
                    row[f"stats/{key}/{name}"] = np.asarray(v).tolist()
    ep_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), ep_path, compression="snappy")

    order = sorted(tasks, key=tasks.get)
    pd.DataFrame({"task_index": [tasks[t] for t in order]}, index=order).to_parquet(root / TASKS_PATH)

    stats = {key: aggregate_stats([st[key] for st in ep_stats]) for key in stat_keys}
    (root / STATS_PATH).write_text(json.dumps(_jsonable(stats), indent=2, allow_nan=False))

    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(rows),
        "total_frames": total,
        "total_tasks": len(tasks),
        "chunks_size": chunks_size,
        "data_files_size_in_mb": data_mb,
        "video_files_size_in_mb": video_mb,
        "fps": fps,
        "splits": {"train": f"0:{len(rows)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if cam_out else None,
        "features": features,
        "wamdata": {"repo_id": repo_id, "exported_by": f"wamdata {wamdata.__version__}",
                    "reencoded_episodes": {co.key: co.reencoded for co in cam_out.values()}},
    }
    (root / INFO_PATH).write_text(json.dumps(info, indent=4, ensure_ascii=False))
