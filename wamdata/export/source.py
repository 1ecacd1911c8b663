"""What every export reads and how it resumes.

:func:`open_selection` takes a dataset path or a view / manifest (YAML, resolved by
:func:`wamdata.loader.manifest.view_selection`: filter, episode list, kept step ranges, no split) of one
dataset and gives the dataset's interface restricted to the selection, so an exporter never parses
manifests. What it yields are :class:`Part` s: a stored episode, or one kept step range of it (a view's
``keep_steps``), each exported as its own episode. LeRobot, zarr and hf episodes are contiguous in time,
so an episode with kept ranges [0, 40) and [60, 90) becomes two exported episodes, each naming the
source episode and its step range; an episode a view does not cut is one part, whole.

:class:`ExportProgress` is the resume record of an export, ``<out>/.wamdata-export/progress.json``,
rewritten atomically after each finished unit (an hf shard, a zarr episode, a group of LeRobot files):
the settings the export ran with and what is done. A re-run with the same settings continues after the
last finished unit; other settings, a folder that is neither empty nor an unfinished export of this
format, or an export with no resume record are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import wamdata
from wamdata.errors import WamdataError

log = logging.getLogger(__name__)

PROGRESS_DIR = ".wamdata-export"


class ExportError(WamdataError):
    """The dataset cannot be represented in the target format (says which episode and what to do)."""


class Part:
    """Steps [start, stop) of a stored episode, exported as one episode (the whole episode, or one
    range a view keeps). Arrays, the steps table and frames are those steps only."""

    def __init__(self, ep, start: int, stop: int):
        self.ep, self.start, self.stop = ep, start, stop
        self.episode_id, self.meta, self.where = ep.episode_id, ep.meta, ep.where
        self.whole = start == 0 and stop == ep.num_steps
        if not self.whole:
            self.where = f"{ep.where} steps [{start}, {stop})"

    @property
    def label(self) -> str:
        """The part's name in resume records: the episode id, with the step range when cut."""
        return self.episode_id if self.whole else f"{self.episode_id}[{self.start}:{self.stop}]"

    @property
    def num_steps(self) -> int:
        return self.stop - self.start

    @property
    def cameras(self) -> list[str]:
        return self.ep.cameras

    @property
    def steps(self) -> pa.Table:
        return self.ep.steps.slice(self.start, self.num_steps)

    def array(self, name: str) -> np.ndarray:
        return self.ep.array(name)[self.start:self.stop]

    def frames(self, camera: str) -> np.ndarray:
        return self.ep.frames(camera, self.start, self.stop)

    def iter_frames(self, camera: str, start: int = 0, stop: int | None = None):
        stop = self.num_steps if stop is None else min(stop, self.num_steps)
        return self.ep.iter_frames(camera, self.start + start, self.start + stop)


def _spans(num_steps: int, ranges) -> list[tuple[int, int]]:
    """The [start, stop) parts of an episode of ``num_steps`` steps: whole without ranges, else each
    kept range within the stored steps (ranges past the end are cut to it, as the loader does)."""
    if ranges is None:
        return [(0, num_steps)]
    return [(a, min(b, num_steps)) for a, b in ranges if a < num_steps]


class Selection:
    """A dataset restricted to some episodes (all of them for a plain dataset path) and, per episode,
    to the step ranges a view keeps (``ranges``: episode id -> ranges; an episode not named: whole)."""

    def __init__(self, ds, rows: pa.Table, label: str, ranges: dict | None = None):
        self.ds, self.url, self.label = ds, ds.url, label
        self.episodes = rows
        self.ranges = ranges or {}
        self._keys = set(rows.column("key").to_pylist())
        # each episode's parts, from the index (its num_steps are the stored steps)
        self._spans_of = {eid: _spans(int(n), self.ranges.get(eid)) for eid, n in
                          zip(rows.column("episode_id").to_pylist(), rows.column("num_steps").to_pylist())}
        by_shard: dict[str, list] = {}
        for eid, shard in zip(rows.column("episode_id").to_pylist(), rows.column("shard").to_pylist()):
            by_shard.setdefault(shard, []).extend((eid, a, b) for a, b in self._spans_of[eid])
        self.spans = [s for shard in self.shards for s in by_shard[shard]]   # in the order parts are yielded
        self._per_shard = {shard: len(by_shard[shard]) for shard in self.shards}

    @property
    def num_parts(self) -> int:
        """How many episodes the export writes (a cut episode counts once per kept range)."""
        return len(self.spans)

    @property
    def num_steps(self) -> int:
        return sum(b - a for _, a, b in self.spans)

    @property
    def digest(self) -> str:
        """What is selected, for a resume record: a re-run of an edited view is another export."""
        return hashlib.sha1("\n".join(f"{e}[{a}:{b}]" for e, a, b in self.spans).encode()).hexdigest()

    @property
    def features(self):
        return self.ds.features

    @property
    def cameras(self):
        return self.ds.cameras

    @property
    def info(self):
        return self.ds.info

    @property
    def shards(self) -> list[str]:
        used = set(self.episodes.column("shard").to_pylist())
        return [s for s in self.ds.shards if s in used]

    def iter_shard(self, shard: str, only=None):
        for ep in self.ds.iter_shard(shard, only=only):
            if ep.key in self._keys:
                yield ep

    def iter_episodes(self, skip: int = 0):
        """The selected :class:`Part` s in the dataset's order, one sequential read per shard; the
        first ``skip`` (done by an earlier run) are left out, whole shards of them without reading."""
        for shard in self.shards:
            if skip >= self._per_shard[shard]:
                skip -= self._per_shard[shard]
                continue
            for ep in self.iter_shard(shard):
                for a, b in self._spans_of[ep.episode_id]:
                    if skip:
                        skip -= 1
                        continue
                    yield Part(ep, a, b)


def open_selection(path: str) -> Selection:
    """A dataset path, or a view / manifest naming one dataset, as a :class:`Selection`."""
    from wamdata.loader.manifest import is_manifest_path, view_selection

    spec, rows = view_selection(path)
    ds = wamdata.open_dataset(spec.path)
    if rows.num_rows == 0:
        raise ExportError(f"{path}: the view selects no episodes of {spec.path}; nothing to export"
                          if is_manifest_path(path) else f"{path}: the dataset has no episodes; nothing to export")
    order = pc.sort_indices(pc.index_in(rows["episode_id"], ds.episodes["episode_id"]))
    sel = Selection(ds, rows.take(order), str(path), spec.ranges)
    if sel.num_parts == 0:
        raise ExportError(f"{path}: the view keeps no steps of its {rows.num_rows} episodes "
                          f"(keep_steps ranges past their ends); nothing to export")
    return sel


def features_in_every_episode(ds, fmt: str) -> dict:
    """The dataset's features that every episode has. LeRobot and zarr have one feature set per dataset,
    so a feature some episodes lack is left out (with a warning naming it), found by a pass over the
    episodes' metadata members (their feature lists; steps and videos are seeked over) before
    anything is written rather than failing an export halfway."""
    have: Counter = Counter()
    example: dict[str, str] = {}
    n = 0
    for shard in ds.shards:
        for ep in ds.iter_shard(shard, only=("json",)):
            names = set(ep.meta["features"])
            have.update(names)
            for f in ds.features:
                if f not in names:
                    example.setdefault(f, ep.episode_id)
            n += 1
    partial = sorted(f for f in ds.features if have[f] < n)
    for f in partial:
        log.warning("%s export: %s is missing in %d of %d episodes (e.g. %r); left out", fmt, f, n - have[f], n,
                    example[f])
    return {f: feat for f, feat in ds.features.items() if have[f] == n}


def check_output(dataset_path: str, out: Path, is_export, overwrite: bool) -> None:
    """Refuse an output that overlaps the dataset (``dataset_path``: the dataset, not a view), a non-empty
    folder that is not an export of this format (``is_export(out)``), or one without a resume record
    (nothing says what in it is complete); with ``overwrite`` an earlier export is deleted."""
    import shutil

    if "://" not in str(dataset_path):
        src = os.path.realpath(dataset_path)
        dst = os.path.realpath(out)
        if src == dst or src.startswith(dst + os.sep) or dst.startswith(src + os.sep):
            raise ExportError(f"{out}: the export would overlap the dataset {dataset_path}; choose a folder outside it")
    if out.exists() and any(out.iterdir()):
        if not is_export(out):
            raise ExportError(f"{out}: exists and is not an export of this format; choose another --output")
        if overwrite:
            shutil.rmtree(out)
        elif not (out / PROGRESS_DIR / "progress.json").is_file():
            raise ExportError(f"{out}: holds an export without a resume record ({PROGRESS_DIR}/progress.json); "
                              "pass --overwrite to replace it, or choose another --output")


class ExportProgress:
    """The resume record of one export in ``out`` (see the module docstring)."""

    def __init__(self, out: Path, fmt: str, settings: dict):
        self.path = out / PROGRESS_DIR / "progress.json"
        self.state = {"format": fmt, "settings": settings, "done": [], "complete": False}
        if self.path.exists():
            old = json.loads(self.path.read_text())
            if old.get("complete"):
                raise ExportError(f"{out}: already holds a finished {fmt} export; pass --overwrite to write it again")
            if (old.get("format"), old.get("settings")) != (fmt, settings):
                raise ExportError(f"{out}: an unfinished {old.get('format')} export with other settings "
                                  f"({old.get('settings')}); re-run it as it was, or pass --overwrite")
            self.state = old

    @property
    def done(self) -> list:
        return self.state["done"]

    def save(self, **updates) -> None:
        self.state.update(updates)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        os.replace(tmp, self.path)

    def finish(self) -> None:
        self.save(complete=True)


def progress_bar(total: int, desc: str, enabled: bool, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="episode", desc=desc, disable=not enabled)
