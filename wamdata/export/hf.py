"""Export a dataset (or a view of one) as a Hugging Face ``datasets`` parquet dataset with a card.

Layout::

    README.md                        dataset card: YAML header (configs, data files), features, provenance
    data/train-NNNNN.parquet         one row per step, several episodes per shard, episodes whole
    .wamdata-export/progress.json    resume record (hidden: ``datasets`` ignores it)

``datasets.load_dataset("parquet", data_dir=OUT)`` (or ``load_dataset(OUT)``, which reads the card's
``configs``) loads it; the ``datasets`` feature types travel in each shard's schema metadata.

| column | ``datasets`` feature | from |
|---|---|---|
| ``episode_id``, ``source``, ``embodiment``, ``task`` | string | the episode (task: its first) |
| ``episode_index``, ``frame_index`` | int64 | position in the export, step index in the exported episode |
| ``source_step`` | int64 | the step's index in the source episode (``frame_index`` unless a view cut it) |
| ``timestamp`` | float64 | the source's seconds from the source episode's start |
| every numeric / bool feature (``state.*``, ``action.*``, ``extra.*``) | Value or List(length = width) | values flattened to one dimension per step; shapes in the card |
| ``image.<camera>`` | Image (encoded PNG or JPEG bytes) | frame i of the camera |

Frames are stored as encoded images (PNG by default: lossless over the decoded video; ``image_format=
"jpeg"`` for smaller shards), not video references: a shard is self-contained and ``datasets`` decodes
an ``Image`` column to PIL on access, whereas references would need the source MP4s and a video decoder
next to every copy. Features or cameras some episodes lack are null in those episodes' rows (parquet
holds them); string features are left out with a log line. A shard is written under a temporary name
and renamed; the progress record lists finished shards and their episodes, so an interrupted export
re-run with the same arguments continues with the next shard.

Views: each kept step range of a view's ``keep_steps`` is its own episode (``episode_index``), its
``episode_id`` the source's and ``source_step`` the stored steps it holds.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import wamdata
from wamdata.export.source import ExportError, ExportProgress, check_output, open_selection, progress_bar

log = logging.getLogger(__name__)

SHARD = "data/train-{index:05d}.parquet"
IMAGE_COLUMN = "image.{camera}"
_META_COLUMNS = (("episode_id", "string"), ("source", "string"), ("embodiment", "string"), ("task", "string"),
                 ("episode_index", "int64"), ("frame_index", "int64"), ("source_step", "int64"),
                 ("timestamp", "float64"))


def _numeric(features: dict) -> dict:
    out = {}
    for name, f in sorted(features.items()):
        kind = np.dtype(f.dtype).kind if f.dtype not in ("string", "str") else "U"
        if kind in "biuf":
            out[name] = f
        else:
            log.info("hf export: feature %s (%s) is not numeric; left out", name, f.dtype)
    return out


def _hf_features(features: dict, cameras: Sequence[str]):
    import datasets

    spec = {k: datasets.Value(t) for k, t in _META_COLUMNS}
    for name, f in features.items():
        value = datasets.Value("bool" if np.dtype(f.dtype).kind == "b" else np.dtype(f.dtype).name)
        width = int(np.prod(f.shape)) if f.shape else 0
        spec[name] = datasets.List(value, length=width) if width else value
    for cam in cameras:
        spec[IMAGE_COLUMN.format(camera=cam)] = datasets.Image()
    return datasets.Features(spec)


def _encode(frame: np.ndarray, fmt: str, quality: int) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", np.ascontiguousarray(frame[..., ::-1]), params)
    if not ok:
        raise ExportError(f"cannot encode a {frame.shape} frame as {fmt}")
    return buf.tobytes()


def _episode_table(part, ep_index: int, features: dict, cameras: Sequence[str], schema: pa.Schema,
                   fmt: str, quality: int) -> pa.Table:
    T = part.num_steps
    cols = {"episode_id": [part.episode_id] * T, "source": [part.meta["source"]] * T,
            "embodiment": [part.meta["embodiment"]] * T, "task": [(part.meta.get("tasks") or [""])[0]] * T,
            "episode_index": np.full(T, ep_index, np.int64), "frame_index": np.arange(T, dtype=np.int64),
            "source_step": np.arange(part.start, part.stop, dtype=np.int64),
            "timestamp": part.array("timestamp").astype(np.float64)}
    have = set(part.steps.column_names)
    for name, f in features.items():
        typ = schema.field(name).type
        if name not in have:
            cols[name] = pa.nulls(T, typ)
            continue
        v = np.asarray(part.array(name))
        if pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ):
            flat = v.reshape(T, -1).astype(typ.value_type.to_pandas_dtype())
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1]).cast(typ)
        else:
            cols[name] = pa.array(v.reshape(T).astype(typ.to_pandas_dtype()))
    for cam in cameras:
        key = IMAGE_COLUMN.format(camera=cam)
        if cam in part.cameras:
            cols[key] = [{"bytes": _encode(f, fmt, quality), "path": None} for f in part.iter_frames(cam)]
        else:
            cols[key] = pa.nulls(T, schema.field(key).type)
    return pa.table([pa.array(cols[n], schema.field(n).type) if not isinstance(cols[n], pa.Array) else cols[n]
                     for n in schema.names], schema=schema)


def export_hf(dataset_path: str, out_dir: str, cameras: Sequence[str] | None = None, repo_id: str = "wamdata/export",
              *, image_format: str = "png", jpeg_quality: int = 95, shard_size_mb: float = 256,
              overwrite: bool = False, progress: bool = True) -> str:
    """Write ``dataset_path`` (a dataset, or a view / manifest of one) as a Hugging Face parquet dataset
    in ``out_dir``; resumes an unfinished export of the same arguments. Returns ``out_dir``."""
    if image_format not in ("png", "jpeg"):
        raise ExportError(f"hf export: image_format is png or jpeg, got {image_format!r}")
    sel = open_selection(dataset_path)
    known = sorted(sel.cameras)
    cams = list(dict.fromkeys(cameras)) if cameras is not None else known
    unknown = [c for c in cams if c not in known]
    if unknown:
        raise ExportError(f"{dataset_path}: unknown camera(s) {', '.join(unknown)}; the dataset has: "
                          f"{', '.join(known) or 'none'}")
    out = Path(out_dir)
    check_output(sel.url, out, lambda p: (p / ".wamdata-export").is_dir() or (p / "README.md").is_file()
                 and (p / "data").is_dir(), overwrite)
    features = _numeric(sel.features)
    schema = _hf_features(features, cams).arrow_schema
    rec = ExportProgress(out, "hf", {"source": str(dataset_path), "selection": sel.digest, "episodes": sel.num_parts,
                                     "cameras": cams, "image_format": image_format, "jpeg_quality": jpeg_quality,
                                     "shard_size_mb": shard_size_mb})
    n_done = sum(len(shard["episodes"]) for shard in rec.done)
    bar = progress_bar(sel.num_parts, "hf export", progress, initial=n_done)
    limit = shard_size_mb * 1024 * 1024
    pending: list[pa.Table] = []
    names: list[str] = []

    def flush():
        if not pending:
            return
        path = out / SHARD.format(index=len(rec.done))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(pa.concat_tables(pending), tmp, compression="zstd")
        os.replace(tmp, path)
        rec.save(done=rec.done + [{"file": path.name, "episodes": list(names)}])
        pending.clear()
        names.clear()

    try:
        for i, part in enumerate(sel.iter_episodes(skip=n_done), start=n_done):
            pending.append(_episode_table(part, i, features, cams, schema, image_format, jpeg_quality))
            names.append(part.label)
            bar.update(1)
            if sum(t.nbytes for t in pending) >= limit:
                flush()
        flush()
    finally:
        bar.close()
    (out / "README.md").write_text(_card(sel, features, cams, repo_id, image_format, rec), encoding="utf-8")
    rec.finish()
    return str(out)


def _card(sel, features: dict, cams: list[str], repo_id: str, image_format: str, rec: ExportProgress) -> str:
    idx = sel.episodes
    rows = [f"| `{k}` | {t} | |" for k, t in _META_COLUMNS]
    for n, f in features.items():
        rows.append(f"| `{n}` | {f.dtype} {list(f.shape)} | {f.unit or ''} {f.frame or ''} {f.encoding or ''}"
                    f"{' derived' if f.derived else ''}{' — ' + ', '.join(f.names) if f.names else ''} |")
    for c in cams:
        cam = sel.cameras[c]
        rows.append(f"| `{IMAGE_COLUMN.format(camera=c)}` | Image ({image_format}) | {cam['width']}x{cam['height']} |")
    sources = sorted(set(idx.column("source").to_pylist()))
    history = sel.info.get("history") or sel.info.get("conversions") or []
    return "\n".join([
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*.parquet",
        "tags: [robotics, wamdata]",
        "---",
        f"# {repo_id}",
        "",
        f"Exported by wamdata {wamdata.__version__} from `{sel.label}`: {sel.num_parts} episodes, {sel.num_steps} "
        f"steps, "
        f"{len(rec.done)} shards. Sources: {', '.join(sources)}; embodiments: "
        f"{', '.join(sorted(set(idx.column('embodiment').to_pylist())))}.",
        "",
        "```python",
        "import datasets",
        f"ds = datasets.load_dataset(\"parquet\", data_dir=\"{Path(rec.path).parent.parent.name}\")[\"train\"]",
        "```",
        "",
        "One row per step; an episode's rows are contiguous (`episode_index`, `frame_index`). Multi-dimensional",
        "features are flattened per step (their shape is listed below).",
        "",
        "| column | type | unit, frame, encoding, names |",
        "|---|---|---|",
        *rows,
        "",
        "## Provenance",
        "",
        "```json",
        json.dumps({"dataset": str(sel.url), "selection": sel.label, "format_version": sel.info.get("format_version"),
                    "history": history}, indent=1, default=str),
        "```",
        "",
    ])
