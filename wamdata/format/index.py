"""The commit protocol: shards, partial indexes, failures, and the finished index + wamdata.json.

A unit's shards are renamed from their temporary names to ``shards/shard-NNNNNN.tar``; each shard's
index rows are then written as ``_index/shard-NNNNNN.parquet`` — the shard's done marker. A shard with
no done marker is partial and is discarded on the next open. Failures go to ``_index/*.failures.jsonl``.
A shard's summary (the conversion job's partial statistics, :class:`wamdata.format.writer.ShardSummary`)
is written as ``_index/shard-NNNNNN.stats.json`` just before its done marker, so every committed shard
keeps its own and a resumed job merges them without reading a shard again.
:meth:`DatasetIndex.finalize` merges the parts into ``episodes.parquet``, ``failures.jsonl`` and
``wamdata.json``, each written under a temporary name and renamed, so readers never see a half index.
Per-commit cost is proportional to the unit, not to the dataset, so this holds at 100k episodes.

:meth:`DatasetIndex.retire` takes committed episodes out again (``validate --deep --repair``) with the
same care: a shard rewritten without them is committed under a new number by a done marker that names
the shard it replaces, and ``_index/retired.json`` lists the items until they are converted again.
Columns added to format v1 later (``member_crc32``) are null in rows written before (:func:`conform`).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from wamdata import __version__
from wamdata.errors import FormatError, OutputError
from wamdata.format import layout
from wamdata.format.reader import split_sample
from wamdata.format.writer import EncodedEpisode, ShardWriter, UnitResult
from wamdata.schema import declaration_conflict

log = logging.getLogger(__name__)

PARTS_DIR = "_index"
SUMMARY_SUFFIX = ".stats.json"
RETIRED_FILE = f"{PARTS_DIR}/retired.json"     # source items retired by a repair, until converted again
REPLACES_KEY = b"wamdata.replaces"             # a rewritten shard's done marker: the shard it replaces

INDEX_SCHEMA = pa.schema([
    ("episode_id", pa.string()),
    ("key", pa.string()),
    ("shard", pa.string()),
    ("offset", pa.int64()),
    ("size", pa.int64()),
    ("crc32", pa.int64()),
    # one entry per tar member, in tar order; added to format v1 without a version bump (an added
    # column): a dataset written before has no such column, or nulls in the rows written before it
    ("member_crc32", pa.list_(pa.struct([("member", pa.string()), ("size", pa.int64()), ("crc32", pa.int64())]))),
    ("source", pa.string()),
    ("family", pa.string()),
    ("embodiment", pa.string()),
    ("task", pa.string()),
    ("tasks", pa.list_(pa.string())),
    ("success", pa.bool_()),
    ("num_steps", pa.int64()),
    ("duration_s", pa.float64()),
    ("fps", pa.float64()),
    ("cameras", pa.list_(pa.string())),
    ("action_space", pa.string()),
    ("split", pa.string()),
    ("source_item", pa.string()),
    ("metadata", pa.string()),
])


def conform(table: pa.Table) -> pa.Table:
    """An index table (a part, or episodes.parquet) with the columns of :data:`INDEX_SCHEMA`: columns
    added to format v1 later (``member_crc32``) are null in rows written before them."""
    for i, f in enumerate(INDEX_SCHEMA):
        if f.name not in table.column_names:
            table = table.add_column(i, f, pa.nulls(table.num_rows, f.type))
    return table


def _write_atomic(fs, path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def dataset_or_empty(fs, root: str) -> bool:
    """Whether a folder is empty or holds a wamdata dataset, finished or being written."""
    names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}
    return not names or bool(names & {layout.INFO_FILE, PARTS_DIR, layout.SHARD_DIR, layout.LOCK_FILE})


class DatasetIndex:
    """The writing side of one dataset directory, owned by the job's driver (a single writer)."""

    def __init__(self, fs, root: str):
        self.fs, self.root = fs, root
        self._next_shard: int | None = None  # the driver is the only writer: count in memory

    def path(self, rel: str) -> str:
        return layout.join(self.root, rel)

    @classmethod
    def open(cls, url: str, overwrite: bool = False) -> "DatasetIndex":
        """Open for writing; with ``overwrite`` start afresh, else resume (discarding partial shards).
        With ``overwrite`` everything but the writer lock (:mod:`wamdata.format.lock`) is deleted."""
        fs, root = layout.open_fs(url)
        idx = cls(fs, root)
        try:
            if overwrite and fs.exists(root):
                idx.check_deletable()
                for p in fs.ls(root, detail=False):
                    if p.rstrip("/").rsplit("/", 1)[-1] != layout.LOCK_FILE:
                        fs.rm(p, recursive=True)
            fs.makedirs(idx.path(layout.SHARD_DIR), exist_ok=True)
            fs.makedirs(idx.path(PARTS_DIR), exist_ok=True)
        except OSError as e:
            raise OutputError.of(root, e) from e
        info_path = idx.path(layout.INFO_FILE)
        if fs.exists(info_path):
            info = json.loads(fs.cat_file(info_path))
            if info.get("format_version") != layout.FORMAT_VERSION:
                raise FormatError(
                    f"{info_path}: format version {info.get('format_version')}, this wamdata writes "
                    f"{layout.FORMAT_VERSION}; convert into a new folder or pass --overwrite"
                )
        idx.discard_partial()
        return idx

    def check_deletable(self) -> None:
        """``overwrite`` deletes a wamdata dataset (finished or not) or an empty folder, nothing else:
        a mistyped --output must not take a source tree or a home folder with it."""
        if not self.fs.isdir(self.root):
            raise FormatError(f"{self.root}: not a folder; refusing to overwrite it")
        if not dataset_or_empty(self.fs, self.root):
            raise FormatError(f"{self.root}: not a wamdata dataset (no {layout.INFO_FILE}, {PARTS_DIR}/ or "
                              f"{layout.SHARD_DIR}/); refusing to delete it for --overwrite")

    def settings(self, source: str) -> dict | None:
        """The settings the dataset's ``source`` items were converted with (:meth:`save_settings`)."""
        path = self.path(f"{PARTS_DIR}/settings.json")
        return json.loads(self.fs.cat_file(path)).get(source) if self.fs.exists(path) else None

    def save_settings(self, source: str, settings: dict) -> None:
        path = self.path(f"{PARTS_DIR}/settings.json")
        known = json.loads(self.fs.cat_file(path)) if self.fs.exists(path) else {}
        known[source] = settings
        _write_atomic(self.fs, path, json.dumps(known, indent=1, sort_keys=True).encode())

    # -- reading back what is committed -------------------------------------------------------
    def _parts(self, suffix: str) -> list[str]:
        return sorted(p for p in self.fs.ls(self.path(PARTS_DIR), detail=False) if p.endswith(suffix))

    def committed_shards(self) -> list[str]:
        """Shard paths (relative) that have a done marker."""
        return [f"{layout.SHARD_DIR}/{p.rsplit('/', 1)[-1][: -len('.parquet')]}.tar" for p in self._parts(".parquet")]

    def rows(self) -> pa.Table:
        tables = [conform(layout.read_parquet(self.fs, p)).replace_schema_metadata(None)
                  for p in self._parts(".parquet")]
        return pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()

    def failures(self) -> list[dict]:
        out = []
        for p in self._parts(".failures.jsonl"):
            out.extend(json.loads(line) for line in self.fs.cat_file(p).decode().splitlines() if line)
        return out

    def done_items(self, include_failed: bool = True) -> set[str]:
        """Source item ids a resumed job must skip."""
        done = set(self.rows().column("source_item").to_pylist())
        if include_failed:
            done |= {f["item"] for f in self.failures()}
        return done

    def discard_partial(self) -> None:
        """Remove temporary shards and shards without a done marker (a crash mid-commit), and finish
        a retirement a crash interrupted (:meth:`retire`)."""
        if self.fs.exists(self.path(RETIRED_FILE)):
            for p in self._parts(".parquet"):
                with self.fs.open(p, "rb") as f:
                    replaced = (pq.ParquetFile(f).schema_arrow.metadata or {}).get(REPLACES_KEY)
                if replaced:
                    self._drop_marker(replaced.decode())
        tmp = self.path(layout.TMP_DIR)
        if self.fs.exists(tmp):
            self.fs.rm(tmp, recursive=True)
        committed = {p.rsplit("/", 1)[-1] for p in self.committed_shards()}
        for p in self.fs.ls(self.path(layout.SHARD_DIR), detail=False):
            name = p.rstrip("/").rsplit("/", 1)[-1]
            if layout.SHARD_PATTERN.match(name) and name not in committed:
                log.warning("discarding partial shard %s", p)
                self.fs.rm(p)
        for p in self._parts(SUMMARY_SUFFIX):   # a summary written, then the driver killed before the marker
            if f"{p.rsplit('/', 1)[-1][: -len(SUMMARY_SUFFIX)]}.tar" not in committed:
                self.fs.rm(p)

    def shard_summaries(self) -> Iterator[tuple[str, bytes | None]]:
        """``(shard, summary)`` for each committed shard (relative path): the summary stored with it, or
        None where it has none (written without one, or by a wamdata that kept none). Read one at a
        time as the caller folds them in, so the driver never holds every shard's summary at once."""
        have = {p.rsplit("/", 1)[-1][: -len(SUMMARY_SUFFIX)]: p for p in self._parts(SUMMARY_SUFFIX)}
        for rel in self.committed_shards():
            part = have.get(rel.rsplit("/", 1)[-1][: -len(".tar")])
            yield rel, (self.fs.cat_file(part) if part else None)

    def _count_shards(self) -> None:
        if self._next_shard is None:
            nums = [int(layout.SHARD_PATTERN.match(s.rsplit("/", 1)[-1]).group(1)) for s in self.committed_shards()]
            self._next_shard = max(nums, default=-1) + 1

    def _next_shard_number(self) -> int:
        self._count_shards()
        self._next_shard += 1
        return self._next_shard - 1

    # -- retiring (validate --repair) -----------------------------------------------------------
    def retired_items(self) -> list[str]:
        """Source items retired by a repair and not converted again yet."""
        path = self.path(RETIRED_FILE)
        return json.loads(self.fs.cat_file(path))["items"] if self.fs.exists(path) else []

    def clear_retired(self) -> None:
        """Forget retired items that are episodes or failures again (the rest stay listed)."""
        left = sorted(set(self.retired_items()) - self.done_items())
        if left:
            _write_atomic(self.fs, self.path(RETIRED_FILE), json.dumps({"items": left}).encode())
        elif self.fs.exists(self.path(RETIRED_FILE)):
            self.fs.rm(self.path(RETIRED_FILE))

    def retire(self, items: set[str]) -> list[str]:
        """Take the episodes of source ``items`` out of the committed dataset, so that they can be
        converted again (``wamdata validate --deep --repair``); returns their episode ids.

        The items are listed in ``_index/retired.json`` first, so a repair that stops halfway is
        finished by the next (and a resumed ``wamdata convert`` converts them: they are no longer
        done). A shard whose episodes all go is deleted, its done marker first. A shard with others
        left is rewritten: the other samples, their checksums verified, are copied member for member
        into a new shard whose done marker names the shard it replaces (``wamdata.replaces`` in its
        schema metadata); writing that marker is the commit point, the old shard and marker are
        deleted next, or by :meth:`discard_partial` after a crash. Other shards are not touched.
        """
        _write_atomic(self.fs, self.path(RETIRED_FILE),
                      json.dumps({"items": sorted(set(self.retired_items()) | set(items))}).encode())
        self._count_shards()   # rewritten and new shards number past every shard there was
        gone = []
        for part in self._parts(".parquet"):
            table = layout.read_parquet(self.fs, part)
            retire = pc.is_in(table.column("source_item"), pa.array(sorted(items), pa.string()))
            if not pc.any(retire).as_py():
                continue
            gone += table.filter(retire).column("episode_id").to_pylist()
            keep = conform(table.filter(pc.invert(retire))).to_pylist()
            name = part.rsplit("/", 1)[-1][: -len(".parquet")]
            if keep:
                self._rewrite_shard(f"{layout.SHARD_DIR}/{name}.tar", keep, table.schema.metadata or {})
            self._drop_marker(f"{layout.SHARD_DIR}/{name}.tar")
        self.discard_partial()   # the shards whose markers went
        return gone

    def _rewrite_shard(self, rel: str, rows: list[dict], metadata: dict) -> None:
        self.fs.makedirs(self.path(layout.TMP_DIR), exist_ok=True)
        tmp = self.path(f"{layout.TMP_DIR}/rewrite-{rel.rsplit('/', 1)[-1]}")
        writer = ShardWriter(self.fs, tmp)
        with self.fs.open(self.path(rel), "rb") as f:
            for r in sorted(rows, key=lambda r: r["offset"]):
                f.seek(r["offset"])
                where = f"{self.path(rel)}#{r['key']}"
                members = split_sample(f.read(r["size"]), where)
                enc = EncodedEpisode(r["key"], members, json.loads(members[0][1]))   # checksums its members once
                if enc.crc32 != r["crc32"]:
                    raise FormatError(f"{where}: checksum mismatch; repair episode {r['episode_id']!r} too")
                r["offset"], r["size"] = writer.add(enc)
                r["member_crc32"] = enc.member_crc32
        writer.close()
        new = layout.shard_path(self._next_shard_number())
        self.fs.mv(tmp, self.path(new))
        for r in rows:
            r["shard"] = new
        part = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA).replace_schema_metadata(
            {**metadata, REPLACES_KEY: rel.encode()})
        _write_atomic(self.fs, self.path(f"{PARTS_DIR}/{new.rsplit('/', 1)[-1][: -len('.tar')]}.parquet"),
                      _table_bytes(part))

    def _drop_marker(self, rel: str) -> None:
        """Remove a shard's done marker and summary: the shard is then partial, deleted as such."""
        name = rel.rsplit("/", 1)[-1][: -len(".tar")]
        for p in (f"{PARTS_DIR}/{name}.parquet", f"{PARTS_DIR}/{name}{SUMMARY_SUFFIX}"):
            if self.fs.exists(self.path(p)):
                self.fs.rm(self.path(p))

    # -- committing ---------------------------------------------------------------------------
    def commit(self, result: UnitResult) -> list[str]:
        """Make a unit's shards visible; returns their final relative paths. When the output fails
        mid-commit (disk full), shards without their done marker are removed at once, so none is left
        on disk that the index does not list; the job stops and a re-run converts those items again."""
        try:
            return self._commit(result)
        except OSError as e:
            try:
                self.discard_partial()
            except OSError:
                pass   # the next open discards them
            raise OutputError.of(self.root, e) from e

    def _commit(self, result: UnitResult) -> list[str]:
        committed = []
        for tmp, rows in result.shards:
            rel = layout.shard_path(self._next_shard_number())
            self.fs.mv(tmp, self.path(rel))
            for r in rows:
                r["shard"] = rel
            part = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA).replace_schema_metadata({
                "wamdata.features": json.dumps(result.features),
                "wamdata.cameras": json.dumps(result.cameras),
            })
            name = rel.rsplit("/", 1)[-1][: -len(".tar")]
            if tmp in result.summaries:
                _write_atomic(self.fs, self.path(f"{PARTS_DIR}/{name}{SUMMARY_SUFFIX}"), result.summaries[tmp])
            _write_atomic(self.fs, self.path(f"{PARTS_DIR}/{name}.parquet"), _table_bytes(part))
            committed.append(rel)
        if result.failures:
            lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in result.failures)
            stamp = f"{int(time.time() * 1e6)}-{result.unit}"
            _write_atomic(self.fs, self.path(f"{PARTS_DIR}/{stamp}.failures.jsonl"), lines.encode())
        return committed

    def finalize(self, conversion: dict | None = None) -> dict:
        """Merge the parts into episodes.parquet, failures.jsonl and wamdata.json."""
        tmp = self.path(layout.TMP_DIR)
        if self.fs.exists(tmp) and not self.fs.ls(tmp, detail=False):
            self.fs.rm(tmp, recursive=True)
        features, cameras = {}, {}
        tables = []
        for p in self._parts(".parquet"):
            t = layout.read_parquet(self.fs, p)
            md = t.schema.metadata or {}
            for name, feat in json.loads(md.get(b"wamdata.features", b"{}")).items():
                conflict = declaration_conflict(features.setdefault(name, feat), feat)
                if conflict:
                    raise FormatError(f"{p}: feature {name!r} declared differently in other shards: {conflict}")
            for name, cam in json.loads(md.get(b"wamdata.cameras", b"{}")).items():
                cameras.setdefault(name, cam)
            tables.append(conform(t).replace_schema_metadata(None))
        index = pa.concat_tables(tables) if tables else INDEX_SCHEMA.empty_table()
        ids = index.column("episode_id").to_pylist()
        if len(ids) != len(set(ids)):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise FormatError(f"{self.root}: duplicate episode ids {dup}; episode ids must be unique")
        done = set(index.column("source_item").to_pylist())
        failures = {f["item"]: f for f in self.failures() if f["item"] not in done}
        _write_atomic(self.fs, self.path(layout.INDEX_FILE), _table_bytes(index))
        _write_atomic(self.fs, self.path(layout.FAILURES_FILE),
                      "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures.values()).encode())
        info = self._info(index, features, cameras, len(failures), conversion)
        _write_atomic(self.fs, self.path(layout.INFO_FILE), json.dumps(info, indent=2, ensure_ascii=False).encode())
        return info

    def _info(self, index: pa.Table, features, cameras, n_failures: int, conversion: dict | None) -> dict:
        info_path = self.path(layout.INFO_FILE)
        previous = json.loads(self.fs.cat_file(info_path)) if self.fs.exists(info_path) else {}
        conversions = previous.get("conversions", [])
        if conversion is not None:
            conversions.append(conversion)
        per_shard = Counter(index.column("shard").to_pylist())
        sizes = {rel: self.fs.size(self.path(rel)) for rel in self.committed_shards()}
        shards = [{"path": rel, "bytes": size, "episodes": per_shard[rel]} for rel, size in sizes.items()]
        steps = int(pc.sum(index.column("num_steps")).as_py() or 0)
        seconds = float(pc.sum(index.column("duration_s")).as_py() or 0.0)
        return {
            "format": layout.FORMAT_NAME,
            "format_version": layout.FORMAT_VERSION,
            "writer": f"wamdata {__version__}",
            "layout": layout.TEMPLATES,
            "counts": {
                "episodes": index.num_rows,
                "steps": steps,
                "hours": seconds / 3600.0,
                "bytes": sum(sizes.values()),
                "shards": len(shards),
                "failures": n_failures,
            },
            "sources": sorted(set(index.column("source").to_pylist())),
            "embodiments": sorted(set(index.column("embodiment").to_pylist())),
            "features": dict(sorted(features.items())),
            "cameras": dict(sorted(cameras.items())),
            "shards": shards,
            "conversions": conversions,
        }
