"""``--source video``: any folder of video files -> clips, with optional same-named captions.

One item per video file (``*.mp4 *.mov *.mkv *.webm *.avi *.m4v``, any case, found recursively), id
``video_<relative path without extension>``. Captions next to a video with the same stem:

| source                                   | canonical                 | conventions |
|------------------------------------------|---------------------------|-------------|
| ``<stem>.srt`` cues (``HH:MM:SS,mmm --> ...``) | language, clip=segments spans | seconds of the source video |
| ``<stem>.vtt`` cues (WebVTT, hours optional, cue settings ignored) | same | |
| ``<stem>.json``: a list of ``{start, end, text}`` or ``{"segments": [...]}`` (Whisper's output) | same | extra keys kept in metadata.spans |
| the video                                 | camera ``ego`` + steps    | see converters/clips.py |

Options: those of :class:`converters.clips.ClipOptions`, with ``clip=fixed:10`` by default (a folder
of videos usually has no captions); ``clip=segments`` makes one clip per caption cue, and a video
without captions then fails its item with that reason (recorded, not dropped). No actions:
``action_space="none"`` unless ``ego_motion=true``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Iterator

from converters.clip_decode import probe_video
from converters.clips import ClipOptions, Span, clip_episodes, plan_clips
from wamdata.errors import SourceError
from wamdata.schema import Episode
from wamdata.sources import Converter, SourceItem, register

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
CAPTION_EXTENSIONS = (".srt", ".vtt", ".json")
_TIME = r"(?:(\d+):)?(\d+):(\d+)[.,](\d+)"
_CUE = re.compile(_TIME + r"\s*-->\s*" + _TIME)


def _seconds(h, m, s, frac) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac) / 10 ** len(frac)


def parse_cues(text: str) -> list[tuple[float, float, str]]:
    """(start_s, end_s, text) of every SRT or WebVTT cue; a cue's text is its following lines."""
    out = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = block.strip().split("\n")
        for i, line in enumerate(lines):
            m = _CUE.search(line)
            if m:
                words = " ".join(s.strip() for s in lines[i + 1:] if s.strip())
                out.append((_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]), re.sub(r"<[^>]+>", "", words)))
                break
    return out


def read_captions(item, path: str) -> list[Span]:
    """The spans of one caption file (SourceError naming the file and the entry when malformed)."""
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if not path.lower().endswith(".json"):
        return [Span(s, e, t, {"id": f"{os.path.basename(path)}#{i}", "start_s": s, "end_s": e})
                for i, (s, e, t) in enumerate(parse_cues(text))]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SourceError(item, f"video: {path}: not JSON ({e})") from None
    entries = doc.get("segments") if isinstance(doc, dict) else doc
    if not isinstance(entries, list):
        raise SourceError(item, f"video: {path}: expected a list of {{start, end, text}} or a 'segments' list")
    spans = []
    for i, seg in enumerate(entries):
        try:
            spans.append(Span(float(seg["start"]), float(seg["end"]), str(seg["text"]).strip(),
                              {"id": f"{os.path.basename(path)}#{i}", **seg}))
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError(item, f"video: {path}: segments[{i}]: needs start, end and text ({e!r})") from None
    return spans


@register("video")
class VideoFolder(Converter):
    family = "egocentric_video"

    @dataclass
    class Options(ClipOptions):
        clip: str = "fixed:10"

    def discover(self, root: str) -> Iterator[SourceItem]:
        if os.path.isfile(root):
            paths, root = [root], os.path.dirname(root)
        else:
            paths = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names
                     if n.lower().endswith(VIDEO_EXTENSIONS)]
        for p in sorted(paths):
            rel = os.path.relpath(p, root)
            stem = os.path.splitext(p)[0]
            captions = next((stem + ext for ext in CAPTION_EXTENSIONS if os.path.isfile(stem + ext)), None)
            yield SourceItem(id="video_" + re.sub(r"[^A-Za-z0-9_-]+", "_", os.path.splitext(rel)[0]), path=p,
                             info={"relpath": rel, "captions": captions})

    def read(self, item: SourceItem) -> list[Episode]:
        captions = item.info.get("captions")
        spans = sorted(read_captions(item, captions), key=lambda s: (s.start_s, s.end_s)) if captions else []
        if self.options.clip_mode()[0] == "segments" and not spans:
            raise SourceError(item, "video: clip=segments but the video has no captions (.srt/.vtt/.json of the "
                                    "same name); use clip=fixed:SECONDS to convert it")
        video = probe_video(item, item.path)
        plans = plan_clips(item, spans, video, self.options, "video")
        ids = [f"{item.id}_{n:05d}" for n in range(len(plans))]
        tasks = [[p.own.text] if p.own is not None and p.own.text else [] for p in plans]
        meta = {"video": item.info.get("relpath", item.path), "captions": captions and os.path.basename(captions),
                "provenance": {"path": item.info.get("relpath", item.path)}}
        return clip_episodes(item, "video", video, plans, self.options, ids, tasks, meta)
