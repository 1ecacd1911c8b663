"""`wamdata validate --deep --repair`: convert the damaged episodes of a dataset again from their source.

The deep check (:func:`wamdata.format.check.check_dataset` with ``deep=True``) names the episodes
whose bytes are damaged. Each comes from a source item (the index's ``source_item``); the converter,
its input and its settings are what the dataset recorded (``wamdata.json`` ``conversions``: the
latest input of each converter; ``_index/settings.json``: options, video settings, converter
revision). The item is found again by the converter's own ``discover`` on that input.

Then, holding the dataset's writer lock, the items' episodes are retired
(:meth:`wamdata.format.index.DatasetIndex.retire`: a shard with other episodes left is rewritten
with those, byte for byte; one left empty is deleted; other shards are not touched), and the items
run through the conversion job's own units (:func:`wamdata.convert.run_unit` on the executor given,
committed by the driver into new shards) before the index, ``wamdata.json`` and ``stats.json`` are
finalised again. An item of several episodes is converted whole, so its intact episodes are
rewritten too and none is duplicated. A repair that stops halfway leaves its items listed in
``_index/retired.json``: the next repair (or the same ``wamdata convert``) converts them.

An episode whose source is gone (the input folder, or the item in it), whose converter is not
installed or is at another revision than the one that wrote it (the repaired episodes would differ
from the rest), stays as it is and is reported: re-convert it by hand.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from wamdata import __version__
from wamdata import stats as wstats
from wamdata.convert import ConvertConfig, SerialExecutor, unit_failed, discover, plan_units, run_unit
from wamdata.errors import FormatError, WamdataError
from wamdata.format import layout
from wamdata.format.check import CheckReport, check_dataset
from wamdata.format.index import DatasetIndex
from wamdata.format.lock import WriterLock
from wamdata.format.reader import Dataset
from wamdata.sources import SourceItem, get_converter

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    path: str
    retired: list[str] = field(default_factory=list)     # episode ids taken out to be converted again
    written: list[str] = field(default_factory=list)     # episode ids written again
    failed: list[dict] = field(default_factory=list)     # failure records of items that failed this time
    unrepaired: list[str] = field(default_factory=list)  # one line per episode left as it was
    after: CheckReport | None = None                     # the deep check after the repair

    @property
    def ok(self) -> bool:
        return not self.failed and not self.unrepaired and (self.after is None or self.after.ok)

    def summary(self) -> str:
        lines = [f"repair: {len(self.written)} episode(s) converted again from their source "
                 f"({len(self.retired)} retired), {len(self.failed)} item(s) failed, "
                 f"{len(self.unrepaired)} episode(s) left as they were"]
        lines += [f"  failed: {f['path'] or f['item']}: {f['reason']}" for f in self.failed[:20]]
        lines += [f"  not repaired: {u}" for u in self.unrepaired[:50]]
        if self.after is not None:
            lines.append(self.after.summary())
        return "\n".join(lines)


def _recorded_configs(ds: Dataset, index: DatasetIndex, stats: bool) -> dict[str, ConvertConfig]:
    """Converter name -> the job config its latest conversion into this dataset ran with."""
    out = {}
    for conv in ds.info.get("conversions", []):
        settings = index.settings(conv.get("source", ""))
        if settings is None:
            continue
        video = settings.get("video", {})
        out[conv["source"]] = ConvertConfig(
            source=conv["source"], input=conv["input"], output=ds.url, options=settings.get("options", {}),
            video_codec=video.get("codec", "h264"), crf=video.get("crf"), fast_decode=video.get("fast_decode", False),
            resolution=tuple(video["resolution"]) if video.get("resolution") else None, quiet=True, stats=stats)
    return out


def _find_items(config: ConvertConfig, revision: int, wanted: set[str]) -> tuple[dict[str, SourceItem], str]:
    """The wanted items this conversion's source still holds, and why the others cannot be found there."""
    fs, root = layout.open_fs(config.input)
    if not fs.exists(root):
        return {}, f"source {config.input} ({config.source}) no longer exists"
    try:
        converter = get_converter(config.source)(**config.options)
    except WamdataError as e:
        return {}, f"converter {config.source!r} cannot be loaded: {e}"
    if converter.revision != revision:
        return {}, (f"the {config.source} converter is at revision {converter.revision}, the dataset was "
                    f"written by revision {revision}: a repair would mix the two")
    found = {it.id: it for it in discover(config, converter) if it.id in wanted}
    return found, f"source item no longer exists in {config.input} ({config.source})"


def repair_dataset(path: str, executor=None, check: CheckReport | None = None) -> RepairReport:
    """Convert the damaged episodes of ``path`` again (see the module docstring); ``check`` is a deep
    check already run on it. Returns what was done, with a deep check of the result."""
    check = check or check_dataset(path, deep=True)
    index_problems = [m for c, m in check.problems if c == "index"]
    if index_problems:
        raise FormatError(f"{path}: {index_problems[0]}; --repair converts damaged episodes again, it cannot "
                          "mend an index that does not match the shards: convert the dataset again")
    ds = Dataset(path)
    fs, root = layout.open_fs(path)
    index = DatasetIndex(fs, root)
    item_of = dict(zip(ds.episodes.column("episode_id").to_pylist(), ds.episodes.column("source_item").to_pylist()))
    wanted: dict[str, list[str]] = {item: [] for item in index.retired_items()}
    for eid in check.damaged:
        wanted.setdefault(item_of[eid], []).append(eid)
    report = RepairReport(path, after=check)
    if not wanted:
        return report
    configs = _recorded_configs(ds, index, stats=fs.exists(index.path(wstats.STATS_FILE)))
    plans, why = [], {}
    for config in configs.values():
        found, reason = _find_items(config, index.settings(config.source).get("converter_revision", 1),
                                    set(wanted) - {it.id for _, its in plans for it in its})
        if found:
            plans.append((config, sorted(found.values(), key=lambda it: it.id)))
        why[config.source] = reason
    planned = {it.id for _, its in plans for it in its}
    for item in sorted(set(wanted) - planned):
        reasons = "; ".join(why.values()) or "the dataset records no conversion to take it from"
        for eid in wanted[item] or ["(retired by an earlier repair)"]:
            report.unrepaired.append(f"episode {eid} (source item {item!r}): {reasons}; re-convert it by hand")
    if plans:
        _convert_again(path, plans, executor or SerialExecutor(), report)
        report.after = check_dataset(path, deep=True)
    return report


def _convert_again(path: str, plans: list[tuple[ConvertConfig, list[SourceItem]]], executor, report) -> None:
    with WriterLock(path, f"wamdata validate --deep --repair {path}"):
        index = DatasetIndex.open(path)
        report.retired = index.retire({it.id for _, its in plans for it in its})
        for config, items in plans:
            args = [(config, f"repair-{name}", its) for name, its in plan_units(items, executor.parallelism, None)]
            for result in executor.map_unordered(run_unit, args, on_error=unit_failed):
                index.commit(result)
                report.written += [r["episode_id"] for r in result.rows]
                report.failed += result.failures
        index.finalize({
            "repair": [{"source": c.source, "input": c.input, "items": [it.id for it in its]} for c, its in plans],
            "wamdata": __version__, "converted": len(report.written), "failed": len(report.failed),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        index.clear_retired()
        if plans[0][0].stats:
            wstats.conversion_stats(path, index.shard_summaries())
