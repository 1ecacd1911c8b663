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
and decoder configuration, else re-encoded; the data file and the video files roll over together
(:mod:`wamdata.export.lerobot_writer`), at ``data_files_size_in_mb`` / ``video_files_size_in_mb`` or
when the stream parameters change.

Views: each kept step range of a view's ``keep_steps`` is its own LeRobot episode (a LeRobot episode
is contiguous in time), its frames re-encoded; every episode row names its source,
``wamdata/episode_id`` with ``wamdata/from_step`` / ``wamdata/to_step`` (the stored steps it holds).

Resume: ``out_dir/.wamdata-export/progress.json`` records each finished group of files; a re-run with
the same arguments continues from the last complete file and writes the same export an uninterrupted
run writes. ``meta/`` is written last: a folder without ``meta/info.json`` is not finished.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import wamdata
from wamdata.export.lerobot_stats import FINITE, aggregate_stats, jsonable
from wamdata.export.lerobot_writer import DATA_PATH, GROUP_RECORD, PROGRESS_DIR, VIDEO_PATH, GroupWriter, read_groups
from wamdata.export.source import (ExportError, ExportProgress, check_output, features_in_every_episode,
                                   open_selection, progress_bar)
from wamdata.schema import CANONICAL

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
TASKS_PATH = "meta/tasks.parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"

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


# ---------------------------------------------------------------- validation before writing anything

def _check_dataset(ds, cameras: Sequence[str] | None) -> tuple[int, list[str]]:
    idx = ds.episodes
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


def _is_export(out: Path) -> bool:
    return (out / PROGRESS_DIR).is_dir() or (out / INFO_PATH).is_file()


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
    dataset in ``out_dir``; resumes an unfinished export of the same arguments.

    ``cameras`` picks cameras (all by default; each must be in every episode). ``robot_type`` defaults
    to the embodiment when there is one. ``image_stats_frames`` frames per episode and camera are
    decoded for the image stats (0 skips image stats). ``crf`` is the libx264 quality for clips that
    must be re-encoded. Returns ``out_dir``. ``repo_id`` is recorded for the dataset card only: open the
    result with ``LeRobotDataset(repo_id, root=out_dir)``.
    """
    sel = open_selection(dataset_path)
    fps, cams = _check_dataset(sel, cameras)
    out = Path(out_dir)
    check_output(sel.url, out, _is_export, overwrite)
    cols, skipped = plan_columns(features_in_every_episode(sel, "lerobot"))
    for name in skipped:
        log.info("lerobot export: feature %s is not numeric; left out", name)
    if robot_type is None:
        embodiments = sorted(set(sel.episodes.column("embodiment").to_pylist()))
        robot_type = embodiments[0] if len(embodiments) == 1 else None
    sizes = {"chunks_size": chunks_size, "data_files_size_in_mb": data_files_size_in_mb,
             "video_files_size_in_mb": video_files_size_in_mb}
    rec = ExportProgress(out, "lerobot", {
        "source": str(dataset_path), "selection": sel.digest, "episodes": sel.num_parts, "cameras": cams,
        "repo_id": repo_id, "robot_type": robot_type, "image_stats_frames": image_stats_frames, "crf": crf, **sizes})
    out.mkdir(parents=True, exist_ok=True)
    writer = GroupWriter(out, rec, sel, fps, cams, cols, chunks_size=chunks_size, data_mb=data_files_size_in_mb,
                         video_mb=video_files_size_in_mb, image_stats_frames=image_stats_frames, crf=crf)
    bar = progress_bar(sel.num_parts, "lerobot export", progress, initial=writer.episodes)
    try:
        for part in sel.iter_episodes(skip=writer.episodes):
            writer.add(part)
            bar.update(1)
        writer.roll()
    finally:
        writer.close()
        bar.close()
    rows, ep_stats = read_groups(out, rec)
    _write_meta(out, rows, ep_stats, writer, fps, repo_id, robot_type, sizes)
    for g in rec.done:   # in meta/ now; the resume record alone says the export is finished
        (out / GROUP_RECORD.format(group=g["group"])).unlink()
    rec.finish()
    return str(out)


def _write_meta(root: Path, rows: list[dict], ep_stats: list[dict], writer: GroupWriter, fps: int,
                repo_id: str, robot_type: str | None, sizes: dict) -> None:
    import pandas as pd

    features: dict[str, dict] = {}
    cam_out = list(writer.cams.values())
    for co in cam_out:
        features[co.key] = {
            "dtype": "video", "shape": [co.height, co.width, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": co.height, "video.width": co.width, "video.codec": co.codec,
                     "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                     "video.channels": 3, "has_audio": False}}
    for c in writer.cols:
        features[c.key] = c.info()
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        features[k] = {"dtype": "int64", "shape": [1], "names": None}

    stat_keys = [k for k in features if k in ep_stats[0]]
    for row, st in zip(rows, ep_stats):
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
        for key in stat_keys:
            for name, v in st[key].items():
                if name != FINITE:
                    row[f"stats/{key}/{name}"] = np.asarray(v).tolist()
    ep_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), ep_path, compression="snappy")

    tasks = writer.tasks
    order = sorted(tasks, key=tasks.get)
    pd.DataFrame({"task_index": [tasks[t] for t in order]}, index=order).to_parquet(root / TASKS_PATH)

    stats = {key: aggregate_stats([st[key] for st in ep_stats]) for key in stat_keys}
    (root / STATS_PATH).write_text(json.dumps(jsonable(stats), indent=2, allow_nan=False))

    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": len(rows),
        "total_frames": writer.total,
        "total_tasks": len(tasks),
        **sizes,
        "fps": fps,
        "splits": {"train": f"0:{len(rows)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if cam_out else None,
        "features": features,
        "wamdata": {"repo_id": repo_id, "exported_by": f"wamdata {wamdata.__version__}",
                    "reencoded_episodes": {co.key: co.reencoded for co in cam_out}},
    }
    (root / INFO_PATH).write_text(json.dumps(info, indent=4, ensure_ascii=False))
