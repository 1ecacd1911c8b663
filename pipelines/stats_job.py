"""The statistics job: one Ray task per shard, partial results merged on the driver as they arrive.

Each task runs :func:`wamdata.stats.shard_partial` (reads only the steps tables of its shard) and returns
a serialisable partial; the driver folds them with the pure merge of :mod:`wamdata.stats` and writes
``stats.json``. Without ``workers`` or ``ray_address`` the same work runs in this process, no Ray.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

from wamdata import stats as wstats
from wamdata.errors import FormatError
from wamdata.loader.manifest import is_manifest_path, view_selection

log = logging.getLogger(__name__)

__all__ = ["compute_stats"]


def compute_stats(dataset_path: str, workers: int | None = None, ray_address: str | None = None, *,
                  k: int = wstats.DEFAULT_K, write: bool = True, progress: bool = False) -> dict:
    """Statistics of a dataset (see :mod:`wamdata.stats`); writes ``stats.json`` and returns it.
    ``dataset_path`` may be a view (a manifest of one dataset, as ``wamdata curate --out`` writes):
    the statistics of its kept episodes and steps, returned and never written over the dataset's.

    ``workers``: None or 0 computes in this process; N >= 1 fans the shards out over Ray, one task per
    shard (starting a local Ray with N CPUs if none is running). ``ray_address`` joins a cluster
    instead. A Ray already initialised in this process (e.g. by a test) is used and left running.
    """
    keep = None
    if is_manifest_path(dataset_path):
        spec, rows = view_selection(dataset_path)
        ranges = spec.ranges
        keep = {}
        for eid, shard in zip(rows["episode_id"].to_pylist(), rows["shard"].to_pylist()):
            keep.setdefault(shard, {})[eid] = ranges.get(eid)
        dataset_path, write = spec.path, False
    if not workers and ray_address is None:
        map_shards = _local_map(progress, keep)
    else:
        map_shards = _ray_map(workers, ray_address, progress, keep)
    return wstats.compute_stats(dataset_path, k=k, map_shards=map_shards, write=write)


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="stats", unit="shard", disable=not progress)


def _chosen(shards: Sequence[str], keep: dict | None) -> list[tuple[str, dict | None]]:
    """(shard, its view selection) for the shards to read: all, or those the view keeps episodes of."""
    return [(s, None) for s in shards] if keep is None else [(s, keep[s]) for s in shards if s in keep]


def _local_map(progress: bool, keep: dict | None = None):
    def run(dataset_path: str, shards: Sequence[str], k: int) -> Iterator[dict]:
        todo = _chosen(shards, keep)
        with _bar(len(todo), progress) as bar:
            for shard, sel in todo:
                yield wstats.shard_partial(dataset_path, shard, k, sel)
                bar.update(1)

    return run


def _ray_map(workers: int | None, ray_address: str | None, progress: bool, keep: dict | None = None):
    from pipelines.executors import RayExecutor

    def run(dataset_path: str, shards: Sequence[str], k: int) -> Iterator[dict]:
        def failed(args, err):
            raise FormatError(f"{dataset_path}: statistics of {args[1]} failed: {err}") from err

        todo = _chosen(shards, keep)
        with RayExecutor(workers=workers, address=ray_address) as executor, _bar(len(todo), progress) as bar:
            for state in executor.map_unordered(wstats.shard_partial, [(dataset_path, s, k, sel) for s, sel in todo],
                                                on_error=failed):
                bar.update(1)
                yield state

    return run
