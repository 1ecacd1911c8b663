"""``--source epic_kitchens``: EPIC-KITCHENS-100 videos + narrated action segments -> clips with language.

``--input`` is a folder of videos, ``<participant>/videos/<video_id>.MP4`` (as downloaded) or flat
``<video_id>.MP4`` (any case, found recursively); ``--option annotations=EPIC_100_<split>.csv``
(several comma-separated) names the segments, ``--option video_info=EPIC_100_video_info.csv`` the
native rates. One item per annotated video, id ``epic_<video_id>``.

| EPIC_100_*.csv column                   | canonical                       | conventions |
|-----------------------------------------|---------------------------------|-------------|
| start_timestamp, stop_timestamp         | the segment's span, clip span   | ``HH:MM:SS.ss`` -> s of the source video (what the clips use) |
| start_frame, stop_frame                 | metadata.spans[*] (as recorded) | NOT native frames: counted at 50 fps for 50 fps videos and at 60 fps for every other rate (59.94, 29.97, 47.95, 90); checked against the timestamps (:func:`epic_frame_rate`) |
| narration                               | language text; task (clip=segments) | |
| narration_id                            | episode id ``epic_<narration_id>`` (clip=segments), metadata | |
| verb, verb_class, noun, noun_class      | metadata.spans[*], metadata.segment | classes as int |
| all_nouns, all_noun_classes             | metadata.spans[*]               | Python list literals parsed to lists |
| narration_timestamp                     | metadata.spans[*].narration_timestamp_s | s; None where empty (real rows have that) |
| participant_id, video_id                | metadata.participant_id, metadata.video_id | |
| EPIC_100_video_info.csv fps, duration, resolution | metadata.video_info | the frame convention's rate |
| the video                               | camera ``ego`` + steps          | see converters/clips.py |

clip=segments (default): one clip per segment, ``pad`` s each side (<= 2), its narration the task,
every segment overlapping the clip a language segment. clip=fixed:SECONDS: windows over the whole
video; videos without annotations are then converted too (no language). With clip=segments a video
in ``--input`` that no annotation row names is logged by discover and left out (the annotation files
of a split name only that split's videos). A row naming a missing video fails that video's item; a
malformed row, or a span outside its video, fails its video's item naming the CSV, row and column.
"""

from __future__ import annotations

import ast
import csv
import logging
import os
import re
from dataclasses import dataclass
from typing import Iterator

from converters.clip_decode import probe_video
from converters.clips import ClipOptions, Span, clip_episodes, plan_clips, video_files
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import Episode
from wamdata.sources import Converter, SourceItem, register

log = logging.getLogger(__name__)

_TS = re.compile(r"^(\d+):(\d{2}):(\d{2}(?:\.\d+)?)$")
FRAME_TOLERANCE = 2      # EPIC frames vs timestamps: rounding differences of one frame are common


def epic_frame_rate(native_fps: float) -> int:
    """The rate EPIC-KITCHENS-100's start/stop_frame count at: 50 for 50 fps videos, 60 otherwise."""
    return 50 if abs(native_fps - 50.0) < 1e-3 else 60


def parse_timestamp(text: str) -> float:
    m = _TS.match(text.strip())
    if not m:
        raise ValueError(f"not HH:MM:SS.ss: {text!r}")
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def parse_row(row: dict, path: str, line: int) -> Span:
    """One annotation row as a Span; ValueError naming the file, line and column when malformed."""
    col = None
    try:
        col = "start_timestamp"
        start = parse_timestamp(row[col])
        col = "stop_timestamp"
        stop = parse_timestamp(row[col])
        meta = {"id": row["narration_id"], "narration_id": row["narration_id"], "video_id": row["video_id"],
                "participant_id": row["participant_id"], "start_s": start, "stop_s": stop}
        for col in ("start_frame", "stop_frame", "verb_class", "noun_class"):
            meta[col] = int(row[col])
        for col in ("verb", "noun", "narration"):
            meta[col] = row[col]
        col = "narration_timestamp"   # empty in some real rows (e.g. P02_12's)
        meta["narration_timestamp_s"] = parse_timestamp(row[col]) if row[col].strip() else None
        for col in ("all_nouns", "all_noun_classes"):
            meta[col] = list(ast.literal_eval(row[col]))
    except (KeyError, ValueError, TypeError, SyntaxError) as e:
        raise ValueError(f"{path}: line {line}: column {col}: {e}") from None
    if stop < start:
        raise ValueError(f"{path}: line {line}: stop_timestamp {row['stop_timestamp']} before start_timestamp")
    return Span(start, stop, meta["narration"], meta)


def read_annotations(paths: list[str]) -> tuple[dict[str, list[Span]], dict[str, list[str]]]:
    """(video_id -> spans, video_id -> errors of its malformed rows)."""
    spans: dict[str, list[Span]] = {}
    errors: dict[str, list[str]] = {}
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                vid = row.get("video_id") or f"<line {line}>"
                try:
                    spans.setdefault(vid, []).append(parse_row(row, path, line))
                except ValueError as e:
                    errors.setdefault(vid, []).append(str(e))
    return spans, errors


def read_video_info(path: str | None) -> dict[str, dict]:
    if path is None:
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        return {r["video_id"]: {"duration_s": float(r["duration"]), "fps": float(r["fps"]),
                                "resolution": r["resolution"]} for r in csv.DictReader(f)}


@register("epic_kitchens")
class EpicKitchens(Converter):
    family = "egocentric_video"

    @dataclass
    class Options(ClipOptions):
        annotations: str | None = None   # EPIC_100_<split>.csv, several comma-separated
        video_info: str | None = None    # EPIC_100_video_info.csv

    def discover(self, root: str) -> Iterator[SourceItem]:
        if not self.options.annotations:
            raise ConfigError("epic_kitchens: --option annotations=EPIC_100_<split>.csv is required")
        ann = [p.strip() for p in self.options.annotations.split(",") if p.strip()]
        for p in ann + ([self.options.video_info] if self.options.video_info else []):
            if not os.path.isfile(p):
                raise ConfigError(f"epic_kitchens: annotation file {p} not found")
        spans, errors = read_annotations(ann)
        files = video_files(root)
        fixed = self.options.clip_mode()[0] == "fixed"
        unannotated = sorted(set(files) - set(spans) - set(errors))
        if unannotated and not fixed:
            log.warning("epic_kitchens: %d videos in %s have no annotation rows in %s and are not converted: %s%s",
                        len(unannotated), root, self.options.annotations, ", ".join(unannotated[:10]),
                        " ..." if len(unannotated) > 10 else "")
        for vid in sorted(set(spans) | set(errors) | (set(files) if fixed else set())):
            path = files.get(vid) or os.path.join(root, vid.split("_")[0], "videos", f"{vid}.MP4")
            yield SourceItem(id=f"epic_{vid}", path=path,
                             info={"video_id": vid, "spans": spans.get(vid, []), "errors": errors.get(vid, []),
                                   "exists": vid in files, "relpath": os.path.relpath(path, root)})

    def read(self, item: SourceItem) -> list[Episode]:
        vid, spans = item.info["video_id"], sorted(item.info["spans"], key=lambda s: (s.start_s, s.end_s))
        if item.info["errors"]:
            raise SourceError(item, f"epic_kitchens: {len(item.info['errors'])} malformed annotation rows, first: "
                                    f"{item.info['errors'][0]}")
        if not item.info["exists"]:
            raise SourceError(item, f"epic_kitchens: video {vid} not found under --input ({len(spans)} annotation "
                                    f"rows name it, e.g. {spans[0].meta['narration_id']})")
        info = read_video_info(self.options.video_info).get(vid)
        if info is not None:
            rate = epic_frame_rate(info["fps"])
            for sp in spans:
                for key, t in (("start_frame", sp.start_s), ("stop_frame", sp.end_s)):
                    if abs(sp.meta[key] - t * rate) > FRAME_TOLERANCE:
                        raise SourceError(item, f"epic_kitchens: {sp.meta['narration_id']}: {key} {sp.meta[key]} "
                                                f"disagrees with its timestamp {t:.2f} s at EPIC's {rate} fps")
        video = probe_video(item, item.path)
        plans = plan_clips(item, spans, video, self.options, "epic_kitchens")
        segments = self.options.clip_mode()[0] == "segments"
        ids = [f"epic_{p.own.meta['narration_id']}" if segments else f"{item.id}_{n:05d}"
               for n, p in enumerate(plans)]
        tasks = [[p.own.text] if segments else [] for p in plans]
        participant = spans[0].meta["participant_id"] if spans else vid.split("_")[0]
        meta = {"video_id": vid, "participant_id": participant, "video_info": info,
                "provenance": {"path": item.info["relpath"]}}
        episodes = clip_episodes(item, "epic_kitchens", video, plans, self.options, ids, tasks, meta)
        for ep, plan in zip(episodes, plans):
            ep.metadata["narration_ids"] = [sp.meta["narration_id"] for sp in plan.spans]
            if plan.own is not None:
                ep.metadata["segment"] = plan.own.meta
        return episodes
