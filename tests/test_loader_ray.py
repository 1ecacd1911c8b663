"""WamStream.ray_dataset(): the same samples as the stream, through Ray Data read tasks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.fixtures.loader_data import make_dataset
from wamdata.loader import WamStream

LENGTHS = [12, 9, 15, 7]


def test_ray_dataset_yields_every_window_once(ray_session, tmp_path):
    ds = make_dataset(tmp_path / "ds", n=len(LENGTHS), steps=LENGTHS)
    stream = WamStream(ds, cameras=["front"], image_size=(8, 8), future=[2], action_horizon=3, shuffle_buffer=8)
    rd = stream.ray_dataset(parallelism=3, block_rows=5)
    rows = rd.take_all()
    got = [(r["episode_id"], int(r["t"])) for r in rows]
    want = {(f"ep{e:04d}", t) for e, n in enumerate(LENGTHS) for t in range(n)}
    assert len(got) == len(want) and set(got) == want
    r = rows[0]
    assert np.asarray(r["frames.front"]).shape == (2, 8, 8, 3) and np.asarray(r["actions"]).shape == (3, 3)
    # the same windows as the plain stream's consumers
    plain = {(w["episode_id"], w["t"]): w for c in range(3) for _, w in stream.iter_consumer(0, c, 3)}
    for row in rows:
        np.testing.assert_allclose(row["state"], plain[(row["episode_id"], int(row["t"]))]["state"])


def test_streaming_split_gives_each_trainer_a_disjoint_share(ray_session, tmp_path):
    """What ray.train does with the dataset: streaming_split(n) across trainers; together they see
    every window once, none twice."""
    ds = make_dataset(tmp_path / "ds", n=len(LENGTHS), steps=LENGTHS, shard_size_mb=64)
    stream = WamStream(ds, cameras=["front"], image_size=(8, 8), future=[2], action_horizon=3, shuffle_buffer=8)
    assert len(stream.sources[0].plan.shards) == 1
    # the default parallelism: all episodes in ONE shard must still give both trainers a share
    splits = stream.ray_dataset(block_rows=4).streaming_split(2, equal=False)
    # trainers consume their splits at the same time (one alone would wait for the other)
    with ThreadPoolExecutor(2) as pool:
        shares = list(pool.map(lambda it: [(r["episode_id"], int(r["t"])) for r in it.iter_rows()], splits))
    want = {(f"ep{e:04d}", t) for e, n in enumerate(LENGTHS) for t in range(n)}
    assert all(shares) and not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(want)


def test_torch_batches_from_ray_look_like_dataloader_batches(ray_session, tmp_path):
    """Ray's default tensor collation fails on the string columns; torch_batch gives the DataLoader's
    batch layout (nested frames, tensors, lists of strings) with the same values."""

    torch = pytest.importorskip("torch")
    from wamdata.errors import ConfigError
    from wamdata.loader.ray_adapter import torch_batch

    ds = make_dataset(tmp_path / "ds", n=len(LENGTHS), steps=LENGTHS)
    stream = WamStream(ds, cameras=["front", "wrist"], image_size=(8, 8), future=[2], action_horizon=3,
                       shuffle_buffer=8)
    plain = {(w["episode_id"], w["t"]): w for c in range(2) for _, w in stream.iter_consumer(0, c, 2)}
    seen = 0
    rows = stream.ray_dataset(parallelism=2).take_all()
    for start in range(0, len(rows), 5):
        b = {k: np.stack([np.asarray(r[k]) for r in rows[start:start + 5]]) for k in rows[0]}
        tb = torch_batch(b)
        assert set(tb["frames"]) == {"front", "wrist"} and tb["frames"]["front"].dtype == torch.uint8
        assert isinstance(tb["episode_id"], list) and tb["actions_is_pad"].dtype == torch.bool
        for k, (e, t) in enumerate(zip(tb["episode_id"], tb["t"].tolist())):
            want = plain[(e, t)]
            assert (tb["frames"]["wrist"][k].numpy() == want["frames"]["wrist"]).all()
            np.testing.assert_array_equal(tb["state"][k].numpy(), want["state"])
            seen += 1
    assert seen == sum(LENGTHS)
    with pytest.raises(ConfigError, match="parallelism"):
        stream.ray_dataset(parallelism=-1)


def test_dataloader_in_a_ray_process_does_not_fork_it(ray_session, tmp_path, caplog):
    """Forking a Ray driver hangs it: after two Ray Data executions here, one forked DataLoader left
    a later Ray task unfinished. stream.dataloader() in a Ray process starts its workers with
    forkserver (and warns if told to fork); Ray still runs tasks afterwards."""
    pytest.importorskip("torch")
    ds = make_dataset(tmp_path / "ds", n=3, steps=[9, 7, 8])
    stream = WamStream(ds, cameras=["front"], image_size=(8, 8), future=[2], action_horizon=3, shuffle_buffer=4)
    for _ in range(2):
        stream.ray_dataset(parallelism=2).take_all()
    dl = stream.dataloader(batch_size=4, num_workers=2)
    assert dl.multiprocessing_context.get_start_method() == "forkserver"
    got = sorted(i for b in dl for i in zip(b["episode_id"], b["t"].tolist()))
    assert got == sorted((f"ep{e:04d}", t) for e, n in enumerate([9, 7, 8]) for t in range(n))

    @ray_session.remote
    def plus_one(x):
        return x + 1

    ready, _ = ray_session.wait([plus_one.remote(1)], timeout=60)
    assert ready and ray_session.get(ready[0]) == 2
    with caplog.at_level("WARNING", logger="wamdata.loader.torch_adapter"):
        stream.dataloader(batch_size=2, num_workers=2, multiprocessing_context="fork")
    assert "forkserver" in caplog.text
