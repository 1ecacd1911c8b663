"""The data and video files of a LeRobot v3.0 export, written in groups that resume
(:mod:`wamdata.export.lerobot` plans the columns and writes ``meta/``).

LeRobot v3.0 concatenates episodes into files (``data/chunk-XXX/file-XXX.parquet``, one MP4 per
camera and file) that are only complete when closed: an MP4's index is written last. So the data file
and every camera's video file roll over *together*, before the episode that would take any of them
past its limit (``data_files_size_in_mb`` in Arrow bytes, ``video_files_size_in_mb`` in packet
bytes) or whose clip cannot be stream-copied onto the open video (other stream parameters). Files of
group ``g`` are ``file_index`` ``g`` (chunk ``g // chunks_size``) for data and video alike, and a
roll-over is a point where every file written is complete: the group's episode rows and per-episode
stats go to ``.wamdata-export/group-GGGGG.json`` and the resume record (:class:`ExportProgress`) gets
the group (episodes, frames) with the task table and counters so far. A re-run with the same settings
rewrites the unfinished group's files from its first episode and continues; ``meta/`` is built from
the group records at the end, so a resumed export equals an uninterrupted one.

Clips: a whole episode's clip is stream-copied (:mod:`wamdata.export.mp4`) when its codec, size and
decoder configuration match; a clip at another size (LeRobot needs one shape per camera), with
reordered frames, or a view's cut of an episode (packets start at key frames, a kept range need not)
is decoded and re-encoded with libx264.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wamdata.export.lerobot_stats import column_stats, downsample, image_stats, sample_indices
from wamdata.export.mp4 import Mp4Concat, open_clip
from wamdata.export.source import PROGRESS_DIR, ExportError, ExportProgress
from wamdata.format import video

CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
IMAGE_KEY = "observation.images.{camera}"
GROUP_RECORD = PROGRESS_DIR + "/group-{group:05d}.json"
# Data columns LeRobot itself defines, in the order we write them.
DATA_INDEX_COLUMNS = ("index", "episode_index", "frame_index", "timestamp", "task_index")


def file_index(n: int, chunks_size: int) -> dict[str, int]:
    return {"chunk_index": n // chunks_size, "file_index": n % chunks_size}


def is_scalar(col) -> bool:
    return col.width == 1 and col.key not in ("observation.state", "action")


def data_schema(cols) -> pa.Schema:
    fields = [pa.field(k, pa.float32() if k == "timestamp" else pa.int64()) for k in DATA_INDEX_COLUMNS]
    for c in cols:
        t = pa.bool_() if c.dtype == "bool" else pa.from_numpy_dtype(np.dtype(c.dtype))
        fields.append(pa.field(c.key, t if is_scalar(c) else pa.list_(t, c.width)))
    return pa.schema(fields)


def _arrow_column(values: np.ndarray, col) -> pa.Array:
    values = values.astype(np.bool_ if col.dtype == "bool" else col.dtype, copy=False)
    if is_scalar(col):
        return pa.array(values.reshape(-1))
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, col.width)


@dataclass
class CameraOut:
    """One camera's open video file and what its episodes were (codec, how many re-encoded)."""

    key: str
    width: int
    height: int
    current: Mp4Concat | None = None
    codec: str | None = None
    reencoded: int = 0


class GroupWriter:
    """Appends episodes (:class:`wamdata.export.source.Part`) to the open group's files; rolls over and
    records finished groups in ``rec`` (see the module docstring). Restores its counters from ``rec``."""

    def __init__(self, root: Path, rec: ExportProgress, sel, fps: int, cams: list[str], cols, *, chunks_size: int,
                 data_mb: float, video_mb: float, image_stats_frames: int, crf: int | None):
        self.root, self.rec, self.fps, self.cols = root, rec, fps, cols
        self.chunks_size, self.stats_frames, self.crf = chunks_size, image_stats_frames, crf
        self.data_limit, self.video_limit = data_mb * 1024 * 1024, video_mb * 1024 * 1024
        self.schema = data_schema(cols)
        st = rec.state
        self.group = len(rec.done)
        self.episodes = sum(g["episodes"] for g in rec.done)
        self.total = rec.done[-1]["frames"] if rec.done else 0
        self.tasks: dict[str, int] = dict(st.get("tasks", {}))
        self.cams = {}
        for c in cams:
            key = IMAGE_KEY.format(camera=c)
            self.cams[c] = CameraOut(key, sel.cameras[c]["width"], sel.cameras[c]["height"],
                                     codec=st.get("codecs", {}).get(key), reencoded=st.get("reencoded", {}).get(key, 0))
        self.rows: list[dict] = []    # the open group's episodes
        self.stats: list[dict] = []
        self.data, self.data_bytes = None, 0

    def add(self, part) -> None:
        T = part.num_steps
        ep_tasks = [str(t) for t in part.meta.get("tasks") or []] or [""]
        # (a roll-over below records these with the group before: the same first ones a resume adds)
        for t in ep_tasks:
            self.tasks.setdefault(t, len(self.tasks))
        frame_index = np.arange(T, dtype=np.int64)
        arrays = {
            "index": np.arange(self.total, self.total + T, dtype=np.int64),
            "episode_index": np.full(T, self.episodes, dtype=np.int64),
            "frame_index": frame_index,
            "timestamp": (frame_index / self.fps).astype(np.float32),
            "task_index": np.full(T, self.tasks[ep_tasks[0]], dtype=np.int64),   # a frame has one: the first
        }
        for col in self.cols:   # every episode has the sources (features_in_every_episode)
            parts = [np.asarray(part.array(name)).reshape(T, width) for name, width in col.sources]
            arrays[col.key] = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
        table = pa.table([pa.array(arrays[k]) for k in DATA_INDEX_COLUMNS]
                         + [_arrow_column(arrays[c.key], c) for c in self.cols], schema=self.schema)
        clips = {}
        try:
            for cam, co in self.cams.items():
                clips[cam] = self._clip(part, cam, co)
            if self.rows and (self.data_bytes + table.nbytes > self.data_limit or any(
                    not co.current.accepts(clips[c][0])
                    or co.current.num_bytes + sum(p.size for p in clips[c][0].packets) > self.video_limit
                    for c, co in self.cams.items())):
                self.roll()
            self._write(part, table, arrays, clips, ep_tasks)
        finally:
            for clip, _ in clips.values():
                clip.close()

    def _clip(self, part, cam: str, co: CameraOut):
        """The clip to append for one camera, and the frames for its image stats when decoded already."""
        where = f"{part.where} camera {cam!r}"
        if part.whole:
            clip = open_clip(part.ep.video_bytes(cam), where)
            if not clip.reordered and clip.signature.size == (co.width, co.height):
                return clip, None
            clip.close()
        frames = list(part.iter_frames(cam))
        data, _, _ = video.encode_video(frames, self.fps, "h264", self.crf, size=(co.width, co.height), gop=30)
        return open_clip(data, where), np.stack(frames)

    def _write(self, part, table: pa.Table, arrays: dict, clips: dict, ep_tasks: list[str]) -> None:
        T = part.num_steps
        loc = file_index(self.group, self.chunks_size)
        if self.data is None:
            path = self.root / DATA_PATH.format(**loc)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.data, self.data_bytes = pq.ParquetWriter(str(path), self.schema, compression="snappy"), 0
        self.data.write_table(table)
        self.data_bytes += table.nbytes
        row = {"episode_index": self.episodes, "tasks": ep_tasks, "length": T,
               "data/chunk_index": loc["chunk_index"], "data/file_index": loc["file_index"],
               "dataset_from_index": self.total, "dataset_to_index": self.total + T}
        stats = {k: column_stats(np.asarray(v, dtype=np.float64).reshape(T, -1)) for k, v in arrays.items()}
        for cam, co in self.cams.items():
            clip, frames = clips[cam]
            co.reencoded += frames is not None   # counted here, once the episode is in the group
            if clip.num_frames != T:
                raise ExportError(f"{part.where} camera {cam!r}: {clip.num_frames} video frames for {T} steps")
            if co.current is None:
                co.current = Mp4Concat(self.root / VIDEO_PATH.format(video_key=co.key, **loc), self.fps)
            start = co.current.append(clip)
            co.codec = co.codec or clip.signature.codec
            sample = sample_indices(T, self.stats_frames) if self.stats_frames > 0 else []
            if len(sample):
                if frames is None:
                    wanted = set(sample.tolist())
                    frames = np.stack([f for i, f in enumerate(part.iter_frames(cam, 0, int(sample[-1]) + 1))
                                       if i in wanted])
                else:
                    frames = frames[sample]
                stats[co.key] = image_stats(downsample(frames))
            row.update({f"videos/{co.key}/chunk_index": loc["chunk_index"],
                        f"videos/{co.key}/file_index": loc["file_index"],
                        f"videos/{co.key}/from_timestamp": start / self.fps,
                        f"videos/{co.key}/to_timestamp": (start + T) / self.fps})
        row.update({"wamdata/episode_id": part.episode_id, "wamdata/from_step": part.start,
                    "wamdata/to_step": part.stop})
        self.rows.append(row)
        self.stats.append(stats)
        self.episodes += 1
        self.total += T

    def roll(self) -> None:
        """Close the open group's files and record the group (nothing to do when it has no episode)."""
        self.close()
        if not self.rows:
            return
        path = self.root / GROUP_RECORD.format(group=self.group)
        path.parent.mkdir(parents=True, exist_ok=True)
        stats = [{k: {n: np.asarray(v).tolist() for n, v in s.items()} for k, s in st.items()} for st in self.stats]
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rows": self.rows, "stats": stats}))
        os.replace(tmp, path)
        self.rec.save(done=self.rec.done + [{"group": self.group, "episodes": len(self.rows), "frames": self.total}],
                      tasks=self.tasks, codecs={co.key: co.codec for co in self.cams.values()},
                      reencoded={co.key: co.reencoded for co in self.cams.values()})
        self.group += 1
        self.rows, self.stats = [], []

    def close(self) -> None:
        if self.data is not None:
            self.data.close()
            self.data = None
        for co in self.cams.values():
            if co.current is not None:
                co.current.close()
                co.current = None


def read_groups(root: Path, rec: ExportProgress) -> tuple[list[dict], list[dict]]:
    """Every finished group's episode rows and per-episode stats (as arrays), in order."""
    rows, stats = [], []
    for g in rec.done:
        doc = json.loads((root / GROUP_RECORD.format(group=g["group"])).read_text())
        rows += doc["rows"]
        stats += [{k: {n: np.asarray(v) for n, v in s.items()} for k, s in st.items()} for st in doc["stats"]]
    return rows, stats
