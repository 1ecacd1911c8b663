"""Episodes -> webdataset-compatible tar shards.

One sample per episode, key = :func:`layout.episode_key`: ``<key>.json`` (metadata),
``<key>.steps.parquet`` (the steps table), ``<key>.<camera>.mp4`` (one video per camera).
Tar headers carry no time, owner or mode of the writing machine, so the same episodes give
byte-identical shards. A shard is written under a temporary name; :mod:`wamdata.format.index` renames
it when the driver commits it, so a shard either exists whole or not at all.

Checksums are taken from the member bytes in memory as each episode is encoded: one CRC32 per member
(the index's ``member_crc32``, what ``validate --deep`` checks) and the episode's CRC32 over all its
members (``crc32``), combined from the members' (:func:`crc32_combine`) rather than a second pass.
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wamdata import __version__
from wamdata.errors import FormatError, OutputError
from wamdata.format import layout, video
from wamdata.format.checksum import crc32_combine
from wamdata.format.spool import EncodedSpool
from wamdata.schema import Episode, declaration_conflict, validate


@dataclass(frozen=True)
class VideoOptions:
    codec: str = "h264"                      # h264 | av1 | copy
    resolution: tuple[int, int] | None = None  # (width, height)
    crf: int | None = None
    fast_decode: bool = False                # h264: x264 tune=fastdecode (see video.encode_video)


def steps_table(episode: Episode) -> pa.Table:
    """The steps as an Arrow table: scalar features as plain columns, others as fixed-size lists of
    the flattened per-step values (the shape is recorded in the Feature)."""
    cols, names = [], []
    for name, values in episode.steps.items():
        values = np.asarray(values)
        if values.ndim == 1:
            cols.append(pa.array(values))
        else:
            width = int(np.prod(values.shape[1:]))
            flat = pa.array(np.ascontiguousarray(values).reshape(-1))
            cols.append(pa.FixedSizeListArray.from_arrays(flat, width))
        names.append(name)
    return pa.table(cols, names=names)


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _as_list(a):
    return None if a is None else np.asarray(a, dtype=np.float64).tolist()


def encode_camera(episode: Episode, name: str, opts: VideoOptions) -> tuple[bytes, dict]:
    """The MP4 bytes of one camera and its metadata. Stream-copies when asked and possible (the source
    holds H.264/HEVC/AV1 at the target size), otherwise encodes."""
    cam = episode.cameras[name]
    src = cam.frames
    T = episode.num_steps
    src_codec = getattr(src, "codec", None)
    src_path = getattr(src, "video_path", None)
    same_size = opts.resolution is None or tuple(opts.resolution) == (src.width, src.height)
    if opts.codec == "copy" and src_path and src_codec in video.COPYABLE and same_size:
        data, n = video.stream_copy(src_path, episode.fps, max_frames=T, start=getattr(src, "video_start", 0))
        codec, wh, copied, fast = src_codec, (src.width, src.height), True, False
    else:
        target = "h264" if opts.codec == "copy" else opts.codec
        fast = opts.fast_decode and target == "h264"
        data, n, wh = video.encode_video(src.iter_frames(), episode.fps, target, opts.crf, opts.resolution,
                                         fast_decode=fast)
        codec, copied = target, False
    if n != T:
        raise FormatError(f"episode {episode.episode_id!r}: camera {name!r} yielded {n} frames for {T} steps")
    info = {
        "width": wh[0],
        "height": wh[1],
        "fps": cam.fps or episode.fps,
        "num_frames": n,
        "codec": codec,
        "stream_copied": copied,
        "fast_decode": bool(fast),
        "source_size": [src.width, src.height],
        "source_codec": src_codec,
        "intrinsics": _as_list(cam.intrinsics),
        "extrinsics": _as_list(cam.extrinsics),
        "extrinsics_frame": cam.extrinsics_frame if cam.extrinsics is not None else None,
        "transforms": list(cam.transforms),
        "metadata": cam.metadata,
    }
    if cam.intrinsics is not None and wh != (src.width, src.height):
        # Intrinsics follow the resize; the source values stay in "source_intrinsics".
        sx, sy = wh[0] / src.width, wh[1] / src.height
        k = np.asarray(cam.intrinsics, dtype=np.float64).copy()
        k[0] *= sx
        k[1] *= sy
        info["source_intrinsics"], info["intrinsics"] = info["intrinsics"], k.tolist()
    return data, info


def episode_meta(episode: Episode, key: str, cameras: dict[str, dict]) -> dict:
    return {
        "format_version": layout.FORMAT_VERSION,
        "episode_id": episode.episode_id,
        "key": key,
        "source": episode.source,
        "family": episode.family,
        "embodiment": episode.embodiment,
        "fps": episode.fps,
        "num_steps": episode.num_steps,
        "duration_s": episode.duration_s,
        "tasks": list(episode.tasks),
        "language": [{"start_s": s.start_s, "end_s": s.end_s, "text": s.text} for s in episode.language],
        "success": episode.success,
        "action_space": episode.action_space,
        "features": {n: f.to_json() for n, f in episode.features.items()},
        "cameras": cameras,
        "metadata": episode.metadata,
        "writer": f"wamdata {__version__}",
    }


def members_crc32(datas: Iterable[bytes]) -> int:
    """CRC32 over a sample's member payloads in tar order; the index keeps it so `validate` can tell
    a damaged shard from a decodable one (video decoders conceal damage instead of failing)."""
    crc = 0
    for data in datas:
        crc = zlib.crc32(data, crc)
    return crc


@dataclass
class EncodedEpisode:
    """An episode turned into tar members, plus what the index needs to know about it: its byte
    count, one CRC32 per member (``member_crc32``: name, size, crc32, in tar order) and the episode's
    CRC32 over all member payloads (``crc32``, :func:`members_crc32`), combined from the members'."""

    key: str
    members: list[tuple[str, bytes]]
    meta: dict
    num_bytes: int = field(init=False)
    crc32: int = field(init=False)
    member_crc32: list[dict] = field(init=False)

    def __post_init__(self):
        self.num_bytes = sum(len(b) for _, b in self.members)
        self.member_crc32 = [{"member": name, "size": len(b), "crc32": zlib.crc32(b)} for name, b in self.members]
        crc = 0
        for m in self.member_crc32:
            crc = crc32_combine(crc, m["crc32"], m["size"])
        self.crc32 = crc


def encode_episode(episode: Episode, opts: VideoOptions) -> EncodedEpisode:
    validate(episode)
    key = layout.episode_key(episode.episode_id)
    cameras, videos = {}, []
    for name in sorted(episode.cameras):
        data, info = encode_camera(episode, name, opts)
        cameras[name] = info
        videos.append((layout.VIDEO_MEMBER.format(key=key, camera=name), data))
    meta = episode_meta(episode, key, cameras)
    members = [
        (layout.META_MEMBER.format(key=key), json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8")),
        (layout.STEPS_MEMBER.format(key=key), _parquet_bytes(steps_table(episode))),
        *videos,
    ]
    return EncodedEpisode(key, members, meta)


class ShardWriter:
    """Appends samples to one tar file and reports each sample's byte range for the index."""

    def __init__(self, fs, path: str):
        self.path = path
        self._file = fs.open(path, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)

    @property
    def size(self) -> int:
        return self._tar.offset

    def add(self, enc: EncodedEpisode) -> tuple[int, int]:
        start = self._tar.offset
        for name, data in enc.members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(data))
        return start, self._tar.offset - start

    def close(self) -> None:
        self._tar.close()
        self._file.close()


def index_row(enc: EncodedEpisode, shard: str, offset: int, size: int, source_item: str) -> dict:
    """One row of episodes.parquet (see :data:`wamdata.format.index.INDEX_SCHEMA`)."""
    m = enc.meta
    return {
        "episode_id": m["episode_id"],
        "key": enc.key,
        "shard": shard,
        "offset": offset,
        "size": size,
        "crc32": enc.crc32,
        "member_crc32": enc.member_crc32,
        "source": m["source"],
        "family": m["family"],
        "embodiment": m["embodiment"],
        "task": m["tasks"][0] if m["tasks"] else "",
        "tasks": m["tasks"],
        "success": m["success"],
        "num_steps": m["num_steps"],
        "duration_s": m["duration_s"],
        "fps": m["fps"],
        "cameras": sorted(m["cameras"]),
        "action_space": m["action_space"],
        "split": str(m["metadata"].get("split", "")),
        "source_item": source_item,
        "metadata": json.dumps(m["metadata"], ensure_ascii=False, sort_keys=True, default=str),
    }


@dataclass
class UnitResult:
    """What one work unit produced: shards under temporary names with their index rows, and the
    items that failed. The driver commits it (:meth:`wamdata.format.index.DatasetIndex.commit`)."""

    unit: str
    shards: list[tuple[str, list[dict]]] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    features: dict[str, dict] = field(default_factory=dict)   # name -> Feature json
    cameras: dict[str, dict] = field(default_factory=dict)    # name -> width, height, fps, codec
    summaries: dict[str, bytes] = field(default_factory=dict)  # temporary shard path -> its ShardSummary

    @property
    def rows(self) -> list[dict]:
        return [r for _, rows in self.shards for r in rows]


Work = tuple[str, str, Callable[[], list[Episode]]]  # (item id, item path, read the item's episodes)


class ShardSummary(Protocol):
    """What a job folds over a shard's episodes as they are written, from the values in memory
    (the conversion job's statistics: :class:`wamdata.stats.StatsPartial`); one per shard, stored
    beside the shard's done marker."""

    def observe(self, episode: Episode, meta: dict) -> None: ...

    def to_bytes(self) -> bytes: ...


def failure_record(item_id: str, path: str, err: Exception) -> dict:
    reason = getattr(err, "reason", None) or str(err) or type(err).__name__
    return {"item": item_id, "path": path, "error": type(err).__name__, "reason": reason}


def _merge_declarations(result: UnitResult, meta: dict) -> None:
    """Dataset-level features and cameras; one name declared two ways is an error, not a guess."""
    for name, feat in meta["features"].items():
        conflict = declaration_conflict(result.features.setdefault(name, feat), feat)
        if conflict:
            raise FormatError(f"episode {meta['episode_id']!r}: feature {name!r} declared differently "
                              f"from earlier episodes: {conflict}")
    for name, cam in meta["cameras"].items():
        result.cameras.setdefault(name, {k: cam[k] for k in ("width", "height", "fps", "codec")})


def write_unit(fs, root: str, unit: str, work: Iterable[Work], opts: VideoOptions,
               shard_size_mb: float = 512, summary: Callable[[], ShardSummary] | None = None) -> UnitResult:
    """Read, validate, encode and write the items of one unit into one or more temporary shards.

    An item is all-or-nothing: its episodes are encoded (into an :class:`~wamdata.format.spool.EncodedSpool`,
    memory-bounded) before any is written, so a failing item leaves nothing behind. Errors of the
    wamdata hierarchy become failure records; anything else (a bug, an exotic library error) is
    recorded too with its type, so one item never stops the job.
    With ``summary``, each shard gets a fresh one that observes the shard's episodes as they are
    written; its bytes land in ``result.summaries`` under the shard's temporary path.

    Failing to write the output (disk full, read-only) is not an item's fault: the unit's temporary
    shards are removed and OutputError stops the job.
    """
    result = UnitResult(unit)
    try:
        return _write_unit(fs, root, unit, work, opts, shard_size_mb, summary, result)
    except OSError as err:   # items' own errors are recorded inside; this is the output failing
        for p in fs.glob(layout.join(root, f"{layout.TMP_DIR}/{unit}.part-*")):   # closed and open parts alike
            try:
                fs.rm(p)
            except OSError:
                pass
        raise OutputError.of(layout.join(root, layout.TMP_DIR), err) from err


def _write_unit(fs, root, unit, work, opts, shard_size_mb, summary, result: UnitResult) -> UnitResult:
    fs.makedirs(layout.join(root, layout.TMP_DIR), exist_ok=True)
    writer, rows, summ = None, [], None
    limit = shard_size_mb * 1024 * 1024

    def close():
        nonlocal writer, rows, summ
        if writer is not None:
            writer.close()
            result.shards.append((writer.path, rows))
            if summ is not None:
                result.summaries[writer.path] = summ.to_bytes()
            writer, rows, summ = None, [], None

    for item_id, path, read in work:
        # the episodes (and frames their sources hold) go with the spool before the next item is read
        with EncodedSpool() as spool:
            try:
                for ep in read():
                    spool.put(ep, encode_episode(ep, opts))
                for meta in spool.metas():
                    _merge_declarations(result, meta)
            except Exception as err:  # noqa: BLE001 - recorded, never lost (see docstring)
                result.failures.append(failure_record(item_id, path, err))
                continue
            for ep, enc in spool.drain():
                if writer is None:
                    tmp = layout.join(root, f"{layout.TMP_DIR}/{unit}.part-{len(result.shards):03d}.tar")
                    writer = ShardWriter(fs, tmp)
                    summ = summary() if summary is not None else None
                offset, size = writer.add(enc)
                rows.append(index_row(enc, writer.path, offset, size, item_id))
                if summ is not None:
                    summ.observe(ep, enc.meta)
        if writer is not None and writer.size >= limit:
            close()
    close()
    return result


def write_dataset(out_dir: str, episodes: Iterable[Episode], video_codec: str = "h264",
                  resolution: tuple[int, int] | None = None, crf: int | None = None,
                  shard_size_mb: float = 512, fast_decode: bool = False) -> str:
    """Write episodes to a new dataset in this process (no Ray): for tests, examples and small jobs.

    The conversion job (:mod:`wamdata.convert`) runs the same :func:`write_unit` over many units.
    Raises the first item failure instead of recording it, since there is no job to report to.
    """
    from wamdata.format.index import DatasetIndex

    idx = DatasetIndex.open(out_dir, overwrite=True)
    work = ((ep.episode_id, "", (lambda ep=ep: [ep])) for ep in episodes)
    result = write_unit(idx.fs, idx.root, "inproc", work, VideoOptions(video_codec, resolution, crf, fast_decode),
                        shard_size_mb)
    if result.failures:
        f = result.failures[0]
        raise FormatError(f"episode {f['item']!r}: {f['reason']}")
    idx.commit(result)
    idx.finalize()
    return out_dir
