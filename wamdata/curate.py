"""Curation: quality signals in a side table, and filters that make views (no data copied).

Signals (:mod:`wamdata.signals`, one row per episode) live beside the dataset, joined to the index by
``episode_id``; no shard is rewritten::

    <dataset>/curation/signals.parquet    one row per episode: episode_id, the signal columns,
                                          duplicate_of / duplicate_distance (set across episodes)
    <dataset>/curation/signals.json       version, settings, the columns and what each means, and
                                          the shards they were computed from
    <dataset>/curation/_parts/shard-NNNNNN.parquet   one shard's rows, written as its task returns:
                                          a re-run (same settings) computes only the missing shards

Signals describe the shards they were computed from. When the dataset's shards change afterwards (a
``validate --repair`` rewrites shards under new names, a resumed conversion adds some), the table is
out of date: :func:`load_signals` refuses it, naming what to run, rather than join values computed
from damaged bytes to repaired episodes. The re-run computes only the new shards and removes the
parts of shards that are gone.

:func:`shard_signals` is the per-shard work (``pipelines.curate_job`` runs it as one Ray task per
shard), :func:`finish_signals` merges the parts, finds near-duplicate episodes (dhash of sampled frames
within ``DUPLICATE_BITS`` on average, or identical state sequences; the later episode in index order
points at the earlier) and writes the table.

Filters are the manifest's expressions (:func:`wamdata.loader.manifest.compile_filter`) over the index
columns and the scalar signal columns together. :func:`curate_view` applies them (all must hold) and,
with ``drop_idle``, cuts the idle segments out as kept step ranges; :func:`write_view` writes the result
as a manifest (``episodes`` + ``keep_steps``) that ``WamStream``, ``wamdata stats`` and ``wamdata
export`` read.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wamdata.errors import ConfigError, FormatError
from wamdata.format import layout
from wamdata.loader.manifest import compile_filter, kept_steps_mask
from wamdata.quality import hamming
from wamdata.signals import SIGNAL_COLUMNS, SignalSettings, episode_signals

log = logging.getLogger(__name__)

CURATION_DIR = "curation"
SIGNALS_FILE = f"{CURATION_DIR}/signals.parquet"
SIGNALS_INFO = f"{CURATION_DIR}/signals.json"
PARTS_DIR = f"{CURATION_DIR}/_parts"
DUPLICATE_BITS = 5.0     # mean Hamming distance (of 64) of sampled-frame hashes under which episodes are duplicates
_SETTINGS_KEY = b"wamdata.signals.settings"

COLUMNS = {**SIGNAL_COLUMNS,
           "duplicate_of": "the earlier episode (index order) this one nearly duplicates, else null",
           "duplicate_distance": "mean Hamming distance (bits of 64) of the sampled-frame hashes to it; 0 for "
                                 "identical state sequences"}
_LIST_COLUMNS = {"idle_ranges": pa.list_(pa.list_(pa.int64())), "frame_hashes": pa.list_(pa.uint64())}
_BOOL_COLUMNS = {"lang_empty", "lang_duplicate", "lang_garbled"}
_INT_COLUMNS = {"nonfinite", "action_jumps", "action_jerk", "state_jumps", "gripper_flips", "ts_gaps",
                "dropped_frames", "ts_backwards"}


def _schema() -> pa.Schema:
    fields = [("episode_id", pa.string())]
    for name in SIGNAL_COLUMNS:
        if name in _LIST_COLUMNS:
            fields.append((name, _LIST_COLUMNS[name]))
        elif name == "state_hash":
            fields.append((name, pa.string()))
        else:
            fields.append((name, pa.bool_() if name in _BOOL_COLUMNS else
                           pa.int64() if name in _INT_COLUMNS else pa.float64()))
    return pa.schema(fields)


SCHEMA = _schema()


def _fs(dataset_path: str):
    return layout.open_fs(str(dataset_path))


def _part_path(root: str, shard: str) -> str:
    return layout.join(root, f"{PARTS_DIR}/{shard.rsplit('/', 1)[-1][: -len('.tar')]}.parquet")


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def shard_signals(dataset_path: str, shard: str, settings: dict) -> tuple[str, bytes]:
    """The signal rows of one shard's episodes, as parquet bytes (what a Ray task returns)."""
    import wamdata
    from wamdata.format.video import get_decoder

    cfg = SignalSettings(**{k: v for k, v in settings.items() if k != "version"})
    ds = wamdata.open_dataset(dataset_path)
    decoder = get_decoder(cfg.decoder)
    rows = []
    for ep in ds.iter_shard(shard):
        try:
            rows.append(episode_signals(ep, cfg, decoder))
        except FormatError:
            raise
        except Exception as e:   # a decoder or numeric failure names the episode
            raise FormatError(f"{ep.where}: quality signals failed ({type(e).__name__}: {e})") from e
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return shard, _table_bytes(table.replace_schema_metadata({_SETTINGS_KEY: json.dumps(settings, sort_keys=True)}))


def pending_shards(dataset_path: str, settings: SignalSettings) -> list[str]:
    """Shards whose signals are not stored yet with these settings (all of them after a change)."""
    import wamdata

    ds = wamdata.open_dataset(dataset_path)
    fs, root = _fs(dataset_path)
    want = json.dumps(settings.to_json(), sort_keys=True)
    todo = []
    for shard in ds.shards:
        part = _part_path(root, shard)
        if fs.exists(part):
            with fs.open(part, "rb") as f:
                md = pq.ParquetFile(f).schema_arrow.metadata or {}
            if md.get(_SETTINGS_KEY, b"").decode() == want:
                continue
        todo.append(shard)
    return todo


def save_part(dataset_path: str, shard: str, data: bytes) -> None:
    """Store one shard's rows (temporary name, then renamed): the shard's done marker."""
    fs, root = _fs(dataset_path)
    path = _part_path(root, shard)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path + ".tmp", "wb") as f:
        f.write(data)
    fs.mv(path + ".tmp", path)


MapShards = Callable[[str, Sequence[str], dict], Iterable[tuple[str, bytes]]]


def _map_local(dataset_path: str, shards: Sequence[str], settings: dict):
    for shard in shards:
        yield shard_signals(dataset_path, shard, settings)


def compute_signals(dataset_path: str, settings: SignalSettings | None = None,
                    map_shards: MapShards | None = None) -> pa.Table:
    """Signals of every episode: computes the shards not stored yet (``map_shards`` may run them
    elsewhere: called as ``map_shards(dataset_path, shards, settings_json)``, yielding
    ``(shard, parquet bytes)``), stores each as it arrives, then :func:`finish_signals`."""
    settings = settings or SignalSettings()
    todo = pending_shards(dataset_path, settings)
    for shard, data in (map_shards or _map_local)(dataset_path, todo, settings.to_json()):
        save_part(dataset_path, shard, data)
    return finish_signals(dataset_path, settings)


def find_duplicates(table: pa.Table, max_bits: float = DUPLICATE_BITS) -> tuple[list, list]:
    """For each row, the earlier row it duplicates (episode id) and the distance, or (None, None).

    Identical non-empty state hashes are duplicates at distance 0. Frame hashes are compared between
    episodes with the same number of them that share one 16-bit band of a hash (so the work grows with
    the candidates, not with the square of the episodes), then on the mean Hamming distance."""
    ids = table["episode_id"].to_pylist()
    hashes = table["frame_hashes"].to_pylist()
    states = table["state_hash"].to_pylist()
    dup_of, dist = [None] * len(ids), [None] * len(ids)
    by_state: dict[str, int] = {}
    bands: dict[tuple, list[int]] = {}
    for i, (hs, st) in enumerate(zip(hashes, states)):
        if st and st in by_state:
            dup_of[i], dist[i] = ids[by_state[st]], 0.0
        elif st:
            by_state[st] = i
        hs = hs or []
        keys = {(len(hs), j, b, (h >> (16 * b)) & 0xFFFF) for j, h in enumerate(hs) for b in range(4)}
        if dup_of[i] is None and hs:
            best = None
            for c in sorted({c for k in keys for c in bands.get(k, ())}):
                d = float(np.mean([hamming(a, b) for a, b in zip(hs, hashes[c])]))
                if d <= max_bits and (best is None or d < best[1]):
                    best = (c, d)
            if best is not None:
                dup_of[i], dist[i] = ids[best[0]], best[1]
        for k in keys:
            bands.setdefault(k, []).append(i)
    return dup_of, dist


def finish_signals(dataset_path: str, settings: SignalSettings | None = None) -> pa.Table:
    """Merge the stored parts (in index order), add the duplicate columns and write the side table."""
    import wamdata

    settings = settings or SignalSettings()
    ds = wamdata.open_dataset(dataset_path)
    fs, root = _fs(dataset_path)
    missing = [s for s in ds.shards if not fs.exists(_part_path(root, s))]
    if missing:
        raise FormatError(f"{dataset_path}: no signals stored for {len(missing)} shards (e.g. {missing[0]}); "
                          "run `wamdata curate DATASET --signals`")
    table = pa.concat_tables([layout.read_parquet(fs, _part_path(root, s)).replace_schema_metadata(None)
                              for s in ds.shards]) if ds.shards else SCHEMA.empty_table()
    current = {_part_path(root, s).rsplit("/", 1)[-1] for s in ds.shards}
    parts_dir = layout.join(root, PARTS_DIR)
    for part in (fs.glob(f"{parts_dir}/*.parquet") if fs.exists(parts_dir) else []):
        if part.rsplit("/", 1)[-1] not in current:
            fs.rm(part)   # a shard a repair retired: its rows describe bytes that are gone
    order = pc.index_in(ds.episodes["episode_id"], table["episode_id"])
    table = table.take(order.drop_null())
    dup_of, dist = find_duplicates(table)
    table = table.append_column("duplicate_of", pa.array(dup_of, pa.string()))
    table = table.append_column("duplicate_distance", pa.array(dist, pa.float64()))
    data = _table_bytes(table)
    with fs.open(layout.join(root, SIGNALS_FILE) + ".tmp", "wb") as f:
        f.write(data)
    fs.mv(layout.join(root, SIGNALS_FILE) + ".tmp", layout.join(root, SIGNALS_FILE))
    info = {"version": settings.to_json()["version"], "settings": settings.to_json(), "episodes": table.num_rows,
            "columns": COLUMNS, "shards": list(ds.shards)}
    fs.pipe_file(layout.join(root, SIGNALS_INFO), json.dumps(info, indent=1).encode())
    return table


def load_signals(dataset_path: str, ds=None) -> pa.Table:
    """The signals table; a FormatError saying what to run when there is none or it is out of date.
    ``ds``: the dataset already opened by the caller."""
    import wamdata

    fs, root = _fs(dataset_path)
    path = layout.join(root, SIGNALS_FILE)
    if not fs.exists(path):
        raise FormatError(f"{path}: no signals computed; run `wamdata curate {dataset_path} --signals`")
    info_path = layout.join(root, SIGNALS_INFO)
    computed = json.loads(fs.cat_file(info_path)).get("shards") if fs.exists(info_path) else None
    shards = list((ds or wamdata.open_dataset(dataset_path)).shards)
    if computed is not None and computed != shards:
        gone, new = len(set(computed) - set(shards)), len(set(shards) - set(computed))
        raise FormatError(f"{path}: quality signals are out of date: {gone} shard(s) gone and {new} new since they "
                          f"were computed (a repair or a resumed conversion); run `wamdata curate {dataset_path} "
                          "--signals` (only the changed shards are computed)")
    return layout.read_parquet(fs, path)


# ---- filters -> views ---------------------------------------------------------------------------

@dataclass
class CuratedView:
    """What a curation keeps of one dataset."""

    dataset: str
    index: pa.Table                      # every index row, with the scalar signal columns joined
    kept: np.ndarray                     # bool per row
    keep_steps: dict[str, list[list[int]]]   # kept episode id -> kept ranges (only where not whole)
    filters: list[str]
    drop_idle: bool

    def kept_steps(self) -> np.ndarray:
        """Kept steps per index row (0 for dropped episodes)."""
        ids = self.index["episode_id"].to_pylist()
        n = np.asarray(self.index["num_steps"], np.int64)
        return np.array([0 if not k else int(kept_steps_mask(self.keep_steps.get(e), int(s)).sum())
                         if e in self.keep_steps else int(s) for e, k, s in zip(ids, self.kept, n)], np.int64)

    def summary(self) -> list[dict]:
        """Per source: episodes and hours, total and kept, and the hours lost."""
        kept_steps = self.kept_steps()
        secs = np.asarray(self.index["duration_s"], np.float64)
        kept_secs = np.where(self.kept, secs * kept_steps / np.maximum(np.asarray(self.index["num_steps"]), 1), 0.0)
        out = []
        sources = np.asarray(self.index["source"].to_pylist(), object)
        for src in sorted(set(sources.tolist())) + ["(all)"]:
            m = np.ones(len(sources), bool) if src == "(all)" else sources == src
            out.append({"source": src, "episodes": int(m.sum()), "kept_episodes": int((m & self.kept).sum()),
                        "hours": float(secs[m].sum() / 3600), "kept_hours": float(kept_secs[m].sum() / 3600),
                        "lost_hours": float((secs[m].sum() - kept_secs[m].sum()) / 3600)})
        return out


def joined_index(dataset_path: str, need_signals: bool) -> tuple[pa.Table, str | None]:
    """The index with the scalar signal columns joined by episode_id (null where an episode has none),
    and why there are none (no table, or one out of date) when that is allowed."""
    import wamdata

    ds = wamdata.open_dataset(dataset_path)
    index = ds.episodes
    try:
        sig = load_signals(dataset_path, ds)
    except FormatError as why:
        if need_signals:
            raise
        return index, str(why)
    at = pc.index_in(index["episode_id"], sig["episode_id"])
    for name in sig.column_names:
        if name == "episode_id" or name in index.column_names:
            continue
        index = index.append_column(name, sig[name].take(at))
    return index, None


def curate_view(dataset_path: str, filters: Sequence[str] = (), drop_idle: bool = False) -> CuratedView:
    """Apply ``filters`` (all must hold; a missing value fails a comparison) and optionally cut idle
    segments out; an episode that is idle throughout is dropped."""
    exprs = [(f, compile_filter(f)) for f in filters]
    index, no_signals = joined_index(dataset_path, need_signals=drop_idle)
    ids = index["episode_id"].to_pylist()
    scalar = index.select([c for c in index.column_names if c not in _LIST_COLUMNS])
    mask = np.ones(index.num_rows, bool)
    for text, expr in exprs:
        try:
            chosen = set(scalar.filter(expr)["episode_id"].to_pylist())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError) as e:
            hint = f"; no signal columns: {no_signals}" if no_signals else ""
            raise ConfigError(f"filter {text!r} failed on {dataset_path} (columns: "
                              f"{', '.join(scalar.column_names)}){hint}: {str(e).splitlines()[0]}") from e
        mask &= np.array([e in chosen for e in ids], bool)
    keep_steps: dict[str, list[list[int]]] = {}
    if drop_idle:
        for i, (eid, idle, n) in enumerate(zip(ids, index["idle_ranges"].to_pylist(),
                                               index["num_steps"].to_pylist())):
            if not mask[i] or not idle:
                continue
            kept = complement(idle, int(n))
            if kept:
                keep_steps[eid] = kept
            else:
                mask[i] = False
    return CuratedView(str(dataset_path), index, mask, keep_steps, list(filters), drop_idle)


def complement(ranges: list[list[int]], n: int) -> list[list[int]]:
    """The [start, stop) ranges of 0..n not covered by ``ranges`` (sorted, disjoint)."""
    out, at = [], 0
    for a, b in sorted(ranges):
        if a > at:
            out.append([at, a])
        at = max(at, b)
    if at < n:
        out.append([at, n])
    return out


def write_view(view: CuratedView, out: str, name: str | None = None) -> str:
    """Write ``view`` as a manifest: the dataset path (relative to the view's folder when both are
    local), the kept ``episodes`` and their ``keep_steps``; the filters are recorded in its description."""
    import yaml

    if not str(out).endswith((".yaml", ".yml")):
        raise ConfigError(f"--out {out}: a view is a YAML manifest; name it *.yaml")
    path = view.dataset
    if "://" not in path and "://" not in str(out):
        path = os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(out)))
    ids = [e for e, k in zip(view.index["episode_id"].to_pylist(), view.kept) if k]
    what = [f"filter {f!r}" for f in view.filters] + (["idle segments dropped"] if view.drop_idle else [])
    entry = {"path": path, "episodes": ids}
    if view.keep_steps:
        entry["keep_steps"] = {e: view.keep_steps[e] for e in ids if e in view.keep_steps}
    doc = {"name": name or os.path.splitext(os.path.basename(str(out)))[0],
           "description": f"wamdata curate view of {view.dataset}: {', '.join(what) or 'everything'}; "
                          f"{len(ids)} of {view.index.num_rows} episodes kept",
           "datasets": [entry]}
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)
    fs, p = layout.open_fs(str(out))
    with fs.open(p, "w") as f:
        f.write(text)
    return str(out)


def format_summary(view: CuratedView) -> str:
    buf = io.StringIO()
    buf.write(f"{'source':<24} {'episodes':>12} {'hours':>18} {'hours lost':>11}\n")
    for r in view.summary():
        buf.write(f"{r['source']:<24} {r['kept_episodes']:>5} of {r['episodes']:<5} "
                  f"{r['kept_hours']:>7.3f} of {r['hours']:<7.3f} {r['lost_hours']:>11.3f}\n")
    return buf.getvalue()
