"""Export a dataset (or a view of one) as a diffusion-policy ReplayBuffer zarr (zarr v2 format).

Layout (real-stanford/diffusion_policy ``common/replay_buffer.py``)::

    data/<feature>        (N, *shape) every numeric / bool feature, its dtype, steps of all episodes back to back
    data/<camera>_rgb     (N, H, W, 3) uint8 frames, chunks of ``image_chunk`` frames
    meta/episode_ends     (E,) int64 cumulative exclusive ends: episode i is rows ends[i-1]:ends[i]
    .zattrs               wamdata: fps, episode ids, feature declarations, cameras, source

Arrays are compressed with numcodecs Blosc (zstd, bit-shuffle for images, byte-shuffle otherwise),
the standard codecs diffusion-policy's ``ReplayBuffer.copy_from_store`` and zarr 2 / 3 read. Feature
names are kept as wamdata names (``data/state.eef_pos``); ``--source zarr_replay --option
map=state.eef_pos:state.eef_pos,...`` reads them back.

What a ReplayBuffer cannot hold is refused before anything is written: episodes of different fps (the
store has one rate), a camera some episodes lack or whose frame size differs (one array spans every
step). Features some episodes lack and string features are left out with a warning / log line. Data
without cameras is fine. Resume: after each episode the progress record stores the row count; a re-run
with the same arguments truncates the arrays to it and continues with the next episode.

Views: each kept step range of a view's ``keep_steps`` is its own episode (a ReplayBuffer episode is
contiguous rows); ``.zattrs`` names, per episode, the source episode (``episode_ids``) and the stored
steps it holds (``episode_steps``, [start, stop)).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

import wamdata
from wamdata.export.source import (ExportError, ExportProgress, check_output, features_in_every_episode,
                                   open_selection, progress_bar)

log = logging.getLogger(__name__)


def _check(sel, cameras: Sequence[str] | None, dataset_path: str) -> tuple[float, list[str], dict]:
    idx = sel.episodes
    ids = idx.column("episode_id").to_pylist()
    fpss = sorted(set(idx.column("fps").to_pylist()))
    if len(fpss) != 1:
        raise ExportError(f"{dataset_path}: episodes have different fps ({fpss}); a ReplayBuffer has one "
                          "rate: export a view of one fps")
    ep_cams = [set(c or []) for c in idx.column("cameras").to_pylist()]
    known = sorted(set().union(*ep_cams))
    cams = list(dict.fromkeys(cameras)) if cameras is not None else known
    for cam in cams:
        if cam not in known:
            raise ExportError(f"{dataset_path}: unknown camera {cam!r}; the dataset has: {', '.join(known) or 'none'}")
        missing = [i for i, c in zip(ids, ep_cams) if cam not in c]
        if missing:
            raise ExportError(f"{dataset_path}: camera {cam!r} is missing in {len(missing)} of {len(ids)} episodes "
                              f"(e.g. {missing[0]!r}); a ReplayBuffer array spans every step: pass --cameras "
                              "with cameras every episode has, or export a view without those episodes")
    features = {}
    for name, f in sorted(features_in_every_episode(sel, "zarr").items()):
        if f.dtype in ("string", "str") or np.dtype(f.dtype).kind not in "biuf":
            log.info("zarr export: feature %s (%s) is not numeric; left out", name, f.dtype)
        else:
            features[name] = f
    return float(fpss[0]), cams, features


def export_zarr(dataset_path: str, out_dir: str, cameras: Sequence[str] | None = None, repo_id: str = "wamdata/export",
                *, image_chunk: int = 16, overwrite: bool = False, progress: bool = True) -> str:
    """Write ``dataset_path`` (a dataset, or a view / manifest of one) as a ReplayBuffer zarr folder
    ``out_dir``; resumes an unfinished export of the same arguments. Returns ``out_dir``."""
    import numcodecs
    import zarr

    sel = open_selection(dataset_path)
    fps, cams, features = _check(sel, cameras, dataset_path)
    out = Path(out_dir)
    check_output(sel.url, out, lambda p: (p / ".wamdata-export").is_dir() or (p / ".zgroup").is_file()
                 and (p / "meta").is_dir(), overwrite)
    rec = ExportProgress(out, "zarr", {"source": str(dataset_path), "selection": sel.digest,
                                       "episodes": sel.num_parts, "cameras": cams, "image_chunk": image_chunk})
    n_done, rows = len(rec.done), int(rec.state.get("rows", 0))
    root = zarr.open_group(str(out), mode="a", zarr_format=2)
    data, meta = root.require_group("data"), root.require_group("meta")
    values = numcodecs.Blosc("zstd", 5, numcodecs.Blosc.SHUFFLE)
    images = numcodecs.Blosc("zstd", 5, numcodecs.Blosc.BITSHUFFLE)
    arrays = {}
    for name, f in features.items():
        arrays[name] = _array(data, name, (0, *f.shape), np.dtype(f.dtype), (1024, *f.shape), values, rows)
    for cam in cams:
        c = sel.cameras[cam]
        shape = (c["height"], c["width"], 3)
        arrays[cam] = _array(data, f"{cam}_rgb", (0, *shape), np.uint8, (image_chunk, *shape), images, rows)
    ends = _array(meta, "episode_ends", (0,), np.int64, (1024,), values, n_done)
    bar = progress_bar(sel.num_parts, "zarr export", progress, initial=n_done)
    try:
        for i, ep in enumerate(sel.iter_episodes(skip=n_done), start=n_done):
            T = ep.num_steps
            for name in features:
                _append(arrays[name], np.asarray(ep.array(name)).astype(arrays[name].dtype, copy=False), rows)
            for cam in cams:
                frames = ep.frames(cam)
                if frames.shape[1:] != arrays[cam].shape[1:]:
                    raise ExportError(f"{ep.where}: camera {cam!r} is {frames.shape[2]}x{frames.shape[1]}, the "
                                      f"store's {arrays[cam].shape[2]}x{arrays[cam].shape[1]}")
                _append(arrays[cam], frames, rows)
            rows += T
            _append(ends, np.array([rows], np.int64), i)
            rec.save(done=rec.done + [ep.label], rows=rows)
            bar.update(1)
    finally:
        bar.close()
    root.attrs["wamdata"] = {
        "fps": fps, "episode_ids": [e for e, _, _ in sel.spans], "episode_steps": [[a, b] for _, a, b in sel.spans],
        "repo_id": repo_id, "source": str(dataset_path),
        "exported_by": f"wamdata {wamdata.__version__}", "cameras": {c: f"{c}_rgb" for c in cams},
        "features": {n: f.to_json() for n, f in features.items()}}
    rec.finish()
    return str(out)


def _array(group, name, shape, dtype, chunks, compressor, rows):
    """The array ``name``, created if new, truncated to ``rows`` (what the last finished episode left)."""
    if name in group:
        a = group[name]
        a.resize((rows, *a.shape[1:]))
        return a
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, compressors=compressor)


def _append(array, values: np.ndarray, at: int) -> None:
    array.resize((at + len(values), *array.shape[1:]))
    array[at:at + len(values)] = values
