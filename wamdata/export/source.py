"""What every export reads and how it resumes.

:func:`open_selection` takes a dataset path or a view / manifest (YAML, resolved by
:mod:`wamdata.loader.manifest`: filter, episode list, no split) of one dataset and gives the dataset's
interface restricted to the selected episodes (``episodes`` index rows, ``iter_shard``,
``iter_episodes``, ``features`` / ``cameras`` of the dataset), so an exporter never parses manifests.

:class:`ExportProgress` is the resume record of an export, ``<out>/.wamdata-export/progress.json``,
rewritten atomically after each finished unit (a shard, an episode): the settings the export ran with
and what is done. A re-run with the same settings continues after the last finished unit; other
settings, or a folder that is neither empty nor an unfinished export of this format, are refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import wamdata
from wamdata.errors import WamdataError

log = logging.getLogger(__name__)

PROGRESS_DIR = ".wamdata-export"


class ExportError(WamdataError):
    """The dataset cannot be represented in the target format (says which episode and what to do)."""


class Selection:
    """A dataset restricted to some episodes (all of them for a plain dataset path)."""

    def __init__(self, ds, rows: pa.Table, label: str):
        self.ds, self.url, self.label = ds, ds.url, label
        self.episodes = rows
        self._keys = set(rows.column("key").to_pylist())

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

    def iter_episodes(self):
        """Selected episodes in the dataset's order, one sequential read per shard."""
        for shard in self.shards:
            yield from self.iter_shard(shard)


def open_selection(path: str) -> Selection:
    """A dataset path, or a view / manifest naming one dataset, as a :class:`Selection`."""
    from wamdata.loader.manifest import is_manifest_path, load_manifest, select_rows

    if not is_manifest_path(path):
        ds = wamdata.open_dataset(path)
        return Selection(ds, ds.episodes, path)
    manifest = load_manifest(path)
    if len(manifest.datasets) != 1:
        raise ExportError(f"{path}: the manifest names {len(manifest.datasets)} datasets; an export writes one "
                          "dataset: export each, or curate a view of one")
    spec = manifest.datasets[0]
    ds = wamdata.open_dataset(spec.path)
    rows = select_rows(ds.episodes, spec, None, None)
    if rows.num_rows == 0:
        raise ExportError(f"{path}: the view selects no episodes of {spec.path}; nothing to export")
    order = pc.sort_indices(pc.index_in(rows["episode_id"], ds.episodes["episode_id"]))
    return Selection(ds, rows.take(order), path)


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
    """Refuse an output that overlaps the dataset (``dataset_path``: the dataset, not a view), or a non-empty folder that is not an export of
    this format (``is_export(out)``); with ``overwrite`` an earlier export is deleted."""
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
