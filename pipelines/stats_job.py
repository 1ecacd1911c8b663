"""The statistics job: one Ray task per shard, partial results merged on the driver as they arrive.

Each task runs :func:`wamdata.stats.shard_partial` (reads only the steps tables of its shard) and returns
a serialisable partial; the driver folds them with the pure merge of :mod:`wamdata.stats` and writes
``stats.json``. Without ``workers`` or ``ray_address`` the same work runs in this process, no Ray.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

from wamdata import stats as wstats

log = logging.getLogger(__name__)

__all__ = ["compute_stats"]


def compute_stats(dataset_path: str, workers: int | None = None, ray_address: str | None = None, *,
                  k: int = wstats.DEFAULT_K, write: bool = True, progress: bool = False) -> dict:
    """Statistics of a dataset (see :mod:`wamdata.stats`); writes ``stats.json`` and returns it.

    ``workers``: None or 0 computes in this process; N >= 1 fans the shards out over Ray with at most
    N tasks in flight (starting a local Ray with N CPUs if none is running). ``ray_address`` joins a
    cluster instead. A Ray already initialised in this process (e.g. by a test) is used and left running.
    """
    if not workers and ray_address is None:
        map_shards = _local_map(progress)
    else:
        map_shards = _ray_map(workers, ray_address, progress)
    return wstats.compute_stats(dataset_path, k=k, map_shards=map_shards, write=write)


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="stats", unit="shard", disable=not progress)


def _local_map(progress: bool):
    def run(dataset_path: str, shards: Sequence[str], k: int) -> Iterator[dict]:
        with _bar(len(shards), progress) as bar:
            for shard in shards:
                yield wstats.shard_partial(dataset_path, shard, k)
                bar.update(1)

    return run


def _ray_map(workers: int | None, ray_address: str | None, progress: bool):
    try:
        import ray
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("parallel statistics need Ray: pip install 'ray>=2.9'") from e

    def run(dataset_path: str, shards: Sequence[str], k: int) -> Iterator[dict]:
        started = False
        if not ray.is_initialized():
            if ray_address is not None:
                ray.init(address=ray_address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            started = True
        try:
            task = ray.remote(num_cpus=1, max_retries=2)(wstats.shard_partial)
            limit = max(1, workers or int(ray.cluster_resources().get("CPU", 1)))
            pending = list(shards)[::-1]
            in_flight: dict = {}
            with _bar(len(shards), progress) as bar:
                while pending or in_flight:
                    while pending and len(in_flight) < limit:
                        shard = pending.pop()
                        in_flight[task.remote(dataset_path, shard, k)] = shard
                    done, _ = ray.wait(list(in_flight), num_returns=1)
                    for ref in done:
                        shard = in_flight.pop(ref)
                        try:
                            state = ray.get(ref)
                        except Exception as e:
                            from wamdata.errors import FormatError

                            raise FormatError(f"{dataset_path}: statistics of {shard} failed: {e}") from e
                        bar.update(1)
                        yield state
        finally:
            if started:
                ray.shutdown()

    return run
