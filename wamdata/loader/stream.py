"""WamStream: windows from one dataset or a mixture, streamed, shuffled, split and resumable.

The work of one epoch is split over ``num_consumers = world_size * num_workers`` consumers
(consumer = rank * num_workers + worker). A consumer's epoch is a pure function of
(seed, epoch, consumer, index): :func:`plan.mixture_counts` picks the dataset of each sample by
weight, each dataset walks its passes (:meth:`plan.DatasetPlan.block`) through a
:class:`plan.WindowScheduler`, and episodes are read shard by shard with :class:`BlockReader`.
Resume state is (epoch, samples emitted per consumer); loading it replays the counts, reloads the
episodes that were in the buffer and goes on with exactly the samples an uninterrupted run would give.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import replace
from functools import cached_property
from typing import Iterator

import numpy as np
import pyarrow.compute as pc

from wamdata.errors import ConfigError, FormatError, WamdataError
from wamdata.loader.config import LoaderConfig
from wamdata.loader.manifest import DatasetSpec, is_manifest_path, load_manifest, select_rows
from wamdata.loader.plan import DatasetPlan, EpisodeRef, WindowScheduler, mixture_counts
from wamdata.loader.vectors import Normalizer, VectorLayout, read_stats
from wamdata.loader.windows import DatasetContext, LoadedEpisode

log = logging.getLogger(__name__)

STATE_VERSION = 2  # 2: states carry the plan digest
_MAX_EMPTY_PASSES = 64


class _Source:
    """One dataset of the stream: its selected index rows and plan. The open Dataset handle is not
    pickled; each worker reopens it on first use."""

    def __init__(self, index: int, spec: DatasetSpec, cfg: LoaderConfig, split_fracs):
        import wamdata

        self.index, self.spec = index, spec
        self._ds = wamdata.open_dataset(spec.path)
        full = self._ds.episodes
        sizes = pc.sum(full["size"]).as_py() if full.num_rows else 0
        shard_bytes = {}
        if full.num_rows:
            for shard, size in zip(full["shard"].to_pylist(), full["size"].to_pylist()):
                shard_bytes[shard] = shard_bytes.get(shard, 0) + int(size)
        self.bytes = sizes
        rows = select_rows(full, spec, cfg.split, split_fracs)
        self.plan = DatasetPlan(rows, cfg.fps, cfg.window_stride, shard_bytes, spec.ranges)
        self.features = self._ds.features
        self.cameras = dict(self._ds.info.get("cameras", {}))
        self.ctx: DatasetContext | None = None

    @property
    def ds(self):
        if self._ds is None:
            import wamdata

            self._ds = wamdata.open_dataset(self.spec.path)
        return self._ds

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ds"] = None
        return state


class BlockReader:
    """Episodes of a block in order: whole shards through one sequential read (``iter_shard``) when
    the block needs at least half of a shard's bytes, otherwise each episode by its byte range."""

    def __init__(self, source: _Source, refs: list[EpisodeRef]):
        self.source, self.refs = source, refs
        self._it, self._shard, self._at = None, None, -1   # _at: byte offset of the last episode read

    def close(self):
        if self._it is not None:
            self._it.close()
        self._it, self._shard, self._at = None, None, -1

    def _members(self) -> tuple[str, ...]:
        """Tar members the windows need: videos of other cameras are seeked over, not read."""
        return ("json", "steps.parquet", *(f"{c}.mp4" for c in self.source.ctx.cfg.cameras))

    def _scan(self, ref: EpisodeRef):
        for ep in self._it:
            if ep.episode_id == ref.episode_id:
                self._at = ref.offset
                return ep
        self.close()
        return None

    def get(self, pos: int):
        ref = self.refs[pos]
        # the open shard read only goes forward: an episode at or before the last one read (an
        # episode read again on resume) must not scan on through the rest of the shard
        if self._shard == ref.shard and ref.offset > self._at:
            ep = self._scan(ref)
            if ep is not None:
                return ep
        self.close()
        need, n = 0, 0
        for r in self.refs[pos:]:
            if r.shard != ref.shard:
                break
            need += r.size
            n += 1
        if n > 1 and need * 2 >= self.source.plan.shard_bytes.get(ref.shard, need):
            self._it, self._shard = self.source.ds.iter_shard(ref.shard, only=self._members()), ref.shard
            ep = self._scan(ref)
            if ep is not None:
                return ep
        return self.source.ds.episode(ref.episode_id)


class _DatasetCursor:
    """One dataset's windows for one consumer: pass after pass through its blocks."""

    def __init__(self, stream: "WamStream", source: _Source, epoch: int, consumer: int, n: int, decoder):
        self.stream, self.source, self.epoch = stream, source, epoch
        self.consumer, self.n, self.decoder = consumer, n, decoder
        self._ahead = None   # (pos, future): the next episode, read and decoded in a thread
        self._pool = None
        self.pass_ = -1
        self._start_pass(0)

    def _block(self, pass_: int) -> list[EpisodeRef]:
        return self.stream._block(self.source, self.epoch, pass_, self.consumer, self.n)

    def _start_pass(self, pass_: int):
        cfg = self.stream.config
        self.pass_ = pass_
        self.refs = self._block(pass_)
        self.sched = WindowScheduler([r.windows for r in self.refs], cfg.shuffle_buffer, cfg.max_live_episodes,
                                     cfg.seed, self.epoch, self.source.index, pass_, self.consumer)
        if getattr(self, "reader", None) is not None:
            self._drop_ahead()
            self.reader.close()
        self.reader = BlockReader(self.source, self.refs)
        self.loaded: dict[int, LoadedEpisode] = {}

    def _read(self, pos: int, anchors) -> LoadedEpisode:
        return LoadedEpisode(self.reader.get(pos), self.source.ctx, anchors, self.decoder, self.refs[pos].ranges)

    def _drop_ahead(self):
        """Wait for a read-ahead in flight (the block reader is not shared between threads)."""
        if self._ahead is not None:
            self._ahead[1].exception()
            self._ahead = None

    def _read_ahead(self, pos: int):
        """Read and decode episode ``pos`` in a background thread while the caller cuts and collates
        windows of the episodes already loaded: PyAV, OpenCV and numpy copies release the GIL, so on
        two cores decoding and collation overlap. The thread is created lazily, inside the worker."""
        if self.stream.config.read_ahead and pos < len(self.refs) and pos not in self.loaded:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(1, thread_name_prefix="wamdata-read-ahead")
            # not live yet, so every window of it is pending (LoadedEpisode uses the anchors as a set)
            anchors = np.arange(self.refs[pos].windows)
            self._ahead = (pos, self._pool.submit(self._read, pos, anchors))

    def _load(self, pos: int):
        ahead, self._ahead = self._ahead, None
        try:
            if ahead is not None and ahead[0] == pos:
                # read for all of the episode's windows: also serves a resumed episode's remaining
                # ones (frames of windows already emitted are just held until the episode is done)
                self.loaded[pos] = ahead[1].result()
            else:
                if ahead is not None:
                    ahead[1].exception()
                self.loaded[pos] = self._read(pos, self.sched.pending_anchors(pos))
        except (WamdataError, OSError) as e:   # OSError: a shard gone or unreadable
            if self.stream.config.on_error != "skip":
                raise
            # Its windows still take their turns (and count as emitted), so resume stays exact.
            log.warning("%s: episode %r skipped: %s", self.source.spec.path, self.refs[pos].episode_id, e)
            self.loaded[pos] = None
        self._read_ahead(pos + 1)

    def skip(self, count: int):
        """Position after ``count`` windows of this consumer's epoch without decoding anything
        but the episodes pending in the buffer at that point."""
        pass_ = 0
        while True:
            total = sum(r.windows for r in self._block(pass_))
            if count <= total:
                break
            count -= total
            pass_ += 1
        self._start_pass(pass_)
        live = self.sched.fast_forward(count)
        for pos in live:
            self._load(pos)

    def next(self, stack: bool = True) -> dict | None:
        """The next window, or None for a turn of an episode skipped by ``on_error="skip"``."""
        empty = 0
        while True:
            ev = self.sched.step()
            if ev is None:
                empty = empty + 1 if not self.refs or not any(r.windows for r in self.refs) else 0
                if empty > _MAX_EMPTY_PASSES:
                    raise ConfigError(f"{self.source.spec.path}: too few episodes for {self.n} consumers "
                                      "(ranks x workers); use fewer workers or a larger dataset")
                self._start_pass(self.pass_ + 1)
                continue
            if ev[0] == "load":
                self._load(ev[1])
                continue
            _, pos, anchor, last = ev
            ep = self.loaded[pos]
            sample = ep.window(anchor, stack) if ep is not None else None
            if last:
                del self.loaded[pos]
            return sample

    def close(self):
        self._drop_ahead()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.reader.close()


def _rank_world(cfg: LoaderConfig) -> tuple[int, int]:
    if cfg.world_size is not None:
        return cfg.rank, cfg.world_size
    dist = sys.modules.get("torch.distributed")  # never import torch here; set up by the trainer
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class WamStream:
    """Training windows from a dataset path or a manifest (see :mod:`wamdata.loader.manifest`).

    >>> stream = WamStream("data/droid", cameras=["exterior_1", "wrist"], history=2, future=[4, 8, 16])
    >>> for sample in stream: ...                       # numpy dicts, this process = one consumer
    >>> dl = stream.dataloader(batch_size=64, num_workers=4)   # torch, resumable with several workers
    """

    def __init__(self, path_or_manifest, config: LoaderConfig | None = None, **knobs):
        if config is not None and knobs:
            config = replace(config, **knobs)
        self.config = config if config is not None else LoaderConfig(**knobs)
        cfg = self.config
        self.manifest = load_manifest(path_or_manifest)
        self.sources = [self._open_source(i, spec) for i, spec in enumerate(self.manifest.datasets)]
        empty = [s for s in self.sources if s.plan.total_windows == 0]
        for s in empty:
            sel = {k: v for k, v in (("filter", s.spec.filter), ("episodes", s.spec.episodes and
                   f"{len(s.spec.episodes)} ids"), ("split", cfg.split)) if v} or "the dataset has no episodes"
            msg = f"{s.spec.path}: the selection leaves no windows ({sel})"
            if len(empty) == len(self.sources):
                raise ConfigError(f"{msg}: the stream would be empty; check the ids, filter or split")
            log.warning("%s; its weight goes to the other datasets", msg)
        if self.manifest.split and cfg.split is None:
            log.warning("%s defines splits %s but no split= was given: the stream reads every episode, "
                        "%s included", self.manifest.source or "the manifest",
                        [n for n, _ in self.manifest.split], " and ".join(n for n, _ in self.manifest.split))
        if cfg.fps is None:
            rates = {s.spec.path: sorted(set(s.plan.rows.column("fps").to_pylist())) for s in self.sources}
            if len({r for rs in rates.values() for r in rs}) > 1:
                # history, future offsets and action chunks count steps: mixed rates mix time spans
                log.warning("the stream mixes step rates %s without fps=: a window's future offsets and "
                            "action chunk span different times per dataset; set fps= to resample to one",
                            {p: [f"{r:g} Hz" for r in rs] for p, rs in rates.items()})
        feats = [s.features for s in self.sources]
        self.state_layout = VectorLayout.build("state", [{n: f for n, f in fs.items() if n.startswith("state.")}
                                                         if cfg.state_features is None else fs for fs in feats],
                                               cfg.state_features)
        self.action_layout = VectorLayout.build("action", [{n: f for n, f in fs.items() if n.startswith("action.")}
                                                           if cfg.action_features is None else fs for fs in feats],
                                                cfg.action_features)
        if isinstance(cfg.normalize, dict):
            vector = set(self.state_layout.names + self.action_layout.names)
            stray = sorted(set(cfg.normalize) - vector)
            if stray:
                raise ConfigError(f"normalize names {stray}, which no state or action vector of this stream "
                                  f"holds (a typo would stream them unnormalised); known: {sorted(vector)}")
        frame_shape = {}
        for cam in cfg.cameras:
            if cfg.image_size is not None:
                frame_shape[cam] = cfg.image_size
                continue
            for s in self.sources:
                if cam in s.cameras:
                    frame_shape[cam] = (int(s.cameras[cam]["height"]), int(s.cameras[cam]["width"]))
                    break
        known = sorted({c for s in self.sources for c in s.cameras})
        unknown = [c for c in cfg.cameras if not any(c in s.cameras for s in self.sources)]
        if unknown:
            raise ConfigError(f"cameras {unknown} are in no dataset of the stream; known: {known}")
        for s in self.sources:
            used = [n for n in self.state_layout.names + self.action_layout.names
                    if n in s.features and cfg.normalize_mode(n)]
            stats = read_stats(s.spec.path) if used and s.plan.rows.num_rows else None
            s.ctx = DatasetContext(s.index, s.spec.label, cfg, self.state_layout, self.action_layout,
                                   Normalizer(stats, cfg.normalize_mode, s.spec.path), frame_shape,
                                   frozenset(n for n, f in s.features.items() if f.encoding == "delta"))
        self.epoch = 0
        self._emitted = 0

    def _open_source(self, i: int, spec: DatasetSpec) -> _Source:
        try:
            return _Source(i, spec, self.config, self.manifest.split)
        except (ConfigError, FormatError) as e:
            if not is_manifest_path(self.manifest.source):
                raise
            # a mistyped path or filter is the manifest's mistake: say which file and entry
            raise type(e)(f"{self.manifest.source}: datasets[{i}]: {e}") from e

    # ---- sizes ---------------------------------------------------------------------------------
    def consumer_length(self, epoch: int, consumer: int, num_consumers: int) -> int:
        """Samples consumer ``consumer`` of ``num_consumers`` yields in ``epoch``."""
        spe = self.config.samples_per_epoch
        if spe is None and len(self.sources) > 1:
            # a mixture's epoch: as many samples as its datasets have windows, shared evenly, whatever
            # the number of consumers (counting each consumer's blocks would count shared blocks twice)
            spe = self.total_windows
        if spe == "even":
            # whole episodes go to one consumer, so shares differ by up to an episode's windows; an
            # equal count leaves a long share's tail for the next epoch and cycles a short one
            spe = self.total_windows // num_consumers * num_consumers
            if spe == 0:
                raise ConfigError(f"samples_per_epoch='even': {self.total_windows} windows cannot give "
                                  f"each of {num_consumers} consumers (ranks x workers) one")
        if spe is not None:
            if _rank_world(self.config)[1] > 1:
                # every rank the same count (one with more batches would wait in a collective for
                # the others): a remainder of N over ranks x workers is dropped
                return spe // num_consumers
            return spe // num_consumers + (1 if consumer < spe % num_consumers else 0)
        return sum(self._first_pass_windows(epoch, consumer, num_consumers))

    def _first_pass_windows(self, epoch, consumer, n) -> list[int]:
        return [sum(r.windows for r in self._block(s, epoch, 0, consumer, n)) for s in self.sources]

    def _block(self, source: _Source, epoch: int, pass_: int, consumer: int, n: int) -> list[EpisodeRef]:
        """The episodes ``consumer`` of ``n`` reads from ``source`` in a pass. Alone, a dataset is
        split so each window is read once per epoch. In a mixture, a consumer left without episodes
        of a small dataset shares another consumer's block: otherwise it would never sample that
        dataset, and its weight would shrink as ranks x workers grow. With
        ``samples_per_epoch="even"`` too: every consumer owes the same count."""
        return source.plan.block(self.config.seed, epoch, source.index, pass_, consumer, n,
                                 shared=len(self.sources) > 1 or self.config.samples_per_epoch == "even")

    def num_samples(self, epoch: int | None = None, num_workers: int = 1) -> int:
        """Samples this rank yields in one epoch (all its workers together)."""
        rank, world = _rank_world(self.config)
        e = self.epoch if epoch is None else epoch
        n = world * max(1, num_workers)
        return sum(self.consumer_length(e, rank * max(1, num_workers) + w, n) for w in range(max(1, num_workers)))

    def __len__(self) -> int:
        return self.num_samples()

    @property
    def total_windows(self) -> int:
        return sum(s.plan.total_windows for s in self.sources)

    # ---- the consumer's sample sequence ---------------------------------------------------------
    def iter_consumer(self, epoch: int, consumer: int, num_consumers: int, start: int = 0,
                      stack: bool = True) -> Iterator[tuple[int, dict]]:
        """(count emitted so far including this one, sample) for one consumer's epoch from ``start``.
        ``stack=False``: frames as lists of arrays (see :func:`wamdata.loader.batch.collate`)."""
        from wamdata.format.video import get_decoder

        cfg = self.config
        total = self.consumer_length(epoch, consumer, num_consumers)
        if start >= total:
            return
        first = self._first_pass_windows(epoch, consumer, num_consumers)
        weights = [s.spec.weight if w > 0 else 0.0 for s, w in zip(self.sources, first)]
        if not any(weights):
            return
        decoder = get_decoder(cfg.decoder, cfg.decoder_threads)   # created here: in the worker
        picks = mixture_counts(weights, total, cfg.seed, epoch, consumer)
        done = np.zeros(len(self.sources), np.int64)
        for _ in range(start):
            done[next(picks)] += 1
        cursors: dict[int, _DatasetCursor] = {}
        try:
            for d in np.nonzero(done)[0]:
                cursors[int(d)] = c = _DatasetCursor(self, self.sources[d], epoch, consumer, num_consumers, decoder)
                c.skip(int(done[d]))
            i = start
            for d in picks:
                c = cursors.get(d)
                if c is None:
                    cursors[d] = c = _DatasetCursor(self, self.sources[d], epoch, consumer, num_consumers, decoder)
                sample = c.next(stack)
                i += 1
                if sample is not None:
                    yield i, sample
        finally:
            for c in cursors.values():
                c.close()

    # ---- plain iteration: this process is one consumer ------------------------------------------
    def _roll_finished_epoch(self) -> None:
        """A loop that stopped right after the epoch's last sample never let the epoch end: the next
        iteration (and a state taken now) starts the next epoch, not an empty remainder."""
        rank, world = _rank_world(self.config)
        if self._emitted and self._emitted >= self.consumer_length(self.epoch, rank, world):
            self.epoch, self._emitted = self.epoch + 1, 0

    def __iter__(self) -> Iterator[dict]:
        self._roll_finished_epoch()
        rank, world = _rank_world(self.config)
        epoch = self.epoch
        for i, sample in self.iter_consumer(epoch, rank, world, self._emitted):
            self._emitted = i
            yield sample
        self._end_epoch(epoch)

    def _end_epoch(self, epoch: int) -> None:
        if self.epoch == epoch:   # not already rolled over by a state_dict() after the last sample
            self.epoch, self._emitted = epoch + 1, 0

    def batches(self, batch_size: int) -> Iterator[dict]:
        """Plain iteration in numpy batches (frames copied once, straight into the batch arrays);
        the last batch of an epoch may be smaller. State as for plain iteration."""
        from wamdata.loader.batch import BufferPool, collate, pooled_alloc

        alloc = pooled_alloc(BufferPool())
        self._roll_finished_epoch()
        rank, world = _rank_world(self.config)
        epoch, group = self.epoch, []
        for i, sample in self.iter_consumer(epoch, rank, world, self._emitted, stack=False):
            group.append(sample)
            if len(group) == batch_size:
                self._emitted = i
                yield collate(group, alloc)
                group = []
        if group:
            self._emitted = i  # a checkpoint taken now must not replay this last, partial batch
            yield collate(group, alloc)
        self._end_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._emitted = int(epoch), 0

    @cached_property
    def plan_id(self) -> str:
        """A digest of everything that decides which samples come in which order: each dataset's
        weight and selected episodes (by id, so a dataset moved to another path still resumes) and the
        window and shuffle settings. A saved state only resumes a stream with the same plan."""
        cfg = self.config
        parts = [[s.spec.weight, s.plan.total_windows,
                  hashlib.sha1("\n".join(s.plan.rows.column("episode_id").to_pylist()).encode()).hexdigest()]
                 + ([hashlib.sha1(json.dumps(s.spec.keep_steps).encode()).hexdigest()] if s.spec.keep_steps else [])
                 for s in self.sources]
        parts.append([cfg.shuffle_buffer, cfg.max_live_episodes, cfg.window_stride, cfg.fps, cfg.split,
                      cfg.samples_per_epoch, cfg.history, list(cfg.future), cfg.action_horizon])
        return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()[:16]

    def make_state(self, epoch: int, emitted: list[int], rotation: int = 0) -> dict:
        """A resume state: a handful of integers (one emitted count per worker slot)."""
        rank, world = _rank_world(self.config)
        return {"version": STATE_VERSION, "seed": self.config.seed, "plan": self.plan_id, "epoch": int(epoch),
                "rank": rank, "world_size": world, "num_workers": len(emitted), "rotation": int(rotation),
                "emitted": [int(x) for x in emitted]}

    def state_dict(self) -> dict:
        self._roll_finished_epoch()
        return self.make_state(self.epoch, [self._emitted])

    def load_state_dict(self, state: dict) -> None:
        at_start = check_state(state, self, num_workers=1)
        self.epoch, self._emitted = int(state["epoch"]), 0 if at_start else int(state["emitted"][0])

    def denormalize(self, values, dataset: str, embodiment: str, kind: str = "action"):
        """``values`` (..., width) of the stream's action (or ``kind="state"``) vector, normalised as
        samples of ``dataset`` and ``embodiment`` are (a sample's ``dataset`` and ``embodiment``
        fields), back in the features' units: e.g. a model's predicted action chunk for the robot.
        numpy arrays or torch tensors; dimensions that were not normalised come back unchanged."""
        from wamdata.loader.vectors import denormalise

        layout = {"action": self.action_layout, "state": self.state_layout}.get(kind)
        if layout is None:
            raise ConfigError(f"kind must be 'action' or 'state', got {kind!r}")
        source = next((s for s in self.sources if s.spec.label == dataset), None)
        if source is None:
            raise ConfigError(f"no dataset {dataset!r} in this stream; its datasets: "
                              f"{[s.spec.label for s in self.sources]}")
        if tuple(values.shape[-1:]) != (layout.width,):
            raise ConfigError(f"{kind} vectors of this stream have {layout.width} dims, got shape "
                              f"{tuple(values.shape)}")
        return denormalise(layout, values, embodiment, source.ctx.normalizer, source.features)

    # ---- adapters ----------------------------------------------------------------------------------
    def torch(self, batch_size: int | None = None, num_workers: int = 0):
        """A ``torch.utils.data.IterableDataset`` of tensor samples (splits over DataLoader workers);
        with ``batch_size`` it yields whole batches (use ``DataLoader(..., batch_size=None)``), which
        saves a copy of every frame over the DataLoader's collation. Give the DataLoader's
        ``num_workers`` too for an exact ``len()`` (the split depends on it)."""
        from wamdata.loader.torch_adapter import TorchStream

        return TorchStream(self, batch_size=batch_size, num_workers=num_workers)

    def dataloader(self, batch_size: int, num_workers: int = 0, **kwargs):
        """A torch DataLoader over :meth:`torch` whose ``state_dict()`` resumes exactly, with any
        number of workers."""
        from wamdata.loader.torch_adapter import ResumableLoader

        return ResumableLoader(self, batch_size=batch_size, num_workers=num_workers, **kwargs)

    def ray_dataset(self, parallelism: int | None = None, epoch: int | None = None, block_rows: int = 32):
        """A Ray Data dataset of the same samples: one read task per consumer (a group of shards)."""
        from wamdata.loader.ray_adapter import ray_dataset

        return ray_dataset(self, parallelism, self.epoch if epoch is None else epoch, block_rows)


def check_state(state: dict, stream: WamStream, num_workers: int) -> bool:
    """Raises unless ``state`` resumes this stream with ``num_workers``; True when it was saved at the
    start of an epoch (nothing of it emitted yet).

    Mid-epoch, what is left depends on each consumer's share, so rank, world size and workers must
    match. At an epoch's start the next epoch comes whole however it is split, so the workers may
    differ; the world size may too, but only with ``samples_per_epoch`` set: a state says where its
    own rank stood, and only equal shares put every rank (in a lockstep loop) at the boundary with
    it; otherwise another rank's unfinished share would be skipped."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ConfigError(f"not a WamStream state (version {state.get('version') if isinstance(state, dict) else None}, "
                          f"want {STATE_VERSION})")
    cfg = stream.config
    if state.get("plan") != stream.plan_id:
        raise ConfigError(f"state was saved for another stream (plan {state.get('plan')}, this one {stream.plan_id}): "
                          "the datasets, their selection or the window/shuffle settings differ, so the "
                          "remaining samples would not be the ones left over")
    if state["seed"] != cfg.seed:
        raise ConfigError(f"state was saved with seed {state['seed']}, this stream has seed {cfg.seed}")
    at_start = not any(state["emitted"])
    rank, world = _rank_world(cfg)
    regrouped = at_start and state["world_size"] != world and cfg.samples_per_epoch is not None
    if (state["world_size"] != world or state["rank"] != rank) and not regrouped:
        where = "at an epoch's start" if at_start else "mid-epoch"
        raise ConfigError(f"state was saved {where} at rank {state['rank']} of {state['world_size']}; this stream "
                          f"is rank {rank} of {world}: each rank resumes from its own state; another world "
                          "size only from a state saved at an epoch's start with samples_per_epoch set "
                          "(equal shares, so every rank was at that boundary)")
    if not at_start and (state["num_workers"] != max(1, num_workers) or len(state["emitted"]) != max(1, num_workers)):
        raise ConfigError(f"state was saved mid-epoch with {state['num_workers']} worker(s), this loader has "
                          f"{max(1, num_workers)}: resuming mid-epoch needs the same number (a state saved "
                          "at an epoch's start resumes with any)")
    return at_start
