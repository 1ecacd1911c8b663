"""`wamdata validate`: index against shards, every episode decodable, values within the schema.

Problems are grouped by class (index, shard, steps, video, schema). Index problems end the check (the
episodes cannot be located); otherwise every episode is checked up to its own first problem, so one
run names every damaged episode, and the report lists the problems class by class, naming the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wamdata.errors import SchemaError, WamdataError
from wamdata.format import layout
from wamdata.format.reader import Dataset, StoredEpisode
from wamdata.schema import ArrayFrames, Camera, Episode, validate


@dataclass
class CheckReport:
    path: str
    episodes: int = 0
    frames: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (class, message)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return f"{self.path}: OK — {self.episodes} episodes, {self.frames} frames decoded"
        first = self.problems[0][0]
        lines = [f"{self.path}: {len(self.problems)} problem(s), first class: {first}"]
        lines += [f"  [{c}] {m}" for c, m in self.problems[:50]]
        return "\n".join(lines)


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


def check_dataset(path: str, decode: bool = True) -> CheckReport:
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

    # 2.-5. every episode: its byte range, steps, videos, schema
    for row in index:
        where = f"{row['shard']}#{row['key']}"
        try:
            ep = ds.episode(row["episode_id"])
        except WamdataError as e:
            report.problems.append(("shard", str(e)))
            continue
        if ep.crc32() != row["crc32"]:
            report.problems.append(("shard", f"{where}: checksum mismatch (crc32 {ep.crc32()}, index "
                                             f"{row['crc32']}): the shard is damaged; re-convert it"))
            continue
        if ep.episode_id != row["episode_id"]:
            report.problems.append(("shard", f"{where}: holds episode {ep.episode_id!r}, index says {row['episode_id']!r}"))
            continue
        if ep.steps.num_rows != row["num_steps"]:
            report.problems.append(("steps", f"{where}: {ep.steps.num_rows} step rows, index says {row['num_steps']}"))
            continue
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
    order = ["shard", "steps", "video", "schema"]
    report.problems.sort(key=lambda p: order.index(p[0]) if p[0] in order else 99)
    return report
