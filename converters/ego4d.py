"""``--source ego4d``: Ego4D videos with narrations or Goal-Step annotations -> clips with language.

``--input`` is a folder holding ``<video_uid>.mp4`` (e.g. ``v2/full_scale``, found recursively).
Annotation files come from options, or are found under ``--input`` by their Ego4D names:
``metadata=ego4d.json`` (optional), ``narrations=narration.json`` (default mode), or
``annotations=goalstep_<split>.json`` (Goal-Step mode). One item per annotated video, id
``ego4d_<video_uid>``.

| source field                                              | canonical                    | conventions |
|-----------------------------------------------------------|------------------------------|-------------|
| narration.json ``<uid>.narration_pass_N.narrations[*]``   | language; clip=segments clips | ``timestamp_sec`` is a point: the window is ``t +- w/2``, ``w`` = the median gap between that pass's consecutive narrations in the video (an adaptive window like EgoVLP's, median so one stray point does not widen it), or ``narration_window=SECONDS``; clipped to the video |
| ``narration_text``                                        | language text, task (segments) | as recorded (``#C C ...`` tags kept) |
| ``...summaries[*]`` ``start_sec``/``end_sec``/``summary_text`` | language segments of the clips they overlap | real spans |
| narration ``annotation_uid``, ``timestamp_frame``, pass   | metadata.spans[*]            | |
| goalstep ``videos[*].goal_description`` / ``goal_category`` | tasks (last), metadata.goal | |
| goalstep ``segments[*]`` (steps) ``start_time``/``end_time``/``step_description`` | clip=segments clips (task = step, then goal), language | s of the video |
| goalstep ``segments[*].segments[*]`` (substeps)           | language segments            | nested spans kept, ``level`` 2 in metadata.spans |
| step ``step_category``, ``is_relevant``, ``is_continued``, ``summary`` | metadata.spans[*]   | |
| ego4d.json ``videos[*]`` (``video_metadata`` fps, num_frames, resolution; scenarios) | metadata.ego4d | |
| the video                                                 | camera ``ego`` + steps       | see converters/clips.py |

``narration_pass`` picks pass 1 (default), 2, or ``both`` (the passes are two annotators narrating the
same video, so both duplicates most moments). A video named by the annotations but absent from
``--input`` fails its own item; a span outside its video fails its video's item.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from converters.clip_decode import probe_video
from converters.clips import ClipOptions, Span, clip_episodes, plan_clips, video_files
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import Episode
from wamdata.sources import Converter, SourceItem, register


def _find(root: str, name: str) -> str | None:
    for d, _, names in sorted(os.walk(root)):
        if name in names:
            return os.path.join(d, name)
    return None


def _load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"ego4d: {path}: not a readable JSON file ({e})") from None


def narration_points(entry: dict, passes: tuple[str, ...]) -> tuple[list[dict], list[Span]]:
    """(point narrations with their pass, summary spans) of one video's narration.json entry."""
    points, summaries = [], []
    for p in passes:
        block = entry.get(f"narration_pass_{p}") or {}
        for i, n in enumerate(block.get("narrations") or []):
            points.append({"id": f"pass{p}_{i}", "pass": int(p), **n})
        for i, s in enumerate(block.get("summaries") or []):
            summaries.append(Span(float(s["start_sec"]), float(s["end_sec"]), s["summary_text"],
                                  {"id": f"pass{p}_summary_{i}", "pass": int(p), **s}))
    return points, summaries


def goal_spans(goal: dict) -> list[Span]:
    """Steps (level 1) and their substeps (level 2) of a Goal-Step video entry."""
    out = []
    for i, step in enumerate(goal.get("segments") or []):
        for j, sub in enumerate([None] + list(step.get("segments") or [])):
            seg, level = (step, 1) if sub is None else (sub, 2)
            meta = {k: v for k, v in seg.items() if k != "segments"}
            out.append(Span(float(seg["start_time"]), float(seg["end_time"]), seg["step_description"],
                            {**meta, "id": f"step{i}" + (f"_{j - 1}" if level == 2 else ""), "level": level}))
    return out


@register("ego4d")
class Ego4D(Converter):
    family = "egocentric_video"

    @dataclass
    class Options(ClipOptions):
        metadata: str | None = None       # ego4d.json
        narrations: str | None = None     # narration.json
        annotations: str | None = None    # goalstep_<split>.json (Goal-Step mode)
        narration_pass: str = "1"         # 1 | 2 | both
        narration_window: float | None = None   # seconds around each narration (None: adaptive)

        def __post_init__(self):
            super().__post_init__()
            if self.narration_pass not in ("1", "2", "both"):
                raise ConfigError(f"ego4d: option narration_pass is 1, 2 or both, got {self.narration_pass!r}")

    def discover(self, root: str) -> Iterator[SourceItem]:
        o = self.options
        meta_path = o.metadata or _find(root, "ego4d.json")
        meta = {v["video_uid"]: v for v in _load(meta_path).get("videos", [])} if meta_path else {}
        if o.annotations:
            annotated = {g["video_uid"]: {"goal": g} for g in _load(o.annotations).get("videos", [])}
        else:
            path = o.narrations or _find(root, "narration.json")
            if path is None:
                raise ConfigError("ego4d: give --option narrations=narration.json or annotations=goalstep_<split>.json")
            annotated = {uid: {"narration": entry} for uid, entry in _load(path).items()}
        files = video_files(root)
        for uid in sorted(annotated):
            path = files.get(uid) or os.path.join(root, f"{uid}.mp4")
            yield SourceItem(id=f"ego4d_{uid}", path=path,
                             info={"uid": uid, "exists": uid in files, "ego4d": meta.get(uid),
                                   "relpath": os.path.relpath(path, root), **annotated[uid]})

    def read(self, item: SourceItem) -> list[Episode]:
        uid = item.info["uid"]
        if not item.info["exists"]:
            raise SourceError(item, f"ego4d: video {uid}.mp4 not found under --input (named by the annotations)")
        video = probe_video(item, item.path)
        goal = item.info.get("goal")
        try:
            if goal is not None:   # steps make the clips, substeps are language
                steps = goal_spans(goal)
                clip_on = [s for s in steps if s.meta["level"] == 1]
                context = [s for s in steps if s.meta["level"] == 2]
            else:                  # narration windows make the clips, summaries are language
                passes = ("1", "2") if self.options.narration_pass == "both" else (self.options.narration_pass,)
                points, context = narration_points(item.info["narration"], passes)
                clip_on = self._windows(points, video.duration_s)
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError(item, f"ego4d: malformed annotation for {uid}: missing or bad {e!r}") from None
        plans = plan_clips(item, clip_on, video, self.options, "ego4d", tuple(context))
        goal_text = [goal["goal_description"]] if goal is not None and goal.get("goal_description") else []
        segments = self.options.clip_mode()[0] == "segments"
        ids = [f"ego4d_{uid}_{p.own.meta['id']}" if segments else f"{item.id}_{n:05d}" for n, p in enumerate(plans)]
        tasks = [([p.own.text] if segments and p.own.text else []) + goal_text for p in plans]
        meta = {"video_uid": uid, "ego4d": item.info.get("ego4d"), "provenance": {"path": item.info["relpath"]},
                "annotation": "goalstep" if goal is not None else "narration"}
        if goal is not None:
            meta["goal"] = {k: v for k, v in goal.items() if k != "segments"}
        return clip_episodes(item, "ego4d", video, plans, self.options, ids, tasks, meta)

    def _windows(self, points: list[dict], duration: float) -> list[Span]:
        """Point narrations -> spans (see the module docstring for the window)."""
        out = []
        for p in sorted({n["pass"] for n in points}):
            ts = np.array([float(n["timestamp_sec"]) for n in points if n["pass"] == p])
            gaps = np.diff(np.sort(ts))
            w = self.options.narration_window or (float(np.median(gaps)) if len(gaps) else 1.0)
            for n in (n for n in points if n["pass"] == p):
                t = float(n["timestamp_sec"])
                end = min(duration, t + w / 2) if t <= duration else t   # a point past the end fails the item
                out.append(Span(max(0.0, t - w / 2), end, n["narration_text"], {**n, "window_s": w}))
        return out
