"""The conversion job: discover -> split into units -> read + write each unit -> commit -> finalize.

This module knows the job, not the scheduler: :func:`convert` takes an executor with one method,
``map_unordered(fn, args, on_error) -> iterator of results as they finish``, where ``on_error(args,
exception)`` turns a unit whose worker died into a result, and a ``parallelism`` (units at once) by
which the items are split into units. :class:`SerialExecutor` runs units in
this process; ``pipelines.executors.RayExecutor`` runs them as Ray tasks. Either way the driver alone
commits shards and the index, so there is a single writer of the index.

Resume: items already in the index (or recorded as failed) are skipped; partial shards are discarded
when the dataset is opened. ``overwrite`` starts afresh; ``retry_failed`` reads failed items again.

Statistics: each task folds the episodes of each shard it writes into a mergeable partial
(:class:`wamdata.stats.StatsPartial`, from the values in memory), stored beside the shard's done
marker; finalizing merges the partials of every committed shard into ``stats.json``, so a converted
dataset streams with ``normalize="stats"`` at once, and a resumed or extended one counts each shard once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

from tqdm import tqdm

from wamdata import __version__
from wamdata import stats as wstats
from wamdata.errors import ConfigError, OutputError, WamdataError
from wamdata.format import layout
from wamdata.format.index import DatasetIndex, dataset_or_empty
from wamdata.format.lock import WriterLock
from wamdata.format.writer import UnitResult, VideoOptions, failure_record, write_unit
from wamdata.sources import SourceItem, get_converter, is_local

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertConfig:
    source: str
    input: str
    output: str
    options: dict = field(default_factory=dict)
    workers: int | None = 2  # local Ray CPUs; with ray_address, the most tasks at once (None: all CPUs)
    ray_address: str | None = None
    shard_size_mb: float = 512
    video_codec: str = "h264"
    resolution: tuple[int, int] | None = None
    crf: int | None = None
    fast_decode: bool = False   # h264: x264 tune=fastdecode: decodes ~1.5x faster, ~25% more bytes
    limit: int | None = None
    max_failures: int = 0
    overwrite: bool = False
    retry_failed: bool = False
    quiet: bool = False
    unit_size: int | None = None  # items per work unit; default spreads items over ~4 units per worker
    stats: bool = True  # partial statistics per shard in the tasks, stats.json at the end (False: neither,
                        # and a stats.json of an earlier run is removed: it would not cover the new shards)

    @property
    def video(self) -> VideoOptions:
        return VideoOptions(self.video_codec, self.resolution, self.crf, self.fast_decode)


@dataclass
class ConvertReport:
    converted: int = 0          # episodes written by this run
    items: int = 0              # source items discovered
    skipped: int = 0            # items already done by an earlier run
    failed: int = 0             # items that failed in this run
    failures_total: int = 0     # failures recorded in the dataset
    steps: int = 0
    hours: float = 0.0
    bytes: int = 0
    shards: int = 0
    wall_s: float = 0.0
    max_failures: int = 0
    failures: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failures_total <= self.max_failures

    def summary(self) -> str:
        rate = self.converted / self.wall_s if self.wall_s else 0.0
        step_rate = self.steps / self.wall_s if self.wall_s else 0.0
        lines = [
            f"converted {self.converted} episodes from {self.items - self.skipped} items "
            f"({self.skipped} already done), failed {self.failed} (dataset total {self.failures_total})",
            f"{self.steps} steps, {self.hours:.3f} h, {self.bytes / 1e6:.1f} MB in {self.shards} new shards",
            f"wall {self.wall_s:.1f} s, {rate:.2f} episodes/s, {step_rate:.0f} steps/s",
        ]
        for f in self.failures[:20]:
            lines.append(f"  failed: {f['path'] or f['item']}: {f['reason']}")
        return "\n".join(lines)


class SerialExecutor:
    """Runs units one after another in this process (tests, debugging, tiny jobs)."""

    parallelism = 1

    def map_unordered(self, fn: Callable, args: Iterable[tuple], on_error: Callable) -> Iterator:
        for a in args:
            yield fn(*a)


def run_unit(config: ConvertConfig, unit: str, items: list[SourceItem]) -> UnitResult:
    """Read and write the items of one unit. Runs in a worker; touches only temporary shard files."""
    converter = get_converter(config.source)(**config.options)
    fs, root = layout.open_fs(config.output)

    def read(item: SourceItem):
        def produce():
            out = converter.read(item)
            return out if isinstance(out, list) else [out]
        return produce

    work = ((it.id, it.path, read(it)) for it in items)
    summary = wstats.StatsPartial if config.stats else None
    return write_unit(fs, root, unit, work, config.video, config.shard_size_mb, summary=summary)


def plan_units(items: list[SourceItem], workers: int, unit_size: int | None) -> list[tuple[str, list[SourceItem]]]:
    """Contiguous runs of items, small enough to balance the workers and bound a lost unit's work."""
    if not items:
        return []
    size = unit_size or max(1, min(64, math.ceil(len(items) / (max(workers, 1) * 4))))
    return [(f"u{i // size:06d}", items[i:i + size]) for i in range(0, len(items), size)]


def discover(config: ConvertConfig, converter) -> list[SourceItem]:
    items = list(converter.discover(config.input))
    ids = [it.id for it in items]
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ConfigError(f"{config.source}: discover() returned duplicate item ids {dup}")
    if config.limit is not None:
        items = items[: config.limit]
    return items


def convert(config: ConvertConfig, executor=None) -> ConvertReport:
    """Run a conversion job to completion and return its report (see the module docstring)."""
    start = time.time()
    check_config(config)
    # the source and its options are checked before anything is written or deleted
    converter = get_converter(config.source)(**config.options)
    executor = executor or SerialExecutor()
    # one job per output: a second driver would discard this one's temporary shards and number shards twice
    with WriterLock(config.output, f"wamdata convert --source {config.source} --input {config.input}"):
        return _convert(config, converter, executor, start)


def unit_failed(args: tuple, err: Exception) -> UnitResult:
    """A unit whose task failed: its items are recorded as failed — unless it was the output that
    failed (disk full, read-only), which no item is to blame for: that stops the job."""
    cause = getattr(err, "cause", err)   # a Ray task error carries the task's own exception
    if isinstance(cause, OutputError):
        raise OutputError(str(cause)) from None
    return failed_unit(args[1], args[2], err)


def _convert(config: ConvertConfig, converter, executor, start: float) -> ConvertReport:
    index = DatasetIndex.open(config.output, overwrite=config.overwrite)
    settings = json.loads(json.dumps({"options": config.options, "video": asdict(config.video),
                                      "converter_revision": converter.revision}))
    before = index.settings(config.source)
    if before is not None:   # settings added since that run was started take their defaults
        before["video"] = {**asdict(VideoOptions()), **before.get("video", {})}
        before.setdefault("converter_revision", 1)
    if before is not None and before != settings and len(index.done_items()):
        raise ConfigError(f"{config.output}: its {config.source} items were converted with {before}, this run "
                          f"asks for {settings}; a resumed job must use the same options, video settings and "
                          "converter revision (or another --output, or --overwrite)")
    index.save_settings(config.source, settings)
    items = discover(config, converter)
    if not items:
        raise ConfigError(f"{config.input}: no {config.source} items found there (see `wamdata sources` and "
                          f"the README's notes on {config.source}'s layout)")
    done = index.done_items(include_failed=not config.retry_failed)
    todo = [it for it in items if it.id not in done]
    report = ConvertReport(items=len(items), skipped=len(items) - len(todo), max_failures=config.max_failures)
    units = plan_units(todo, executor.parallelism, config.unit_size)
    bar = tqdm(total=len(todo), unit="item", disable=config.quiet, desc=f"convert {config.source}")
    try:
        args = [(config, name, its) for name, its in units]
        for result in executor.map_unordered(run_unit, args, on_error=unit_failed):
            index.commit(result)
            rows = result.rows
            report.converted += len(rows)
            report.failed += len(result.failures)
            report.failures.extend(result.failures)
            report.steps += sum(r["num_steps"] for r in rows)
            report.hours += sum(r["duration_s"] for r in rows) / 3600
            report.bytes += sum(index.fs.size(index.path(r)) for r in {r["shard"] for r in rows})
            report.shards += len(result.shards)
            bar.update(len({r["source_item"] for r in rows}) + len(result.failures))
            bar.set_postfix(episodes=report.converted, failed=report.failed,
                            steps_s=f"{report.steps / max(time.time() - start, 1e-9):.0f}")
    finally:
        bar.close()
    conversion = {
        "source": config.source,
        "input": config.input,
        "options": config.options,
        "video": asdict(config.video),
        "wamdata": __version__,
        "items": len(items),
        "converted": report.converted,
        "failed": report.failed,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        info = index.finalize(conversion)
    except OSError as e:
        raise OutputError.of(config.output, e) from e
    if config.stats:
        wstats.conversion_stats(config.output, index.shard_summaries())
    elif index.fs.exists(index.path(wstats.STATS_FILE)):
        log.warning("%s: removing %s (conversion without statistics); write it with `wamdata stats %s`",
                    config.output, wstats.STATS_FILE, config.output)
        index.fs.rm(index.path(wstats.STATS_FILE))
    report.failures_total = info["counts"]["failures"]
    report.wall_s = time.time() - start
    return report


def check_config(config: ConvertConfig) -> None:
    """Mistakes that would otherwise surface in every item (as failures a re-run then skips) or,
    worse, point --output at the source: a usage error before anything runs."""
    if config.video_codec not in ("h264", "av1", "copy"):
        raise ConfigError(f"unknown --video-codec {config.video_codec!r}; known: h264, av1, copy")
    if config.fast_decode and config.video_codec == "av1":
        raise ConfigError("--fast-decode applies to h264 (and cameras --video-codec copy re-encodes), not av1")
    if config.resolution is not None and not all(int(v) >= 2 for v in config.resolution):
        raise ConfigError(f"--resolution must be WxH with both at least 2, got {'x'.join(map(str, config.resolution))}")
    if config.workers is not None and config.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {config.workers}")
    fs_in, src = layout.open_fs(config.input)
    if not fs_in.exists(src):
        raise ConfigError(f"{config.input}: no such file or folder (--input)")
    fs_out, out = layout.open_fs(config.output)
    if fs_in.protocol == fs_out.protocol:
        if is_local(fs_in):
            src, out = os.path.realpath(src), os.path.realpath(out)
        if out == src or src.startswith(out.rstrip("/") + "/") or out.startswith(src.rstrip("/") + "/"):
            raise ConfigError(f"--output {config.output} and --input {config.input} overlap; write the dataset "
                              "to a folder outside the source (and the source outside it)")
    if fs_out.exists(out) and not config.overwrite and fs_out.isdir(out) and not dataset_or_empty(fs_out, out):
        raise ConfigError(f"{config.output}: exists and is not a wamdata dataset; choose a new or empty folder")
    if fs_out.exists(out) and config.overwrite:   # before the writer lock is put into it
        DatasetIndex(fs_out, out).check_deletable()


def failed_unit(unit: str, items: list[SourceItem], err: Exception) -> UnitResult:
    """A unit whose worker died (out of memory, killed node): every item is recorded as failed, so the
    job completes and a re-run with --retry-failed reads them again."""
    if isinstance(err, WamdataError):
        reason = str(err)
    else:
        reason = f"worker failed: {type(err).__name__}: {err}"
    res = UnitResult(unit)
    res.failures = [failure_record(it.id, it.path, RuntimeError(reason)) for it in items]
    return res
