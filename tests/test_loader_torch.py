"""The torch adapters: tensors, DataLoader workers x ranks without overlap or loss, exact resume with
several workers."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.forks_workers   # DataLoader workers fork this process: run after the Ray tests

from tests.fixtures.loader_data import make_dataset  # noqa: E402
from wamdata.loader import WamStream  # noqa: E402

LENGTHS = [20, 25, 15, 30, 20, 10, 18, 22]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("loader_torch") / "ds", n=len(LENGTHS), steps=LENGTHS)


def batch_ids(batch):
    return list(zip(batch["episode_id"], batch["t"].tolist()))


def test_tensors_and_collation(ds):
    stream = WamStream(ds, cameras=["front", "wrist"], image_size=(16, 24), future=[2, 4], action_horizon=4)
    batch = next(iter(torch.utils.data.DataLoader(stream.torch(), batch_size=5)))
    assert batch["frames"]["front"].shape == (5, 2, 16, 24, 3) and batch["frames"]["front"].dtype == torch.uint8
    assert batch["future_frames"]["wrist"].shape == (5, 2, 16, 24, 3)
    assert batch["state"].dtype == torch.float32 and batch["state"].shape == (5, 2, 3)
    assert batch["actions"].shape == (5, 4, 3) and batch["actions_is_pad"].dtype == torch.bool
    assert len(batch["episode_id"]) == 5 and batch["t"].shape == (5,)


def test_two_ranks_two_workers_one_epoch(ds):
    seen = []
    for rank in range(2):
        stream = WamStream(ds, cameras=["front"], image_size=(8, 8), rank=rank, world_size=2, shuffle_buffer=16)
        dl = torch.utils.data.DataLoader(stream.torch(), batch_size=7, num_workers=2)
        n = 0
        for b in dl:
            seen += batch_ids(b)
            n += len(b["t"])
        assert n == stream.num_samples(num_workers=2)
    want = {(f"ep{e:04d}", t) for e, n in enumerate(LENGTHS) for t in range(n)}
    assert len(seen) == len(want) and set(seen) == want


def test_even_samples_per_epoch_gives_every_rank_the_same_batches(ds):
    """Episodes of 10-30 windows split over 2 ranks x 2 workers give uneven shares (a DDP rank with
    fewer batches would leave the others waiting in a collective); samples_per_epoch="even" gives
    every worker of every rank total // 4 samples, still valid windows with their own values."""
    total = sum(LENGTHS)
    uneven = [WamStream(ds, cameras=[], rank=r, world_size=2, shuffle_buffer=16).num_samples(num_workers=2)
              for r in range(2)]
    assert uneven[0] != uneven[1]   # the fixture is uneven, or this test proves nothing
    want = {(f"ep{e:04d}", t) for e, n in enumerate(LENGTHS) for t in range(n)}
    per_rank, seen = [], []
    for rank in range(2):
        stream = WamStream(ds, cameras=["front"], image_size=(8, 8), rank=rank, world_size=2, shuffle_buffer=16,
                           samples_per_epoch="even")
        dl = stream.dataloader(batch_size=4, num_workers=2)
        batches = [batch_ids(b) for b in dl]
        assert len(batches) == len(dl)
        per_rank.append((len(batches), sum(map(len, batches))))
        seen += [i for b in batches for i in b]
    assert per_rank[0] == per_rank[1] == (2 * -(-(total // 4) // 4), total // 4 * 2)
    assert set(seen) <= want and len(set(seen)) > 0.8 * total


def test_samples_per_epoch_not_a_multiple_still_gives_ranks_equal_counts(ds):
    counts = [WamStream(ds, cameras=[], rank=r, world_size=2, samples_per_epoch=50).num_samples(num_workers=2)
              for r in range(2)]
    assert counts == [24, 24]   # 50 // 4 per worker; 26 and 24 would leave one rank waiting
    got = [sum(len(b["t"]) for b in WamStream(ds, cameras=[], rank=r, world_size=2, samples_per_epoch=50)
               .dataloader(batch_size=4, num_workers=2)) for r in range(2)]
    assert got == counts


def test_samples_per_epoch_is_checked():
    from wamdata.errors import ConfigError
    from wamdata.loader import LoaderConfig

    for bad in (0, -3, "all", True):
        with pytest.raises(ConfigError, match="samples_per_epoch"):
            LoaderConfig(samples_per_epoch=bad)


@pytest.mark.parametrize("workers,cut", [(0, 9), (2, 0), (2, 5), (2, 12)])
def test_dataloader_exact_resume(ds, workers, cut):
    kw = dict(cameras=["front"], image_size=(8, 8), shuffle_buffer=24, max_live_episodes=3, seed=5)
    full_dl = WamStream(ds, **kw).dataloader(batch_size=6, num_workers=workers)
    n_batches = len(full_dl)
    full = [batch_ids(b) for b in full_dl]
    assert len(full) == n_batches
    dl = WamStream(ds, **kw).dataloader(batch_size=6, num_workers=workers)
    head = []
    if cut:
        for b in dl:   # a batch handed out counts as consumed
            head.append(batch_ids(b))
            if len(head) == cut:
                break
    state = dl.state_dict()
    dl2 = WamStream(ds, **kw).dataloader(batch_size=6, num_workers=workers)
    dl2.load_state_dict(state)
    rest = [batch_ids(b) for b in dl2]
    assert head + rest == full
    # the next epoch starts fresh and differs
    nxt = [batch_ids(b) for b in dl2]
    assert dl2.epoch == 2 and nxt != full and sorted(sum(nxt, [])) == sorted(sum(full, []))


def _ddp_rank(rank, port, ds, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        stream = WamStream(ds, cameras=[], shuffle_buffer=16)   # rank and world size from torch.distributed
        dl = stream.dataloader(batch_size=8, num_workers=2, multiprocessing_context="spawn")
        got = [i for b in dl for i in batch_ids(b)]
        with open(f"{out}/rank{rank}.json", "w") as fh:
            json.dump({"len": len(dl), "samples": stream.num_samples(num_workers=2), "ids": got}, fh)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_split_the_data_with_spawned_workers(ds, tmp_path):
    """Under torch.distributed, DataLoader workers started by spawn (common with CUDA; forkserver is
    Python 3.14's default) have no process group of their own: they must still read their rank's
    share, not the whole dataset."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_ddp_rank, args=(port, ds, str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.load(open(tmp_path / f"rank{r}.json")) for r in range(2)]
    for r in ranks:
        assert len(r["ids"]) == r["samples"] and -(-r["samples"] // 8) <= r["len"]
    seen = [tuple(i) for r in ranks for i in r["ids"]]
    assert len(seen) == len(set(seen)) == sum(LENGTHS)


def test_persistent_workers_follow_epochs_and_resume(ds):
    """persistent_workers=True keeps each worker's copy of the dataset across epochs: epochs must
    still advance, a loaded state must still be honoured, and kept batches must keep their values
    while the workers' shared buffers are recycled across epochs."""
    kw = dict(cameras=["front"], image_size=(8, 8), shuffle_buffer=24, max_live_episodes=3, seed=5)

    def loader(**extra):
        return WamStream(ds, **kw).dataloader(batch_size=6, num_workers=2, **extra)

    plain = loader()
    want = [[batch_ids(b) for b in plain] for _ in range(3)]
    assert want[0] != want[1] != want[2]
    dl = loader(persistent_workers=True)
    kept, got = [], []
    for _ in range(3):
        epoch = []
        for b in dl:
            epoch.append(batch_ids(b))
            kept.append((b["frames"]["front"][:, -1], b["frames"]["front"][:, -1].clone()))
        got.append(epoch)
    assert got == want and dl.epoch == 3
    for view, copy in kept:
        assert (view == copy).all()

    # resume mid-epoch 1 into a loader whose persistent workers already ran an epoch
    src = loader(persistent_workers=True)
    list(src)
    head = []
    for b in src:
        head.append(batch_ids(b))
        if len(head) == 4:
            break
    state = src.state_dict()
    dst = loader(persistent_workers=True)
    list(dst)
    list(dst)   # now at epoch 2, workers warm
    dst.load_state_dict(state)
    assert head + [batch_ids(b) for b in dst] == want[1]


def test_state_from_an_epoch_start_resumes_with_other_workers_a_mid_epoch_one_does_not(ds):
    """Changing num_workers between runs (another machine) is fine from an epoch-boundary checkpoint:
    the next epoch comes whole, as a loader with the new count would give it. Mid-epoch, the
    samples left depend on each worker's share, so another count is refused, naming both."""
    from wamdata.errors import ConfigError

    kw = dict(cameras=[], normalize=None, shuffle_buffer=16, seed=4)
    two = WamStream(ds, **kw).dataloader(batch_size=5, num_workers=2)
    list(two)
    state = two.state_dict()
    assert state["epoch"] == 1 and state["num_workers"] == 2 and not any(state["emitted"])
    plain = WamStream(ds, **kw).dataloader(batch_size=5, num_workers=0)
    list(plain)
    want = [batch_ids(b) for b in plain]   # epoch 1 with no workers
    one = WamStream(ds, **kw).dataloader(batch_size=5, num_workers=0)
    one.load_state_dict(state)
    assert one.epoch == 1 and [batch_ids(b) for b in one] == want
    assert len(set(sum(want, []))) == len(sum(want, [])) == sum(LENGTHS)

    head = []
    for b in two:
        head.append(b)
        if len(head) == 2:
            break
    mid = two.state_dict()
    with pytest.raises(ConfigError, match="mid-epoch with 2 worker.*this loader has 1"):
        WamStream(ds, **kw).dataloader(batch_size=5, num_workers=0).load_state_dict(mid)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_stopped_at_the_epoch_end_goes_on_with_the_next_epoch(ds, workers):
    """islice(dl, len(dl)) (a step budget) never exhausts the DataLoader: the next pass must be the
    next epoch, and a state taken at that point must say so."""
    import itertools

    kw = dict(cameras=[], normalize=None, shuffle_buffer=16, seed=2)
    dl = WamStream(ds, **kw).dataloader(batch_size=8, num_workers=workers)
    plain = WamStream(ds, **kw).dataloader(batch_size=8, num_workers=workers)
    want = [[batch_ids(b) for b in plain] for _ in range(2)]
    first = [batch_ids(b) for b in itertools.islice(dl, len(dl))]
    state = dl.state_dict()
    assert first == want[0] and state["epoch"] == 1 and not any(state["emitted"])
    assert [batch_ids(b) for b in itertools.islice(dl, len(dl))] == want[1]


def test_drop_last_gives_only_full_batches_and_resumes(ds):
    kw = dict(cameras=["front"], image_size=(8, 8), shuffle_buffer=16, seed=2)
    full = WamStream(ds, **kw).dataloader(batch_size=8, num_workers=2)
    every = [batch_ids(b) for b in full]
    dl = WamStream(ds, **kw).dataloader(batch_size=8, num_workers=2, drop_last=True)
    got = [batch_ids(b) for b in dl]
    assert got == [b for b in every if len(b) == 8] and len(got) == len(dl) < len(every)
    head = []
    dl = WamStream(ds, **kw).dataloader(batch_size=8, num_workers=2, drop_last=True)
    for b in dl:
        head.append(batch_ids(b))
        if len(head) == 3:
            break
    again = WamStream(ds, **kw).dataloader(batch_size=8, num_workers=2, drop_last=True)
    again.load_state_dict(dl.state_dict())
    assert head + [batch_ids(b) for b in again] == got


def test_len_of_a_plain_dataloader_over_batched_torch_stream(ds):
    """DataLoader(stream.torch(batch_size, num_workers), batch_size=None): len() is what it yields
    (schedulers and progress bars read it); the split depends on the worker count."""
    for rank, world in ((0, 1), (1, 3)):
        stream = WamStream(ds, cameras=[], shuffle_buffer=16, rank=rank, world_size=world)
        dl = torch.utils.data.DataLoader(stream.torch(batch_size=8, num_workers=2), batch_size=None,
                                         num_workers=2)
        assert len(dl) == len(list(dl))


def _frames_of(batch):
    return {cam: v.clone() if hasattr(v, "clone") else v.copy() for cam, v in batch["frames"].items()}


@pytest.mark.parametrize("api", ["numpy", "torch"])
def test_recycled_batch_buffers_never_overwrite_a_batch_still_held(ds, api):
    """Batch buffers are recycled once released (BufferPool): batches the trainer keeps must keep
    their values while later batches are produced, and dropped ones must be reused."""
    def make():
        return WamStream(ds, cameras=["front", "wrist"], image_size=(16, 24), shuffle_buffer=32, seed=3)

    def batches(stream):
        return stream.batches(6) if api == "numpy" else stream.dataloader(batch_size=6, num_workers=0)

    held = list(batches(make()))                 # every batch alive at once: no buffer may be reused
    copies = [_frames_of(b) for b in batches(make())]   # each copied, then dropped: buffers recycled
    assert len(held) == len(copies) > 8
    for b, c in zip(held, copies):
        for cam in c:
            a, e = b["frames"][cam], c[cam]
            assert (a == e).all()

    from wamdata.loader import batch as batch_mod

    made = []
    real = batch_mod.BufferPool.__init__

    def spy(self, keep=4):
        real(self, keep)
        made.append(self)

    batch_mod.BufferPool.__init__ = spy
    try:
        for _ in batches(make()):
            pass
    finally:
        batch_mod.BufferPool.__init__ = real
    assert made and len(made[0]._bufs) <= 2  # the loop holds one batch while the next is made


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true:UserWarning")  # no accelerator here
@pytest.mark.parametrize("pin_memory", [False, True])
def test_worker_shared_buffers_are_reused_only_once_every_view_is_dropped(ds, pin_memory):
    """With DataLoader workers, batch storages are recycled through shared flags (SharedRing /
    RingWatcher): a slice the trainer keeps must keep its values; dropped batches are reused.
    Without pin_memory the trainer keeps each slot mapped, so a reused slot arrives at the same
    address (warm pages); with it (no accelerator here: the watcher's weak-reference mode) the same
    guarantees hold."""
    from wamdata.loader import torch_adapter

    def loader():
        stream = WamStream(ds, cameras=["front", "wrist"], image_size=(16, 24), shuffle_buffer=32, seed=3)
        return stream.dataloader(batch_size=4, num_workers=2, pin_memory=pin_memory)

    slots, addresses = [], {}
    real = torch_adapter.RingWatcher.received

    def spy(self, batch):
        assert self.keep_mapped is not pin_memory
        slot = batch.get("_slot", -1)
        slots.append(slot)
        addresses.setdefault(slot, set()).add(batch["_packed"].data_ptr())
        real(self, batch)

    torch_adapter.RingWatcher.received = spy
    try:
        kept = [b["frames"]["wrist"][:, 0] for b in loader()]   # a view per batch outlives its batch
        addresses.clear()
        copies = [b["frames"]["wrist"][:, 0].clone() for b in loader()]
    finally:
        torch_adapter.RingWatcher.received = real
    assert len(kept) == len(copies) > 8
    for a, e in zip(kept, copies):
        assert (a == e).all()
    second = slots[len(kept):]
    pooled = [s for s in second if s >= 0]
    assert len(set(pooled)) < len(pooled), f"no slot was reused: {second}"
    if not pin_memory:
        assert all(len(addresses[s]) == 1 for s in set(pooled)), addresses
    first = next(iter(loader()))
    assert not {"_slot", "_packed", "_worker", "_index"} & set(first)
    # unpacked in the main process: tensors (numbers included), lists of strings
    leaves = [*first["frames"].values(), *(v for v in first.values() if not isinstance(v, (dict, list)))]
    assert leaves and all(isinstance(v, torch.Tensor) for v in leaves), {k: type(v) for k, v in first.items()}
    assert first["t"].dtype == torch.int64 and first["frames"]["wrist"].shape == (4, 2, 16, 24, 3)


@pytest.mark.parametrize("given", [None, 2, 6])
def test_worker_prefetch_defaults_to_four_and_the_ring_covers_it(ds, given):
    """Workers prefetch 4 batches unless told otherwise, and each worker's ring of shared buffers is
    sized from the prefetch: while every worker is producing, a trainer that drops each batch before
    the next never makes a worker fall back to a fresh (page-faulting) segment. (Once a worker is
    done, the DataLoader sends all prefetch x workers tasks to the others, which may then take fresh
    segments for the epoch's last batches: by design, see RING_SPARE_SLOTS.)"""
    from wamdata.loader import torch_adapter

    stream = WamStream(ds, cameras=["front", "wrist"], image_size=(16, 24), shuffle_buffer=32, seed=3)
    dl = stream.dataloader(batch_size=4, num_workers=2, **({} if given is None else {"prefetch_factor": given}))
    assert dl.prefetch_factor == (given or 4)
    slots = []
    real = torch_adapter.RingWatcher.received

    def spy(self, batch):
        slots.append((batch["_worker"], batch.get("_slot", -1)))
        real(self, batch)

    torch_adapter.RingWatcher.received = spy
    try:
        n = sum(len(b["t"]) for b in dl)
    finally:
        torch_adapter.RingWatcher.received = real
    assert n == sum(LENGTHS)
    both = min(max(i for i, (w, _) in enumerate(slots) if w == worker) for worker in (0, 1))
    assert both > 2 * ((given or 4) + torch_adapter.RING_SPARE_SLOTS), "too few batches to fill a ring"
    assert all(s >= 0 for _, s in slots[:both]), f"a worker ran out of ring slots: {slots}"


def test_read_ahead_thread_changes_nothing_but_speed(ds):
    def run(read_ahead):
        stream = WamStream(ds, cameras=["front"], image_size=(16, 24), shuffle_buffer=24, seed=5,
                           read_ahead=read_ahead)
        return [(s["episode_id"], s["t"], s["frames"]["front"].copy(), s["state"].copy()) for s in stream]

    a, b = run(False), run(True)
    assert len(a) == len(b) == sum(LENGTHS)
    for x, y in zip(a, b):
        assert x[:2] == y[:2] and (x[2] == y[2]).all() and (x[3] == y[3]).all()


@pytest.mark.parametrize("persistent", [False, True])
def test_plain_dataloader_follows_set_epoch(ds, persistent):
    """DataLoader(stream.torch()) with workers: the order is a function of the epoch set on it, also
    when the workers persist (they keep the dataset object they started with)."""
    import torch

    ts = WamStream(ds, cameras=[], normalize=None, shuffle_buffer=16, seed=4).torch()
    dl = torch.utils.data.DataLoader(ts, batch_size=None, num_workers=2, persistent_workers=persistent)

    def epoch(e):
        ts.set_epoch(e)
        return [(s["episode_id"], int(s["t"])) for s in dl]

    one, two, one_again = epoch(1), epoch(2), epoch(1)
    assert one == one_again and one != two and sorted(one) == sorted(two) and len(one) == sum(LENGTHS)
