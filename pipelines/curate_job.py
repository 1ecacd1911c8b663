"""The quality-signals job: one Ray task per shard, each shard's rows stored by the driver as it arrives.

Each task runs :func:`wamdata.curate.shard_signals` (decodes the sampled frames and reads the steps
of its shard) and returns parquet bytes; the driver stores them as the shard's part (its done marker,
so a re-run computes only the shards missing) and, when all are in, merges them with
:func:`wamdata.curate.finish_signals` (the cross-episode duplicate search runs there). Without
``workers`` or ``ray_address`` the same work runs in this process, no Ray.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

from wamdata import curate
from wamdata.errors import FormatError
from wamdata.signals import SignalSettings

log = logging.getLogger(__name__)

__all__ = ["compute_signals"]


def compute_signals(dataset_path: str, workers: int | None = None, ray_address: str | None = None, *,
                    settings: SignalSettings | None = None, progress: bool = False):
    """The side table ``curation/signals.parquet`` of a dataset (see :mod:`wamdata.curate`); returns it.

    ``workers``: None or 0 computes in this process; N >= 1 fans the shards out over Ray, one task per
    shard (starting a local Ray with N CPUs if none is running); ``ray_address`` joins a cluster. A Ray
    already initialised in this process (e.g. by a test) is used and left running."""
    if not workers and ray_address is None:
        map_shards = _local_map(progress)
    else:
        map_shards = _ray_map(workers, ray_address, progress)
    return curate.compute_signals(dataset_path, settings, map_shards=map_shards)


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="signals", unit="shard", disable=not progress)


def _local_map(progress: bool):
    def run(dataset_path: str, shards: Sequence[str], settings: dict) -> Iterator[tuple[str, bytes]]:
        with _bar(len(shards), progress) as bar:
            for shard in shards:
                yield curate.shard_signals(dataset_path, shard, settings)
                bar.update(1)

    return run


def _ray_map(workers: int | None, ray_address: str | None, progress: bool):
    from pipelines.executors import RayExecutor

    def run(dataset_path: str, shards: Sequence[str], settings: dict) -> Iterator[tuple[str, bytes]]:
        def failed(args, err):
            raise FormatError(f"{dataset_path}: quality signals of {args[1]} failed: {err}") from err

        with RayExecutor(workers=workers, address=ray_address) as executor, _bar(len(shards), progress) as bar:
            for result in executor.map_unordered(curate.shard_signals,
                                                 [(dataset_path, s, settings) for s in shards], on_error=failed):
                bar.update(1)
                yield result

    return run
