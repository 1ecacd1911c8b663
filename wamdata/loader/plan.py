"""Deterministic plans: what each consumer reads, and in which order windows leave its buffer.

Everything here is a pure function of (seed, epoch, pass, index sizes) and works on counts only, so
the resume state is a handful of integers: the stream replays :class:`WindowScheduler` up to the
number of samples already emitted, without reading or decoding anything.

- Shards are shuffled per (seed, epoch, dataset, pass); episodes keep their stored order inside a shard
  so each shard is read front to back.
- The episode sequence is cut into ``num_consumers`` contiguous blocks of about equal window counts
  (consumer = rank * num_workers + worker); every episode belongs to exactly one block.
- :class:`WindowScheduler` is the window-level shuffle buffer: it loads episodes in block order while
  fewer than ``buffer`` windows (and ``max_live`` episodes) are pending, and emits a uniformly random
  pending window each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

_TAG_SHARDS, _TAG_BUFFER, _TAG_MIX = 0x5A4D, 0xB0FF, 0x313C


def rng_for(*keys: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys])))


def num_windows(num_steps: np.ndarray, fps: np.ndarray, duration_s: np.ndarray, target_fps: float | None,
                stride: int) -> np.ndarray:
    """Windows per episode from index columns alone (so partitions never need the data)."""
    n = np.asarray(num_steps, np.int64)
    if target_fps is not None:
        span = np.asarray(duration_s, np.float64) - 1.0 / np.asarray(fps, np.float64)
        n = np.floor(np.maximum(span, 0.0) * target_fps + 1e-6).astype(np.int64) + 1
        n = np.where(np.asarray(num_steps) > 0, n, 0)
    return (n + stride - 1) // stride


def kept_anchors(n: int, fps: float, target_fps: float | None, stride: int,
                 ranges) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anchors of an episode's windows and the bounds each may reach, in (resampled) step indices.

    ``ranges`` (a view's kept [start, stop) ranges of stored steps, or None for the whole episode):
    a step is kept when the stored step it stands for (``round(k * fps / target_fps)`` when resampled)
    lies in a range; anchors are the kept steps on the stride's grid; a window's history, future and
    actions stay inside its anchor's range (``lo``..``hi``, inclusive) and are padded past it. From
    index columns alone, so the plan counts exactly the windows the episode yields."""
    k = np.arange(n)
    if ranges is None:
        t = k[::stride]
        return t, np.zeros(len(t), np.int64), np.full(len(t), max(n - 1, 0), np.int64)
    stored = k if target_fps is None else np.floor(k * (fps / target_fps) + 0.5).astype(np.int64)
    which = np.full(n, -1, np.int64)
    for r, (a, b) in enumerate(ranges):
        which[(stored >= a) & (stored < b)] = r
    lo, hi = np.zeros(len(ranges), np.int64), np.full(len(ranges), -1, np.int64)
    for r in range(len(ranges)):
        at = np.nonzero(which == r)[0]
        if len(at):
            lo[r], hi[r] = at[0], at[-1]
    t = k[(which >= 0) & (k % stride == 0)]
    return t, lo[which[t]], hi[which[t]]


def resampled_steps(num_steps: int, fps: float, duration_s: float, target_fps: float | None) -> int:
    if target_fps is None:
        return int(num_steps)
    return int(num_windows(np.array([num_steps]), np.array([fps]), np.array([duration_s]), target_fps, 1)[0])


@dataclass(frozen=True)
class EpisodeRef:
    row: int            # row in the dataset's selected index table
    episode_id: str
    shard: str
    offset: int
    size: int
    windows: int
    ranges: tuple[tuple[int, int], ...] | None = None   # a view's kept step ranges (None: all)


class DatasetPlan:
    """Per-dataset, index-level facts shared by every pass: selected rows grouped by shard."""

    def __init__(self, rows: pa.Table, target_fps: float | None, stride: int, shard_bytes: dict[str, int],
                 ranges: dict[str, tuple] | None = None):
        self.rows = rows
        # only the columns planning reads: whole rows as Python (member checksums, tasks, metadata)
        # would cost the driver kilobytes an episode
        cols = rows.select(["episode_id", "shard", "offset", "size", "num_steps", "fps", "duration_s"])
        d = cols.to_pydict() if rows.num_rows else {c: [] for c in cols.column_names}
        wins = num_windows(np.array(d["num_steps"], np.int64), np.array(d["fps"], np.float64),
                           np.array(d["duration_s"], np.float64), target_fps, stride) if rows.num_rows else []
        ranges = ranges or {}
        by_shard: dict[str, list[EpisodeRef]] = {}
        for i in range(rows.num_rows):
            kept = ranges.get(d["episode_id"][i])
            if kept is not None:
                n = resampled_steps(d["num_steps"][i], d["fps"][i], d["duration_s"][i], target_fps)
                wins[i] = len(kept_anchors(n, d["fps"][i], target_fps, stride, kept)[0])
            ref = EpisodeRef(i, d["episode_id"][i], d["shard"][i], int(d["offset"][i]), int(d["size"][i]),
                             int(wins[i]), kept)
            by_shard.setdefault(ref.shard, []).append(ref)
        self.shards = sorted(by_shard)
        self.by_shard = {s: sorted(v, key=lambda r: r.offset) for s, v in by_shard.items()}
        self.shard_bytes = shard_bytes
        self.total_windows = int(np.sum(wins)) if rows.num_rows else 0

    def episode_order(self, seed: int, epoch: int, dataset: int, pass_: int) -> list[EpisodeRef]:
        perm = rng_for(seed, epoch, dataset, pass_, _TAG_SHARDS).permutation(len(self.shards))
        return [r for i in perm for r in self.by_shard[self.shards[i]]]

    def block(self, seed: int, epoch: int, dataset: int, pass_: int, consumer: int,
              num_consumers: int, shared: bool = False) -> list[EpisodeRef]:
        """The episodes of ``consumer``. ``shared``: a consumer whose block is empty (a dataset with
        fewer episodes than consumers) reads, in turn, the block of one that has episodes."""
        order = self.episode_order(seed, epoch, dataset, pass_)
        windows = np.array([r.windows for r in order], np.int64)
        owner = block_owners(windows, num_consumers)
        mine = np.nonzero(owner == consumer)[0]
        if shared and not len(mine):
            have = np.unique(owner[windows > 0])
            if len(have):
                mine = np.nonzero(owner == have[consumer % len(have)])[0]
        return [order[i] for i in mine]


def block_owners(windows: np.ndarray, num_consumers: int) -> np.ndarray:
    """The consumer of each episode: episode i goes to floor(mid_i * N / total), where mid_i is the
    cumulative window count at its middle; monotone, so blocks are contiguous and disjoint."""
    total = int(windows.sum()) if len(windows) else 0
    if total == 0:
        return np.full(len(windows), -1, np.int64)
    cum = np.cumsum(windows)
    return np.minimum(((2 * cum - windows) * num_consumers) // (2 * total), num_consumers - 1)


class WindowScheduler:
    """The shuffle buffer over window *tokens* (episode position in the block, anchor index).

    ``step()`` returns ``("load", pos)`` when the episode at block position ``pos`` must be read next,
    ``("emit", pos, anchor, last)`` for the next window (``last``: the episode has no pending windows
    left) or None when the block is exhausted. The sequence depends only on the block's window counts
    and the seed, so :meth:`fast_forward` reproduces any point of it without touching data.
    """

    def __init__(self, windows: list[int], buffer: int, max_live: int, *seed_keys: int):
        self.windows = windows
        self.buffer = max(1, buffer)
        self.max_live = max_live if self.buffer > 1 else 1
        self.rng = rng_for(*seed_keys, _TAG_BUFFER)
        self.next_pos = 0
        self.live: list[list] = []          # [pos, anchor order (array or None), cursor]
        self.pending = 0
        self.emitted = 0

    def _want_load(self) -> bool:
        if self.next_pos >= len(self.windows):
            return False
        return not self.live or (self.pending < self.buffer and len(self.live) < self.max_live)

    def step(self):
        while self._want_load():
            pos = self.next_pos
            self.next_pos += 1
            n = self.windows[pos]
            if n == 0:
                continue
            order = self.rng.permutation(n) if self.buffer > 1 else None
            self.live.append([pos, order, 0])
            self.pending += n
            return ("load", pos)
        if not self.live:
            return None
        if self.buffer > 1 and len(self.live) > 1:
            r = int(self.rng.integers(self.pending))
            k = 0
            for k, (pos, order, cur) in enumerate(self.live):
                left = self.windows[pos] - cur
                if r < left:
                    break
                r -= left
        else:
            k = 0
        slot = self.live[k]
        pos, order, cur = slot
        anchor = int(order[cur]) if order is not None else cur
        slot[2] = cur + 1
        self.pending -= 1
        self.emitted += 1
        last = slot[2] == self.windows[pos]
        if last:
            self.live.pop(k)
        return ("emit", pos, anchor, last)

    def fast_forward(self, count: int) -> list[int]:
        """Advance past ``count`` emitted windows; returns the block positions of the live episodes,
        which the caller must (re)load before stepping on."""
        while self.emitted < count:
            if self.step() is None:
                break
        return [slot[0] for slot in self.live]

    def pending_anchors(self, pos: int) -> np.ndarray:
        """Anchors of a live episode still to be emitted (to know which frames are still needed)."""
        for p, order, cur in self.live:
            if p == pos:
                return (order[cur:] if order is not None else np.arange(cur, self.windows[p]))
        return np.zeros(0, np.int64)


def mixture_counts(weights: list[float], total: int, seed: int, epoch: int, consumer: int):
    """Yields the dataset index of each of the ``total`` samples of one consumer's epoch."""
    if len(weights) == 1:
        for _ in range(total):
            yield 0
        return
    rng = rng_for(seed, epoch, consumer, _TAG_MIX)
    p = np.asarray(weights, np.float64) / float(np.sum(weights))
    cdf = np.cumsum(p)
    done = 0
    while done < total:
        n = min(4096, total - done)
        for d in np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"):
            yield int(min(d, len(weights) - 1))
        done += n
