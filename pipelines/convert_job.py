"""`wamdata convert` on Ray: the conversion job of :mod:`wamdata.convert`, fanned out as Ray tasks."""

from __future__ import annotations

from pipelines.executors import RayExecutor
from wamdata.convert import ConvertConfig, ConvertReport, convert


def run(config: ConvertConfig) -> ConvertReport:
    """Discover on this driver, convert units in Ray tasks (one shard or more each), commit here."""
    with RayExecutor(workers=config.workers, address=config.ray_address) as executor:
        return convert(config, executor)
