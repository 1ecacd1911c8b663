"""Mergeable per-feature, per-dimension statistics and ``stats.json``.

Every numeric step feature (``state.*``, ``action.*``, numeric ``extra.*``) is flattened per step to D
dimensions and summarised per dimension by a :class:`FeatureStats`: the count of finite values, their
mean and sum of squared deviations (M2, float64, merged with Chan et al.'s parallel formula, so mean
and std are exact up to float rounding whatever the split), min, max and one Apache DataSketches KLL
sketch per dimension for quantiles (q01 / q50 / q99 within the sketch's rank-error bound, about 0.3%
at the default ``k``). Boolean features (e.g. ``extra.idle``) are only counted (true / total) for the
report; strings, and features of more than ``MAX_STATS_VALUES`` values per step (depth maps, point
clouds), are skipped.

A :class:`StatsPartial` holds one such set per embodiment plus small counters; :func:`merge` is pure
(returns a new partial, never mutates its arguments) and partials round-trip through
:meth:`StatsPartial.to_state` / :meth:`StatsPartial.from_state` (plain dicts of numpy arrays and sketch
bytes) so Ray tasks can return them. The ``all`` group is the merge of the embodiment groups.

The computation reads only the steps tables of the episodes, never video. :func:`compute_stats` runs
in-process; ``pipelines.stats_job.compute_stats`` fans the per-shard work out over Ray and ends in the
same :func:`finish`. ``stats.json`` (written atomically at the dataset root)::

    {"format_version": 1, "episodes": N, "steps": M,
     "sketch": {"kind": "kll_doubles", "k": 1000, "normalized_rank_error": 0.0028},
     "by_embodiment": {"<embodiment>": {"<feature>": {"count": n, "shape": [...], "mean": [...],
                       "std": [...], "min": [...], "max": [...], "q01": [...], "q50": [...],
                       "q99": [...]}}},
     "all": {"<feature>": {...}},
     "flags": {"by_embodiment": {...}, "all": {"extra.idle": {"true": t, "count": n, "fraction": f}}},
     "counters": {"action_space": {...}, "language": {"with": a, "without": b}, "camera": {...}}}

Lists run over the feature flattened per step (C order); ``count`` is the number of steps; ``std`` is
the population standard deviation; a dimension with no finite value has ``null`` entries, and a
feature with NaN / Inf values has ``nonfinite`` (per dimension counts, excluded from the statistics).
KLL sketches are randomised: quantiles are within the rank-error bound but may differ in the last
digits between runs; every other value is exact (up to float64 rounding of the merge order).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from wamdata.errors import FormatError
from wamdata.format import layout
from wamdata.native_libs import load_datasketches

log = logging.getLogger(__name__)

STATS_FILE = layout.STATS_FILE
STATS_FORMAT_VERSION = 1
DEFAULT_K = 1000  # KLL accuracy parameter: normalised rank error ~0.28% (99% confidence)
QUANTILES = {"q01": 0.01, "q50": 0.50, "q99": 0.99}
STAT_PREFIXES = ("state.", "action.", "extra.")
# Features with more values per step are images or clouds kept as data (ManiSkill's depth maps are
# 128x128): one sketch per pixel would cost megabytes per shard and normalises nothing a model uses.
MAX_STATS_VALUES = 1024

__all__ = [
    "STATS_FILE", "DEFAULT_K", "FeatureStats", "StatsPartial", "merge", "merge_all",
    "stats_features", "flag_features", "shard_partial", "finish", "compute_stats", "write_stats",
    "load_stats", "dump_state", "load_state", "conversion_stats",
]


def _kll():
    return load_datasketches().kll_doubles_sketch


def _copy_sketch(sketch):
    return _kll().deserialize(sketch.serialize())


@dataclass
class FeatureStats:
    """Statistics of one feature, per flattened dimension. ``rows`` counts steps; ``count`` counts
    finite values per dimension (NaN / Inf are excluded from every statistic)."""

    shape: tuple[int, ...]
    k: int
    rows: int
    count: np.ndarray  # (D,) int64
    mean: np.ndarray  # (D,) float64
    m2: np.ndarray  # (D,) float64, sum of squared deviations from the mean
    min: np.ndarray  # (D,) float64, +inf when empty
    max: np.ndarray  # (D,) float64, -inf when empty
    sketches: list  # D kll_doubles_sketch

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @classmethod
    def empty(cls, shape: Sequence[int], k: int = DEFAULT_K) -> "FeatureStats":
        shape = tuple(int(s) for s in shape)
        d = int(np.prod(shape, dtype=np.int64))
        kll = _kll()
        return cls(shape, k, 0, np.zeros(d, np.int64), np.zeros(d), np.zeros(d),
                   np.full(d, np.inf), np.full(d, -np.inf), [kll(k) for _ in range(d)])

    @classmethod
    def from_array(cls, values: np.ndarray, k: int = DEFAULT_K) -> "FeatureStats":
        """Statistics of ``values`` (T, *shape), computed in float64."""
        values = np.asarray(values)
        out = cls.empty(values.shape[1:], k)
        out.update(values)
        return out

    def update(self, values: np.ndarray) -> None:
        """Fold the rows of ``values`` (T, *shape) in, in place (batch moments, then Chan's update)."""
        values = np.asarray(values)
        if tuple(values.shape[1:]) != self.shape:
            raise ValueError(f"values of shape {tuple(values.shape[1:])} per step, statistics of {self.shape}")
        x = values.reshape(len(values), -1).astype(np.float64, copy=False)
        self.rows += int(x.shape[0])
        if x.shape[0] == 0:
            return
        finite = np.isfinite(x)
        if finite.all():
            nb = np.full(x.shape[1], x.shape[0], np.int64)
            mb = x.mean(axis=0)
            m2b = ((x - mb) ** 2).sum(axis=0)
            lo, hi = x.min(axis=0), x.max(axis=0)
            for j, sk in enumerate(self.sketches):
                sk.update(np.array(x[:, j], order="C"))  # a writable copy: the binding rejects read-only arrays
        else:
            nb = finite.sum(axis=0).astype(np.int64)
            mb = np.divide(np.where(finite, x, 0.0).sum(axis=0), nb, out=np.zeros(x.shape[1]), where=nb > 0)
            m2b = np.where(finite, (x - mb) ** 2, 0.0).sum(axis=0)
            lo = np.where(finite, x, np.inf).min(axis=0)
            hi = np.where(finite, x, -np.inf).max(axis=0)
            for j, sk in enumerate(self.sketches):
                col = x[finite[:, j], j]
                if len(col):
                    sk.update(np.array(col, order="C"))
        self._combine(nb, mb, m2b, lo, hi)

    def _combine(self, nb, mb, m2b, lo, hi) -> None:
        na = self.count.astype(np.float64)
        nbf = nb.astype(np.float64)
        n = na + nbf
        safe = np.where(n > 0, n, 1.0)
        delta = mb - self.mean
        self.mean = np.where(n > 0, self.mean + delta * (nbf / safe), 0.0)
        self.m2 = self.m2 + m2b + delta**2 * (na * nbf / safe)
        self.count = self.count + nb
        self.min = np.minimum(self.min, lo)
        self.max = np.maximum(self.max, hi)

    def copy(self) -> "FeatureStats":
        return FeatureStats(self.shape, self.k, self.rows, self.count.copy(), self.mean.copy(), self.m2.copy(),
                            self.min.copy(), self.max.copy(), [_copy_sketch(s) for s in self.sketches])

    def merge_into(self, other: "FeatureStats") -> None:
        """Fold ``other`` into this one, in place (``other`` unchanged)."""
        if self.shape != other.shape:
            raise ValueError(f"cannot merge statistics of shape {self.shape} and {other.shape}")
        self.rows += other.rows
        self.k = max(self.k, other.k)
        self._combine(other.count, other.mean, other.m2, other.min, other.max)
        for a, b in zip(self.sketches, other.sketches):
            if not b.is_empty():
                a.merge(b)

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """A new FeatureStats of both inputs (Chan's parallel mean / M2 update); inputs unchanged."""
        out = self.copy()
        out.merge_into(other)
        return out

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.divide(self.m2, self.count, out=np.full(len(self.m2), np.nan), where=self.count > 0))

    def quantile(self, q: float) -> np.ndarray:
        return np.array([s.get_quantile(q) if not s.is_empty() else np.nan for s in self.sketches])

    def to_json(self) -> dict:
        """The per-feature entry of ``stats.json``."""
        has = self.count > 0
        out = {
            "count": int(self.rows),
            "shape": list(self.shape),
            "mean": _floats(np.where(has, self.mean, np.nan)),
            "std": _floats(self.std),
            "min": _floats(np.where(has, self.min, np.nan)),
            "max": _floats(np.where(has, self.max, np.nan)),
        }
        for key, q in QUANTILES.items():
            out[key] = _floats(self.quantile(q))
        if np.any(self.count != self.rows):
            out["nonfinite"] = [int(self.rows - c) for c in self.count]
        return out

    def to_state(self) -> dict:
        return {"shape": list(self.shape), "k": self.k, "rows": self.rows, "count": self.count,
                "mean": self.mean, "m2": self.m2, "min": self.min, "max": self.max,
                "sketches": [s.serialize() for s in self.sketches]}

    @classmethod
    def from_state(cls, st: Mapping) -> "FeatureStats":
        kll = _kll()
        return cls(tuple(st["shape"]), int(st["k"]), int(st["rows"]), np.asarray(st["count"], np.int64),
                   np.asarray(st["mean"], np.float64), np.asarray(st["m2"], np.float64),
                   np.asarray(st["min"], np.float64), np.asarray(st["max"], np.float64),
                   [kll.deserialize(bytes(b)) for b in st["sketches"]])


def _floats(a: np.ndarray) -> list:
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, np.float64)]


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()   # float64 -> Python floats: repr round-trips exactly; +-inf of empty dims kept
    if isinstance(v, (bytes, bytearray)):
        return {"b64": base64.b64encode(v).decode("ascii")}
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _unplain(v):
    if isinstance(v, Mapping):
        return base64.b64decode(v["b64"]) if set(v) == {"b64"} else {k: _unplain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unplain(x) for x in v]
    return v


def dump_state(state: Mapping) -> bytes:
    """A :meth:`StatsPartial.to_state` as JSON bytes (sketches base64): how a shard's partial is stored
    beside its done marker (``_index/shard-NNNNNN.stats.json``) and carried back from a conversion task."""
    return json.dumps(_plain(state), separators=(",", ":")).encode()


def load_state(data: bytes) -> dict:
    """The inverse of :func:`dump_state` (arrays come back as lists; :meth:`StatsPartial.from_state`
    takes either)."""
    return _unplain(json.loads(data))


@dataclass
class StatsPartial:
    """Statistics of a set of episodes: per embodiment, per feature; plus counters for the report.

    ``flags[embodiment][feature] = [true_count, total]`` for boolean features; ``counters`` holds
    Counters keyed by name (``action_space``, ``language``, ``camera``) filled from episode metadata.
    """

    k: int = DEFAULT_K
    episodes: int = 0
    steps: int = 0
    groups: dict[str, dict[str, FeatureStats]] = field(default_factory=dict)
    flags: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    counters: dict[str, Counter] = field(default_factory=dict)

    def add_episode(self, embodiment: str, arrays: Mapping[str, np.ndarray], num_steps: int | None = None,
                    meta: Mapping | None = None) -> None:
        """Fold one episode in: ``arrays`` maps feature name -> (T, *shape) values."""
        group = self.groups.setdefault(embodiment, {})
        flags = self.flags.setdefault(embodiment, {})
        for name, values in arrays.items():
            values = np.asarray(values)
            if values.dtype == np.bool_:
                tc = flags.setdefault(name, [0, 0])
                tc[0] += int(values.sum())
                tc[1] += int(values.size)
                continue
            if not (np.issubdtype(values.dtype, np.number)) or np.issubdtype(values.dtype, np.complexfloating):
                continue
            if name not in group:
                group[name] = FeatureStats.empty(values.shape[1:], self.k)
            group[name].update(values)
        self.episodes += 1
        if num_steps is None:
            num_steps = len(next(iter(arrays.values()))) if arrays else 0
        self.steps += int(num_steps)
        if meta is not None:
            self._count_meta(meta)

    def _count_meta(self, meta: Mapping) -> None:
        c = self.counters
        c.setdefault("action_space", Counter())[str(meta.get("action_space", "unknown"))] += 1
        has_lang = bool(meta.get("language")) or bool(meta.get("tasks")) or bool(meta.get("task"))
        c.setdefault("language", Counter())["with" if has_lang else "without"] += 1
        cams = meta.get("cameras") or {}
        items = cams.items() if isinstance(cams, Mapping) else ((n, {}) for n in cams)
        for name, cam in items:
            cam = cam if isinstance(cam, Mapping) else {}
            w, h, fps = cam.get("width"), cam.get("height"), cam.get("fps", meta.get("fps"))
            res = f"{w}x{h}" if w and h else "?"
            c.setdefault("camera", Counter())[f"{name}|{res}|{_num(fps)}"] += 1

    def observe(self, episode, meta: Mapping) -> None:
        """Fold in a :class:`wamdata.schema.Episode` as the writer stores it (``meta`` is its
        ``<key>.json``): the same values and metadata :func:`shard_partial` reads back from the shard.
        With :meth:`to_bytes` this is the writer's per-shard summary
        (:class:`wamdata.format.writer.ShardSummary`)."""
        names = stats_features(episode.features) + flag_features(episode.features)
        self.add_episode(str(meta.get("embodiment", "unknown")),
                         {n: episode.steps[n] for n in names if n in episode.steps},
                         num_steps=episode.num_steps, meta=meta)

    def to_bytes(self) -> bytes:
        return dump_state(self.to_state())

    def merge_into(self, other: "StatsPartial") -> None:
        """Fold ``other`` into this partial, in place (``other`` unchanged)."""
        self.k = max(self.k, other.k)
        self.episodes += other.episodes
        self.steps += other.steps
        for e, g in other.groups.items():
            dst = self.groups.setdefault(e, {})
            for n, fs in g.items():
                if n in dst:
                    dst[n].merge_into(fs)
                else:
                    dst[n] = fs.copy()
        for e, g in other.flags.items():
            dst = self.flags.setdefault(e, {})
            for n, (t, c) in g.items():
                acc = dst.setdefault(n, [0, 0])
                acc[0] += t
                acc[1] += c
        for n, c in other.counters.items():
            self.counters.setdefault(n, Counter()).update(c)

    def to_state(self) -> dict:
        return {"k": self.k, "episodes": self.episodes, "steps": self.steps,
                "groups": {e: {n: f.to_state() for n, f in g.items()} for e, g in self.groups.items()},
                "flags": {e: {n: list(v) for n, v in g.items()} for e, g in self.flags.items()},
                "counters": {n: dict(c) for n, c in self.counters.items()}}

    @classmethod
    def from_state(cls, st: Mapping) -> "StatsPartial":
        return cls(int(st["k"]), int(st["episodes"]), int(st["steps"]),
                   {e: {n: FeatureStats.from_state(f) for n, f in g.items()} for e, g in st["groups"].items()},
                   {e: {n: list(v) for n, v in g.items()} for e, g in st["flags"].items()},
                   {n: Counter(c) for n, c in st["counters"].items()})

    def overall(self) -> dict[str, FeatureStats]:
        """The ``all`` group: every embodiment merged (a feature whose shape differs between
        embodiments has no overall entry)."""
        out: dict[str, FeatureStats] = {}
        skip: set[str] = set()
        for group in self.groups.values():
            for name, fs in group.items():
                if name in skip:
                    continue
                if name in out and out[name].shape != fs.shape:
                    log.warning("%s: shape differs between embodiments (%s vs %s); no overall statistics",
                                name, out[name].shape, fs.shape)
                    skip.add(name)
                    del out[name]
                    continue
                if name in out:
                    out[name].merge_into(fs)
                else:
                    out[name] = fs.copy()
        return out

    def to_json(self) -> dict:
        """The content of ``stats.json``."""
        kll = _kll()
        return {
            "format_version": STATS_FORMAT_VERSION,
            "episodes": self.episodes,
            "steps": self.steps,
            "sketch": {"kind": "kll_doubles", "k": self.k,
                       "normalized_rank_error": kll(self.k).normalized_rank_error(False)},
            "by_embodiment": {e: {n: g[n].to_json() for n in sorted(g)} for e, g in sorted(self.groups.items())},
            "all": {n: fs.to_json() for n, fs in sorted(self.overall().items())},
            "flags": _flag_json(self.flags),
            "counters": {n: dict(sorted(c.items())) for n, c in sorted(self.counters.items())},
        }


def _num(v):
    if v is None:
        return "?"
    return f"{float(v):g}"


def _flag_json(flags: Mapping[str, Mapping[str, list[int]]]) -> dict:
    """Boolean features: ``{"by_embodiment": {e: {name: {"true": t, "count": n, "fraction": f}}},
    "all": {...}}``."""
    def entry(t, n):
        return {"true": int(t), "count": int(n), "fraction": (t / n) if n else None}

    total: dict[str, list[int]] = {}
    by = {}
    for e, g in sorted(flags.items()):
        by[e] = {n: entry(*v) for n, v in sorted(g.items())}
        for n, (t, c) in g.items():
            acc = total.setdefault(n, [0, 0])
            acc[0] += t
            acc[1] += c
    return {"by_embodiment": by, "all": {n: entry(*v) for n, v in sorted(total.items())}}


def merge(a: StatsPartial, b: StatsPartial) -> StatsPartial:
    """The statistics of both partials; pure (neither input is modified)."""
    out = StatsPartial(max(a.k, b.k))
    out.merge_into(a)
    out.merge_into(b)
    return out


def merge_all(partials: Iterable[StatsPartial], k: int = DEFAULT_K) -> StatsPartial:
    """Fold any number of partials into a new one, holding one at a time (inputs unchanged)."""
    out = StatsPartial(k)
    for p in partials:
        out.merge_into(p)
    return out


# ----------------------------------------------------------------------------------------------------
# over a dataset


def _is_numeric_dtype(dtype: str) -> bool:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return False
    return (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)) and dt != np.bool_


def _per_step_values(feature) -> int:
    return int(np.prod(getattr(feature, "shape", ()) or (), dtype=np.int64))


def stats_features(features: Mapping) -> list[str]:
    """Names of the features that get statistics: numeric ``state.*`` / ``action.*`` / ``extra.*`` of
    at most :data:`MAX_STATS_VALUES` values per step."""
    return sorted(n for n, f in features.items()
                  if n.startswith(STAT_PREFIXES) and _is_numeric_dtype(getattr(f, "dtype", ""))
                  and _per_step_values(f) <= MAX_STATS_VALUES)


def flag_features(features: Mapping) -> list[str]:
    """Names of the boolean ``extra.*`` / ``state.*`` / ``action.*`` features (counted, not normalised)."""
    return sorted(n for n, f in features.items()
                  if n.startswith(STAT_PREFIXES) and str(getattr(f, "dtype", "")) in ("bool", "bool_"))


def _episode_arrays(ep, names: Sequence[str]) -> dict[str, np.ndarray]:
    steps = ep.steps
    cols = set(steps.column_names)
    return {n: ep.array(n) for n in names if n in cols}


def shard_partial(dataset_path: str, shard: str, k: int = DEFAULT_K, keep: Mapping | None = None) -> dict:
    """Statistics of one shard, as a serialisable state (what a Ray task returns). ``keep`` (a view's
    selection: episode id -> kept [start, stop) step ranges, or None for the whole episode) counts
    only those episodes and steps."""
    import wamdata
    from wamdata.loader.manifest import kept_steps_mask

    ds = wamdata.open_dataset(dataset_path)
    names = stats_features(ds.features) + flag_features(ds.features)
    part = StatsPartial(k)
    for ep in ds.iter_shard(shard, only=("json", "steps.parquet")):
        meta = ep.meta
        arrays = _episode_arrays(ep, names)
        n = ep.steps.num_rows
        if keep is not None:
            if ep.episode_id not in keep:
                continue
            rows = kept_steps_mask(keep[ep.episode_id], n)
            arrays, n = {name: a[rows[: len(a)]] for name, a in arrays.items()}, int(rows.sum())
        part.add_episode(str(meta.get("embodiment", "unknown")), arrays, num_steps=n, meta=meta)
    return part.to_state()


MapShards = Callable[[str, Sequence[str], int], Iterable[dict]]


def _map_local(dataset_path: str, shards: Sequence[str], k: int) -> Iterable[dict]:
    for shard in shards:
        yield shard_partial(dataset_path, shard, k)


def finish(dataset_path: str, states: Iterable[dict], k: int = DEFAULT_K, write: bool = True) -> dict:
    """Merge shard states into the ``stats.json`` content; write it at the dataset root."""
    acc = StatsPartial(k)
    for st in states:
        part = StatsPartial.from_state(st)  # fresh objects: fold without copying where possible
        if acc.episodes == 0 and not acc.groups:
            part.k = max(part.k, k)
            acc = part
        else:
            acc.merge_into(part)
    stats = acc.to_json()
    if write:
        write_stats(dataset_path, stats)
    return stats


def compute_stats(dataset_path: str, *, k: int = DEFAULT_K, map_shards: MapShards | None = None,
                  write: bool = True) -> dict:
    """Statistics of a dataset, computed in this process (``map_shards`` may run the per-shard work
    elsewhere: it is called as ``map_shards(dataset_path, shards, k)`` and yields shard states).
    Writes ``stats.json`` at the dataset root (atomically) and returns its content.

    For a Ray fan-out over shards use ``pipelines.stats_job.compute_stats(path, workers=N)``.
    """
    import wamdata

    ds = wamdata.open_dataset(dataset_path)
    states = (map_shards or _map_local)(dataset_path, list(ds.shards), k)
    return finish(dataset_path, states, k, write=write)


def conversion_stats(dataset_path: str, parts: Iterable[tuple[str, bytes | None]], k: int = DEFAULT_K,
                     write: bool = True) -> dict:
    """``stats.json`` at the end of a conversion: the merge of every committed shard's partial, as the
    conversion tasks computed and stored them (``parts``: ``(shard, dump_state bytes)`` pairs, see
    :meth:`wamdata.format.index.DatasetIndex.shard_summaries`), folded in one at a time. A shard
    without one (written by an older wamdata, or without statistics) is read back with
    :func:`shard_partial`, so a resumed or extended dataset gets the statistics of all its shards, each
    counted once."""
    def states():
        missing = 0
        for shard, data in parts:
            if data is None:
                missing += 1
                yield shard_partial(dataset_path, shard, k)
            else:
                yield load_state(data)
        if missing:
            log.info("%s: %d shards had no stored statistics; their steps were read", dataset_path, missing)

    return finish(dataset_path, states(), k, write=write)


def write_stats(dataset_path: str, stats: Mapping) -> str:
    """Write ``stats.json`` at the dataset root: to a temporary name, then renamed into place."""
    fs, root = layout.open_fs(str(dataset_path))
    final = layout.join(root, STATS_FILE)
    tmp = layout.join(root, f".{STATS_FILE}.{uuid.uuid4().hex}.tmp")
    data = json.dumps(stats, indent=1, allow_nan=False).encode()
    try:
        fs.pipe_file(tmp, data)
        fs.mv(tmp, final)
    except OSError as e:
        raise FormatError(f"{final}: cannot write statistics: {e}") from e
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)
    return final


def load_stats(dataset_path: str) -> dict:
    """The content of ``stats.json``; FormatError naming the path and the command that writes it."""
    fs, root = layout.open_fs(str(dataset_path))
    path = layout.join(root, STATS_FILE)
    try:
        with fs.open(path, "rb") as f:
            stats = json.loads(f.read())
    except FileNotFoundError:
        raise FormatError(f"{path}: no statistics for this dataset; write them with `wamdata stats {dataset_path}`") from None
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: unreadable statistics ({e}); rewrite them with `wamdata stats {dataset_path}`") from e
    version = stats.get("format_version") if isinstance(stats, dict) else None
    if version != STATS_FORMAT_VERSION:
        raise FormatError(f"{path}: statistics format version {version!r}, this wamdata reads "
                          f"{STATS_FORMAT_VERSION}; rewrite them with `wamdata stats {dataset_path}`")
    return stats
