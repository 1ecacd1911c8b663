"""WamStream as a Ray Data dataset, for ``ray.train`` (``streaming_split`` across trainers).

One read task per consumer: task ``c`` of ``N`` runs exactly what DataLoader worker ``c`` of ``N``
would (a contiguous group of shards, read sequentially, decoded once per episode visit, windows
shuffled in its buffer), yielding blocks of ``block_rows`` samples. Nothing is materialised on the
driver. Ray is imported only inside these functions.
"""

from __future__ import annotations

import numpy as np

from wamdata.errors import ConfigError
from wamdata.loader.stream import WamStream, _rank_world


def flatten(sample: dict) -> dict:
    """Nested ``frames`` / ``future_frames`` dicts become ``frames.<camera>`` columns."""
    out = {}
    for k, v in sample.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                out[f"{k}.{kk}"] = vv
        else:
            out[k] = v
    return out


def _batch_to_block(rows: list[dict]):
    import pyarrow as pa
    from ray.data.block import BlockAccessor

    batch = {}
    for k in rows[0]:
        vals = [r[k] for r in rows]
        if isinstance(vals[0], str):
            batch[k] = pa.array(vals, pa.string())
        else:
            batch[k] = np.stack([np.asarray(v) for v in vals])
    strings = {k: v for k, v in batch.items() if isinstance(v, pa.Array)}
    block = BlockAccessor.batch_to_block({k: v for k, v in batch.items() if k not in strings})
    for k, v in strings.items():
        block = block.append_column(k, v)
    return block.select(list(rows[0]))


def _read_fn(stream: WamStream, epoch: int, consumer: int, n: int, block_rows: int):
    def read():
        rows = []
        for _, sample in stream.iter_consumer(epoch, consumer, n):
            rows.append(flatten(sample))
            if len(rows) == block_rows:
                yield _batch_to_block(rows)
                rows = []
        if rows:
            yield _batch_to_block(rows)

    return read


def torch_batch(batch: dict) -> dict:
    """A Ray Data batch (numpy, flat ``frames.<camera>`` columns) in the shape of the DataLoader's
    batches: ``frames`` / ``future_frames`` dicts of tensors, tensors for arrays, lists for strings.
    Ray's default collation cannot make tensors of the string columns, so pass this as
    ``ds.iter_torch_batches(collate_fn=torch_batch)``, or apply it to ``ds.iter_batches()``."""
    import torch

    out: dict = {}
    for key, v in batch.items():
        v = np.asarray(v)
        value = v.tolist() if v.dtype.kind in "OUS" else torch.from_numpy(np.ascontiguousarray(v))
        group, _, cam = key.partition(".")
        if cam:
            out.setdefault(group, {})[cam] = value
        else:
            out[key] = value
    return out


def ray_dataset(stream: WamStream, parallelism: int | None, epoch: int, block_rows: int = 32):
    try:
        import ray.data
        from ray.data import Datasource, ReadTask
        from ray.data.block import BlockMetadata
    except ImportError as e:
        raise ConfigError("WamStream.ray_dataset() needs Ray Data: pip install 'ray[data]'") from e

    if parallelism is not None and parallelism < 1 or block_rows < 1:
        raise ConfigError(f"ray_dataset: parallelism must be >= 1 (or None) and block_rows >= 1, got "
                          f"{parallelism} and {block_rows}")
    rank, world = _rank_world(stream.config)
    # Consumers are cut by episode: one read task per episode at most (up to 64), so that
    # streaming_split(n) has several tasks' output to share out even when all sit in one shard.
    episodes = max(s.plan.rows.num_rows for s in stream.sources)
    tasks = parallelism or max(1, min(episodes, 64))

    class WamDatasource(Datasource):
        def estimate_inmemory_data_size(self):
            return None

        def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
            out = []
            n = world * tasks
            for c in range(tasks):
                consumer = rank * tasks + c
                rows = stream.consumer_length(epoch, consumer, n)
                if rows == 0:
                    continue
                meta = BlockMetadata(num_rows=rows, size_bytes=None, exec_stats=None, input_files=None)
                out.append(ReadTask(_read_fn(stream, epoch, consumer, n, block_rows), meta))
            return out

    return ray.data.read_datasource(WamDatasource(), override_num_blocks=tasks)
