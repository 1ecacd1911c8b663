"""torch adapters: an IterableDataset split over DataLoader workers, and a DataLoader whose state
resumes exactly with any number of workers.

torch is imported only here (and only when these are used): ``pip install 'wamdata[torch]'``.
"""

from __future__ import annotations

import logging
import sys

from wamdata.errors import ConfigError
from wamdata.loader.stream import WamStream, _rank_world, check_state

log = logging.getLogger(__name__)


def _torch():
    try:
        import torch
        import torch.utils.data  # noqa: F401
    except ImportError as e:
        raise ConfigError("WamStream.torch() needs PyTorch: pip install 'wamdata[torch]' "
                          "(or a CPU build: pip install torch --index-url https://download.pytorch.org/whl/cpu)") from e
    return torch


_torch_mod = _torch()


def _forks(context) -> bool:
    """Whether DataLoader workers with this ``multiprocessing_context`` start by fork."""
    import multiprocessing

    if context is None:   # the process default, read without fixing it (get_start_method() would)
        default = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
        return default == "fork"
    method = context if isinstance(context, str) else context.get_start_method()
    return method == "fork"


def _forkserver():
    """The forkserver context, its server preloading torch and the loader so that each worker it forks
    starts warm (only takes effect if this process has not started a forkserver yet)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", __name__])
    return ctx


def _in_ray_process() -> bool:
    """A Ray driver or worker. Looked up, not imported: the loader does not depend on Ray."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def to_tensors(sample: dict) -> dict:
    torch = _torch_mod
    out = {}
    for k, v in sample.items():
        if isinstance(v, dict):
            out[k] = {kk: torch.from_numpy(vv) for kk, vv in v.items()}
        elif hasattr(v, "dtype") and hasattr(v, "shape"):
            out[k] = torch.from_numpy(v)
        else:
            out[k] = v
    return out


def _tensor_alloc(ring: "SharedRing | None" = None, pool=None):
    """An ``alloc`` for :func:`batch.collate`: all arrays of a batch carved from ONE torch storage (a
    shared-memory storage from ``ring`` inside DataLoader workers; a recycled numpy buffer from
    ``pool`` in the main process), and ``finish(batch, packed)`` that turns the collated batch into
    tensors. ``packed=True`` (DataLoader workers under :class:`ResumableLoader`) sends the storage as
    one tensor with the arrays as :class:`_View` offsets into it, for :func:`unpack` in the main
    process: each tensor crossing the worker queue costs a file-descriptor handover (a socket round
    trip to the worker's resource-sharer thread), ~18 per batch when sent array by array, which took
    ~10% of the CPU per sample."""
    import numpy as np

    torch = _torch_mod
    made = {}

    def alloc(specs):
        from wamdata.loader.batch import buffer_layout

        offsets, total = buffer_layout(specs)
        if ring is not None:
            storage, made["_slot"] = ring.take(max(total, 1))
            base = torch.empty(0, dtype=torch.uint8).set_(storage)
        else:
            # a recycled buffer (batch.BufferPool): writing into warm memory is ~3x faster than
            # faulting in a fresh one for every batch
            base = torch.from_numpy(pool.take(max(total, 1)) if pool is not None else np.empty(max(total, 1), np.uint8))
        made["_base"] = base
        out = []
        for (shape, dtype), off in zip(specs, offsets):
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            view = _View(off, nbytes, tuple(shape), _torch_dtype(dtype))
            t = view.of(base)
            arr = t.numpy()
            made[id(arr)] = (arr, t, view)
            out.append(arr)
        return out

    def finish(batch: dict, packed: bool = False) -> dict:
        out = _as_tensors(batch, made, packed)
        if packed:
            out["_packed"], out["_slot"] = made["_base"], made.get("_slot", -1)
        made.clear()  # the batch owns its tensors now; keep no reference that could delay a recycle
        return out

    return alloc, finish


def _torch_dtype(dtype):
    import numpy as np

    return _torch_mod.from_numpy(np.empty(0, dtype)).dtype   # numpy and torch share these dtypes


class _View:
    """Where one array of a packed batch lies in its storage. Not a tuple: the DataLoader's
    pin_memory would rebuild tuples element by element."""

    __slots__ = ("offset", "nbytes", "shape", "dtype")

    def __init__(self, offset: int, nbytes: int, shape: tuple, dtype):
        self.offset, self.nbytes, self.shape, self.dtype = offset, nbytes, shape, dtype

    def of(self, base):
        """The tensor this view describes in ``base`` (a flat uint8 tensor over the storage)."""
        return base[self.offset: self.offset + self.nbytes].view(self.dtype).view(self.shape)


def _as_tensors(batch: dict, made: dict, packed: bool) -> dict:
    """Tensors (or, ``packed``, :class:`_View` placeholders) for the numpy arrays of a batch: the
    storage-backed tensor where ``alloc`` made the array, ``torch.from_numpy`` otherwise. (A plain
    function: a recursive closure would form a reference cycle that holds every batch buffer until
    the garbage collector runs.)"""
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = _as_tensors(v, made, packed)
        elif id(v) in made and made[id(v)][0] is v:
            out[k] = made[id(v)][2 if packed else 1]
        elif hasattr(v, "dtype"):
            out[k] = _torch_mod.from_numpy(v)
        else:
            out[k] = v
    return out


def unpack(batch: dict, base=None) -> dict:
    """The tensors of a packed batch (see :func:`_tensor_alloc`): views of its one storage."""
    if base is None:
        base = batch.pop("_packed")
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out[k] = unpack(v, base)
        elif isinstance(v, _View):
            out[k] = v.of(base)
        else:
            out[k] = v
    return out


# Batches each worker may have in flight (the DataLoader's prefetch_factor), unless the caller sets it.
# Batches leave the workers in turn, so a worker that is ahead stops once its prefetched batches wait
# for a slower one (an episode being decoded): at torch's default of 2, ~20% of the 2-core machine
# sat idle with 2 workers; at 4, ~10%, for +6% samples/s (benchmarks/README.md). Costs 2 batches of
# shared memory per worker (~55 MB each at 32 x 10 frames of 180x320).
PREFETCH_BATCHES = 4
# shared buffers per worker beyond its prefetched batches: the one being filled, those the trainer
# still holds, one waiting in the DataLoader's reorder buffer. At an epoch's tail, once a worker is
# done, the DataLoader sends all prefetch x workers tasks to the others; those last batches may take
# fresh segments (freed after use) rather than every ring growing to prefetch x workers for good.
RING_SPARE_SLOTS = 3


class SharedRing:
    """A DataLoader worker's shared-memory batch storages, reused once the main process has seen
    the trainer drop them.

    A fresh shared-memory segment per batch costs a page fault (and the kernel's zeroing) per 4 KiB
    page in the worker: at 55 MB per batch that was most of a worker's time. ``flags`` is a small
    shared uint8 array made by the main process: the worker sets a slot busy when it fills it, the
    main process (:class:`RingWatcher`) sets it free once no tensor there refers to the storage. A
    slot is never reused while busy; when none is free — or there is no watcher (``flags`` None, a
    plain DataLoader) — the worker takes a fresh segment.
    """

    def __init__(self, flags, worker: int):
        self.row = flags.numpy()[worker] if flags is not None else []
        self.base = worker * len(self.row)
        self.storages: list = []

    def take(self, nbytes: int):
        """(storage, global slot id or -1 for an unpooled storage)."""
        for k, storage in enumerate(self.storages):
            if self.row[k] == 0 and storage.nbytes() >= nbytes:
                self.row[k] = 1
                return storage, self.base + k
        storage = _torch_mod.UntypedStorage._new_shared(nbytes)
        if len(self.storages) < len(self.row):
            self.storages.append(storage)
            self.row[len(self.storages) - 1] = 1
            return storage, self.base + len(self.storages) - 1
        return storage, -1


class RingWatcher:
    """Main-process side of :class:`SharedRing`: frees a slot once no tensor in this process refers
    to the slot's storage, however the trainer sliced the batch (a C++-level count, not Python's).

    ``keep_mapped``: hold each slot's storage here between batches. The segment then stays mapped in
    this process, torch's shared-storage cache hands the next batch of that slot the same mapping, and
    the trainer reads warm pages: a fresh mapping per batch cost ~5 ms of page faults per 55 MB batch
    in the trainer process. The slot is free when this reference is the only one left. Without it
    (``pin_memory``: the trainer holds pinned copies, and the shared storage is dropped once copied) a
    weak reference watches the storage instead.
    """

    def __init__(self, workers: int, slots: int, keep_mapped: bool = True):
        self.flags = _torch_mod.zeros((workers, slots), dtype=_torch_mod.uint8).share_memory_()
        self._flat = self.flags.numpy().reshape(-1)
        self.keep_mapped = keep_mapped
        self._mapped: dict = {}        # slot -> its storage, held (keep_mapped)
        self._in_flight: list = []     # (slot, weak reference or None) of batches not yet dropped

    def received(self, batch: dict) -> None:
        """Watch a packed batch's storage (before :func:`unpack`)."""
        from torch.multiprocessing.reductions import StorageWeakRef

        slot = batch.pop("_slot", -1)
        if slot < 0:
            return
        storage = batch["_packed"].untyped_storage()
        if self.keep_mapped:
            self._mapped[slot] = storage
            self._in_flight.append((slot, None))
        else:
            self._in_flight.append((slot, StorageWeakRef(storage)))

    def release_dropped(self) -> None:
        still = []
        for slot, weak in self._in_flight:
            if weak.expired() if weak is not None else \
                    _torch_mod._C._storage_Use_Count(self._mapped[slot]._cdata) == 1:  # only ours left
                self._flat[slot] = 0
            else:
                still.append((slot, weak))
        self._in_flight = still


class TorchStream(_torch_mod.utils.data.IterableDataset):
    """Each DataLoader worker is one consumer: consumer = rank * num_workers + worker. For
    :class:`ResumableLoader` (``with_cursor``) batches carry ``_worker`` (the consumer slot on this
    rank) and ``_index`` (its count of emitted samples after the batch), so it can keep the resume
    state from the batches it hands out, and come from workers packed (see :func:`_tensor_alloc`).

    Under a plain DataLoader, call :meth:`set_epoch` each epoch, as with torch's DistributedSampler.
    The position (epoch, and a resume point) lives in a small shared-memory tensor that every worker
    reads when it starts an iteration: ``persistent_workers=True`` keeps the copy of this object each
    worker started with, so a plain attribute set in the trainer would never reach them."""

    def __init__(self, stream: WamStream, with_cursor: bool = False, batch_size: int | None = None,
                 num_workers: int = 0, drop_last: bool = False):
        super().__init__()
        self.stream = stream
        self.with_cursor = with_cursor
        self.batch_size = batch_size
        self.drop_last = bool(drop_last and batch_size)
        self.num_workers = max(1, num_workers)   # the DataLoader's, for len() in the trainer process
        # [epoch, rotation, resumed, emitted per worker slot...]
        self._position = _torch_mod.zeros(3 + self.num_workers, dtype=_torch_mod.int64).share_memory_()
        self._position[0] = stream.epoch
        self.ring_flags = None  # set by ResumableLoader: workers recycle shared batch storages
        self._ring = None       # a worker's SharedRing, kept across the iterations of a persistent worker
        self._pinned_rank = None  # (rank, world size), fixed when pickled for a worker (see __getstate__)

    def __getstate__(self):
        # Workers started by spawn or forkserver get a pickled copy and no torch.distributed of their
        # own, so they would all take rank 0 of 1: fix the trainer's rank into the copy.
        state = dict(self.__dict__)
        state["_pinned_rank"] = self.rank_world()
        return state

    def rank_world(self) -> tuple[int, int]:
        return self._pinned_rank or _rank_world(self.stream.config)

    def slot_length(self, epoch: int, slot: int, workers: int) -> int:
        """Samples worker slot ``slot`` of ``workers`` hands out in ``epoch`` (a partial last batch
        not counted with ``drop_last``)."""
        rank, world = self.rank_world()
        n = self.stream.consumer_length(epoch, rank * workers + slot, world * workers)
        return n - n % self.batch_size if self.drop_last else n

    @property
    def epoch(self) -> int:
        return int(self._position[0])

    def set_epoch(self, epoch: int) -> None:
        self._position.zero_()
        self._position[0] = int(epoch)

    def resume_from(self, epoch: int, emitted: list[int], rotation: int) -> None:
        """Start the next iteration where an earlier one stopped: ``emitted`` samples per worker slot,
        worker slot ``rotation`` first."""
        self._position[:3] = _torch_mod.tensor([int(epoch), int(rotation), 1])
        self._position[3:] = _torch_mod.tensor([int(x) for x in emitted])

    def __iter__(self):
        info = _torch_mod.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        rank, world = self.rank_world()
        epoch, rotation, resumed, *emitted = self._position.tolist()
        slot = (worker + rotation) % workers
        start = emitted[slot] if resumed else 0
        samples = self.stream.iter_consumer(epoch, rank * workers + slot, world * workers, start,
                                            stack=self.batch_size is None)
        if self.batch_size is None:
            for _, sample in samples:
                yield to_tensors(sample)
            return
        from wamdata.loader.batch import BufferPool

        if info is None:
            ring, pool = None, BufferPool()
        else:
            # workers share memory with the trainer; recycled only when a watcher frees slots
            if self._ring is None:
                self._ring = SharedRing(self.ring_flags, worker)
            ring, pool = self._ring, None
        packed = self.with_cursor and info is not None
        group, i = [], start
        for i, sample in samples:
            group.append(sample)
            if len(group) == self.batch_size:
                yield self._collate(group, slot, i, ring, pool, packed)
                group = []
        if group and not self.drop_last:
            yield self._collate(group, slot, i, ring, pool, packed)

    def _collate(self, group, slot, i, ring, pool, packed):
        from wamdata.loader.batch import collate

        alloc, finish = _tensor_alloc(ring=ring, pool=pool)
        out = finish(collate(group, alloc), packed)
        if self.with_cursor:
            out["_worker"], out["_index"] = slot, i
        return out

    def __len__(self):
        """Items this rank yields in the epoch: samples, or batches when ``batch_size`` is set. The
        split depends on the number of DataLoader workers, which only the DataLoader knows: exact when
        this was made with the DataLoader's ``num_workers`` (``stream.torch(num_workers=...)``)."""
        info = _torch_mod.utils.data.get_worker_info()
        workers = info.num_workers if info else self.num_workers
        lengths = [self.slot_length(self.epoch, w, workers) for w in range(workers)]
        if self.batch_size is None:
            return sum(lengths)
        return sum(-(-n // self.batch_size) for n in lengths)


class ResumableLoader(_torch_mod.utils.data.DataLoader):
    """A DataLoader over :class:`TorchStream` that records, from each batch it returns, how far each
    worker got. ``state_dict()`` is a handful of integers; after ``load_state_dict()`` the next
    iteration yields exactly the batches an uninterrupted run would have yielded next, with or
    without ``persistent_workers``.

    Batches of an IterableDataset come from the workers in turn (batch k from worker k mod W); the
    state keeps which worker is next as ``rotation`` so the order is kept too.
    """

    def __init__(self, stream: WamStream, batch_size: int, num_workers: int = 0, drop_last: bool = False,
                 **kwargs):
        # Batches are collated in the stream (one copy per frame, shared memory in workers); with
        # drop_last each worker drops its own partial last batch.
        self._stream_ds = TorchStream(stream, with_cursor=True, batch_size=batch_size, num_workers=num_workers,
                                      drop_last=drop_last)
        if num_workers and kwargs.get("prefetch_factor") is None:
            kwargs["prefetch_factor"] = PREFETCH_BATCHES
        in_ray = bool(num_workers) and _in_ray_process()
        if in_ray and kwargs.get("multiprocessing_context") is None and _forks(None):
            kwargs["multiprocessing_context"] = _forkserver()
        super().__init__(self._stream_ds, batch_size=None, num_workers=num_workers, **kwargs)
        if in_ray and _forks(self.multiprocessing_context):
            log.warning("DataLoader workers forked from a Ray process can hang it: after two Ray Data "
                        "executions in a driver, one forked DataLoader left its later Ray tasks "
                        "unfinished here. Use multiprocessing_context='forkserver' (the default of "
                        "stream.dataloader() in a Ray process) or 'spawn'")
        self._slots = max(1, num_workers)
        self._emitted = [0] * self._slots
        self._next_slot = 0
        self._watcher: RingWatcher | None = None

    @property
    def epoch(self) -> int:
        return self._stream_ds.epoch

    def set_epoch(self, epoch: int) -> None:
        self._stream_ds.set_epoch(epoch)
        self._emitted, self._next_slot = [0] * self._slots, 0

    def _roll_finished_epoch(self) -> None:
        """A loop that stopped right after the last batch (``islice(dl, len(dl))``, a step budget)
        never let the epoch end: the next iteration starts the next epoch, not an empty remainder."""
        ds = self._stream_ds
        if any(self._emitted) and all(self._emitted[s] >= ds.slot_length(ds.epoch, s, self._slots)
                                      for s in range(self._slots)):
            self.set_epoch(ds.epoch + 1)

    def __iter__(self):
        ds = self._stream_ds
        self._roll_finished_epoch()
        epoch = ds.epoch
        if any(self._emitted):
            ds.resume_from(epoch, self._emitted, self._next_slot)
        else:
            ds.set_epoch(epoch)
        # New workers (every iteration, unless persistent) get new flags and a new watcher; persistent
        # workers keep their rings, so the watcher that knows their slots stays too. (Batches a
        # persistent worker had prefetched when a loop broke off are discarded by the DataLoader
        # unseen: their slots stay busy, and that worker allocates fresh segments once all are.)
        if self.num_workers and (self._watcher is None or not self.persistent_workers):
            self._watcher = RingWatcher(self.num_workers, self.prefetch_factor + RING_SPARE_SLOTS,
                                        keep_mapped=not self.pin_memory)
            ds.ring_flags = self._watcher.flags
        watcher = self._watcher
        for batch in super().__iter__():
            if watcher:
                watcher.received(batch)
                watcher.release_dropped()
            if "_packed" in batch:
                batch = unpack(batch)
            slot = batch.pop("_worker")
            self._emitted[slot] = batch.pop("_index")
            self._next_slot = (slot + 1) % self._slots
            yield batch
        if ds.epoch == epoch:   # not already rolled over by a state_dict() after the last batch
            self.set_epoch(epoch + 1)

    def state_dict(self) -> dict:
        self._roll_finished_epoch()
        return self._stream_ds.stream.make_state(self.epoch, self._emitted, self._next_slot)

    def load_state_dict(self, state: dict) -> None:
        at_start = check_state(state, self._stream_ds.stream, self._slots)
        self._stream_ds.set_epoch(int(state["epoch"]))
        self._emitted = [0] * self._slots if at_start else [int(x) for x in state["emitted"]]
        self._next_slot = 0 if at_start else int(state["rotation"])
