"""`wamdata validate`: index against shards, every episode decodable, values within the schema.

Problems are grouped by class (index, shard, checksum, steps, video, schema). Index problems end the
check (the episodes cannot be located); otherwise every episode is checked up to its own first
problem, so one run names every damaged episode, and the report lists the problems class by class,
naming the first.

Each episode's bytes are checked against the CRC32 its index row records over all its members
(video decoders conceal damage instead of failing). ``deep=True`` (``validate --deep``) reads every
shard from start to end instead: each member's CRC32 against the one recorded for it (the index's
``member_crc32``), so a flipped byte is named by shard, episode and member; a member whose tar
header is damaged shows as missing; bytes of a shard that belong to no indexed episode (other than
the tar end) are reported too. Rows written before member checksums were recorded are checked per
episode, and the report says so. ``report.damaged`` lists the episodes whose bytes are damaged (what
``validate --deep --repair`` converts again); steps, video or schema problems of intact bytes are
not damage and are only reported.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from wamdata.errors import FormatError, SchemaError, WamdataError
from wamdata.format import layout
from wamdata.format.index import RETIRED_FILE
from wamdata.format.reader import Dataset, StoredEpisode, split_sample
from wamdata.format.writer import members_crc32
from wamdata.schema import ArrayFrames, Camera, Episode, validate

ORDER = ["index", "repair", "shard", "checksum", "steps", "video", "schema"]


@dataclass
class CheckReport:
    path: str
    episodes: int = 0
    frames: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (class, message)
    damaged: dict[str, list[str]] = field(default_factory=dict)   # episode id -> damaged members ([] if unknown)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            lines = [f"{self.path}: OK — {self.episodes} episodes, {self.frames} frames decoded"]
        else:
            lines = [f"{self.path}: {len(self.problems)} problem(s), first class: {self.problems[0][0]}"]
            lines += [f"  [{c}] {m}" for c, m in self.problems[:50]]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def add_damage(self, kind: str, row: dict, message: str, members: list[str]) -> None:
        self.problems.append((kind, message))
        self.damaged.setdefault(row["episode_id"], []).extend(members)


def _as_episode(ep: StoredEpisode, decode: bool) -> Episode:
    """Rebuild a schema Episode from what is stored, to run the same validation the writer ran."""
    steps = {n: ep.array(n) for n in ep.steps.column_names}
    cameras = {}
    for name in ep.cameras:
        frames = ep.frames(name) if decode else np.zeros((ep.meta["cameras"][name]["num_frames"], 1, 1, 3), np.uint8)
        cameras[name] = Camera(name, ArrayFrames(frames))
    m = ep.meta
    return Episode(m["episode_id"], m["source"], m["family"], m["embodiment"], m["fps"], steps,
                   features=dict(ep.features), cameras=cameras, action_space=m["action_space"])


def check_dataset(path: str, decode: bool = True, deep: bool = False) -> CheckReport:
    ds = Dataset(path)
    report = CheckReport(path)
    index = ds.episodes.to_pylist()
    report.episodes = len(index)

    # 1. index vs shards: every shard listed exists with its size, every row points inside one
    listed = {s["path"]: s for s in ds.info["shards"]}
    for rel, s in listed.items():
        full = layout.join(ds.root, rel)
        if not ds.fs.exists(full):
            report.problems.append(("index", f"{full}: shard listed in {layout.INFO_FILE} is missing"))
        elif ds.fs.size(full) != s["bytes"]:
            report.problems.append(("index", f"{full}: {ds.fs.size(full)} bytes, index says {s['bytes']}"))
    for row in index:
        if row["shard"] not in listed:
            report.problems.append(("index", f"episode {row['episode_id']!r}: shard {row['shard']} not listed"))
    if ds.info["counts"]["episodes"] != len(index):
        report.problems.append(("index", f"{layout.INFO_FILE} counts {ds.info['counts']['episodes']} episodes, "
                                         f"{layout.INDEX_FILE} has {len(index)}"))
    if report.problems:
        return report
    retired = layout.join(ds.root, RETIRED_FILE)
    if ds.fs.exists(retired):
        items = json.loads(ds.fs.cat_file(retired))["items"]
        report.problems.append(("repair", f"{retired}: a repair stopped before {len(items)} retired source item(s) "
                                          f"were converted again (first {items[0]!r}); run `wamdata validate "
                                          f"--deep --repair {path}` to finish it"))

    # 2.-5. every episode: its bytes, steps, videos, schema
    if deep:
        _check_shards(ds, index, report, decode)
    else:
        for row in index:
            where = f"{row['shard']}#{row['key']}"
            try:
                ep = ds.episode(row["episode_id"])
            except WamdataError as e:
                report.add_damage("shard", row, str(e), [])
                continue
            if ep.crc32() != row["crc32"]:
                report.add_damage("shard", row, f"{where}: checksum mismatch (crc32 {ep.crc32()}, index {row['crc32']}): "
                                             "the shard is damaged; `wamdata validate --deep` names the member", [])
                continue
            _check_episode(report, row, ep, decode, where)
    report.problems.sort(key=lambda p: ORDER.index(p[0]) if p[0] in ORDER else 99)
    return report


def _check_episode(report: CheckReport, row: dict, ep: StoredEpisode, decode: bool, where: str) -> None:
    if ep.episode_id != row["episode_id"]:
        report.problems.append(("shard", f"{where}: holds episode {ep.episode_id!r}, index says {row['episode_id']!r}"))
        return
    if ep.steps.num_rows != row["num_steps"]:
        report.problems.append(("steps", f"{where}: {ep.steps.num_rows} step rows, index says {row['num_steps']}"))
        return
    try:
        episode = _as_episode(ep, decode)
        validate(episode)
    except SchemaError as e:
        report.problems.append(("schema", f"{where}: {e}"))
    except Exception as e:  # noqa: BLE001 - a broken video shows as an exception of the decoder
        report.problems.append(("video", f"{where}: cannot decode: {type(e).__name__}: {e}"))
    else:
        if decode:
            report.frames += sum(c.frames.num_frames for c in episode.cameras.values())


def _check_shards(ds: Dataset, index: list[dict], report: CheckReport, decode: bool) -> None:
    """``--deep``: every shard read once, front to back; every byte belongs to an episode or the tar end."""
    by_shard = defaultdict(list)
    for row in index:
        by_shard[row["shard"]].append(row)
    members = unrecorded = 0
    for rel in ds.shards:
        full = layout.join(ds.root, rel)
        end = 0
        with ds.fs.open(full, "rb", block_size=8 * 1024 * 1024) as f:
            for row in sorted(by_shard[rel], key=lambda r: r["offset"]):
                if row["offset"] != end:
                    report.problems.append(("shard", f"{full}: bytes {min(end, row['offset'])}-{max(end, row['offset'])} "
                                                     f"before episode {row['episode_id']!r} belong to "
                                                     f"{'no' if row['offset'] > end else 'two'} indexed episode(s)"))
                f.seek(row["offset"])
                data, end = f.read(row["size"]), row["offset"] + row["size"]
                members += len(row.get("member_crc32") or ())
                unrecorded += row.get("member_crc32") is None
                ep = _check_members(report, full, row, data)
                if ep is not None:
                    _check_episode(report, row, ep, decode, ep.where)
            f.seek(end)
            tail = f.read()
        if tail.strip(b"\0"):
            report.problems.append(("shard", f"{full}: {len(tail)} bytes after its last episode (offset {end}) are "
                                             "not the tar end: a sample the index does not list, or damage"))
    report.notes.append(f"deep: {members} members of {len(index)} episodes in {len(ds.shards)} shards checked "
                        "against their recorded CRC32")
    if unrecorded:
        report.notes.append(f"member checksums were not recorded for {unrecorded} episode(s) (written before "
                            "wamdata recorded them): those were checked by their episode checksum only")


def _check_members(report: CheckReport, shard: str, row: dict, data: bytes) -> StoredEpisode | None:
    """One sample's members against the index row; the episode as stored, or None when damaged."""
    where = f"{shard}#{row['key']}"
    name = f"{shard}: episode {row['episode_id']!r}"
    recorded = row.get("member_crc32")
    try:
        got = split_sample(data, where)
    except FormatError:
        first = recorded[0]["member"] if recorded else "its first member"
        report.add_damage("checksum", row, f"{name}: the tar header of {first} is damaged", [first])
        return None
    if recorded is None:
        if members_crc32(b for _, b in got) != row["crc32"]:
            report.add_damage("checksum", row, f"{name}: checksum mismatch over its members (member checksums not "
                                            "recorded for it; re-convert to name the member)", [])
            return None
    else:
        crcs = {n: (len(b), zlib.crc32(b)) for n, b in got}
        bad = []
        for m in recorded:
            n = m["member"]
            if n not in crcs:
                bad.append(n)
                report.add_damage("checksum", row, f"{name}, member {n}: missing from the sample (its tar header, "
                                                "or one before it, is damaged)", [n])
            elif crcs[n] != (m["size"], m["crc32"]):
                bad.append(n)
                report.add_damage("checksum", row, f"{name}, member {n}: crc32 {crcs[n][1]:08x} over {crcs[n][0]} "
                                                f"bytes, recorded {m['crc32']:08x} over {m['size']}: damaged", [n])
        extra = sorted(set(crcs) - {m["member"] for m in recorded})
        if extra:
            report.add_damage("checksum", row, f"{name}: members {extra} are not recorded for it", extra)
        if bad or extra:
            return None
    try:
        return StoredEpisode(row["key"], {n.partition(".")[2]: b for n, b in got}, where)
    except FormatError as e:   # intact bytes that were never a sample: not damage, nothing to repair
        report.problems.append(("shard", str(e)))
        return None
