"""Clips from long videos, shared by ``epic_kitchens``, ``ego4d`` and ``video``: clip planning, one
streaming decode per video, frame skipping to the output fps, decode-side resizing, per-clip quality.

| quantity                       | where it goes                    | units / conventions |
|--------------------------------|----------------------------------|---------------------|
| output step k of a clip        | timestamp                        | k / fps s from the clip start (exact, never accumulated) |
| native frame shown at step k   | extra.source_frame (int64)       | i_k = round((clip_start + k / fps) * native_rate), clamped to the video |
| its time in the source video   | extra.source_time_s (float64)    | i_k / native_rate, s from the first frame |
| the decoded frame i_k          | camera ``ego``                   | RGB, upright, resized while decoding to ``size=WxH`` |
| annotated spans in the clip    | language                         | s from the clip start, clipped to the clip |
| clip span                      | metadata.clip {start_s, end_s, source_frames} | source seconds / native frames |
| frame measures of the clip     | metadata.quality                 | wamdata.quality on each output frame (see :class:`ClipQuality`) |
| ``ego_motion=true``            | action.ego_motion, extra.ego_motion_valid | see converters/ego_motion.py |

Decoding: every clip of a video reads frames from one :class:`VideoCursor`, a forward-moving PyAV
decoder. The writer encodes the episodes of an item one after another, so clips sorted by start are
served by one pass; a clip that starts before the cursor (overlapping clips) seeks back to the
keyframe before it, and ``decode=seek`` seeks to every clip start instead (benchmarks/video_bench.py
measures both; converters/clip_decode.py). A native frame is identified by its pts, not by counting,
so indices stay exact after a seek. Only frames that an output step shows are converted to RGB.

Quality and ego-motion are measured on the way: the clip's FrameSource fills ``metadata["quality"]``
(and the ego-motion arrays) while the writer pulls its frames, and the writer serialises metadata and
steps after a camera is encoded (wamdata/format/writer.py ``encode_episode``). Nothing is dropped here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from converters.clip_decode import VideoCursor, VideoInfo
from wamdata import quality
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import Camera, Episode, LanguageSegment

MAX_PAD_S = 2.0
CUT_THRESHOLD = 0.5        # Bhattacharyya distance above which consecutive frames are a scene cut
STATIC_CHANGE = 0.004      # mean |grey difference| under which a clip counts as static (frozen)


@dataclass
class ClipOptions:
    """Options every clip source shares (``--option key=value``)."""

    clip: str = "segments"       # segments | fixed:SECONDS
    pad: float = 0.0             # seconds added before and after each segment (clip=segments), <= 2
    fps: float = 10.0            # output frame rate
    size: str | None = None      # WxH: resize while decoding (cheaper than --resolution at 1080p)
    ego_motion: bool = False     # add action.ego_motion (derived pseudo-action)
    ego_focal: float = 0.5       # focal length / image width when the source has no intrinsics
    decode: str = "pass"         # pass (one forward pass per video) | seek (seek to every clip)
    threads: int = 1             # PyAV decoder threads (0 = FFmpeg's choice)

    def __post_init__(self):
        name = type(self).__qualname__.split(".")[0]
        if not self.fps > 0:
            raise ConfigError(f"{name}: option fps must be > 0, got {self.fps}")
        if not 0 <= self.pad <= MAX_PAD_S:
            raise ConfigError(f"{name}: option pad must be in [0, {MAX_PAD_S}] s, got {self.pad}")
        if self.decode not in ("pass", "seek"):
            raise ConfigError(f"{name}: option decode is pass or seek, got {self.decode!r}")
        self.clip_mode()
        self.target_size()

    def clip_mode(self) -> tuple[str, float | None]:
        """("segments", None) or ("fixed", seconds)."""
        if self.clip == "segments":
            return "segments", None
        if self.clip.startswith("fixed:"):
            try:
                seconds = float(self.clip[6:])
            except ValueError:
                seconds = 0.0
            if seconds > 0:
                return "fixed", seconds
        raise ConfigError(f"option clip is segments or fixed:SECONDS (e.g. fixed:10), got {self.clip!r}")

    def target_size(self) -> tuple[int, int] | None:
        if self.size is None:
            return None
        try:
            w, h = (int(v) for v in self.size.lower().split("x"))
        except ValueError:
            w = h = 0
        if w < 2 or h < 2:
            raise ConfigError(f"option size is WxH with both at least 2, got {self.size!r}")
        return w - w % 2, h - h % 2


def video_files(root: str, extensions: tuple[str, ...] = (".mp4",)) -> dict[str, str]:
    """{file stem: path} of the videos under ``root`` (any case of the extensions; the first of a
    stem in sorted walk order wins), how the annotated sources find ``<video_id>.mp4``."""
    files: dict[str, str] = {}
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for n in sorted(names):
            stem, ext = os.path.splitext(n)
            if ext.lower() in extensions:
                files.setdefault(stem, os.path.join(d, n))
    return files


@dataclass(frozen=True)
class Span:
    """An annotated span of the source video (seconds) with its text and source fields."""

    start_s: float
    end_s: float
    text: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ClipPlan:
    start_s: float
    end_s: float
    frames: np.ndarray = field(compare=False)   # native frame index of each output step
    spans: tuple[Span, ...] = ()                 # the spans overlapping the clip
    own: Span | None = None                      # clip=segments: the span the clip was made for


def native_frames(start_s: float, end_s: float, fps: float, video: VideoInfo) -> np.ndarray:
    """Native frame index of each output step of [start_s, end_s]: step k shows the frame nearest
    to start_s + k / fps, each computed directly from k (no accumulated float time)."""
    rate = float(video.rate)
    n = math.floor((end_s - start_s) * fps + 1e-6) + 1
    k = np.arange(max(n, 1), dtype=np.float64)
    idx = np.floor((start_s + k / fps) * rate + 0.5).astype(np.int64)
    return np.clip(idx, 0, video.frames - 1)


def plan_clips(item, spans: list[Span], video: VideoInfo, opts: ClipOptions, source: str,
               context: tuple[Span, ...] = ()) -> list[ClipPlan]:
    """Clips of one video, sorted by start: one per span (clip=segments) or fixed windows; the spans
    and ``context`` spans (language only, e.g. summaries or substeps) overlapping a clip are its
    language. A span starting outside the video, or ending more than one native frame after it,
    fails the item (SourceError naming the span); a span ending within that last frame is clipped."""
    dur = video.duration_s
    slack = 1.0 / float(video.rate)
    language = sorted([*spans, *context], key=lambda s: (s.start_s, s.end_s))
    for sp in language:
        if not (0 <= sp.start_s < dur and sp.start_s <= sp.end_s <= dur + slack):
            raise SourceError(item, f"{source}: span {sp.meta.get('id', sp.text)!r} [{sp.start_s:.3f}, "
                                    f"{sp.end_s:.3f}] s is outside the video ({dur:.3f} s, {video.path})")
    last = (video.frames - 1) / float(video.rate)
    mode, seconds = opts.clip_mode()
    if mode == "segments":
        windows = [(max(0.0, sp.start_s - opts.pad), min(last, sp.end_s + opts.pad), sp) for sp in spans]
    else:
        n = max(1, math.ceil(dur / seconds - 1e-9))
        windows = [(i * seconds, min(last, (i + 1) * seconds - 1.0 / opts.fps), None) for i in range(n)]
    plans = []
    for start, end, own in sorted(windows, key=lambda w: (w[0], w[1])):
        end = max(start, end)
        inside = tuple(sp for sp in language if sp.end_s >= start and sp.start_s <= end + 1.0 / opts.fps)
        plans.append(ClipPlan(start, end, native_frames(start, end, opts.fps, video), inside, own))
    return plans


class ClipQuality:
    """Per-clip signals from wamdata.quality, measured on every output frame: blur (Laplacian variance,
    mean and min), exposure (mean luma, dark and bright fractions), change between consecutive frames
    (mean; ``static`` when under STATIC_CHANGE) and scene cuts (histogram distance > CUT_THRESHOLD,
    with the steps they happen at)."""

    def __init__(self, out: dict):
        self.out = out
        self.blur, self.luma, self.dark, self.bright, self.change, self.cuts = [], [], [], [], [], []
        self._prev = None

    def add(self, frame: np.ndarray) -> None:
        g = quality.grey(frame)
        h = quality.histogram(g)
        e = quality.exposure(g)
        self.blur.append(quality.blur(g))
        self.luma.append(e["luma"])
        self.dark.append(e["dark"])
        self.bright.append(e["bright"])
        if self._prev is not None:
            self.change.append(quality.change(self._prev[0], g))
            if quality.cut(self._prev[1], h) > CUT_THRESHOLD:
                self.cuts.append(len(self.blur) - 1)
        else:
            self.out["dhash"] = f"{quality.dhash(g):016x}"
        self._prev = (g, h)

    def finish(self) -> None:
        change = float(np.mean(self.change)) if self.change else 0.0
        self.out.update(blur_mean=float(np.mean(self.blur)), blur_min=float(np.min(self.blur)),
                        luma_mean=float(np.mean(self.luma)), dark_mean=float(np.mean(self.dark)),
                        bright_mean=float(np.mean(self.bright)), change_mean=change,
                        static=bool(change < STATIC_CHANGE), scene_cuts=len(self.cuts), cut_steps=self.cuts)


@dataclass
class ClipFrames:
    """The FrameSource of one clip: frames from the shared cursor; quality (and ego-motion) measured
    as they pass. Not stream-copyable (frames are skipped), so ``video_path`` is None."""

    cursor: VideoCursor
    indices: np.ndarray
    width: int
    height: int
    quality: dict
    ego: object = None           # converters.ego_motion.EgoMotion, or None
    last: bool = False           # the video's last clip closes the decoder
    video_path: str | None = None
    codec: str | None = None

    @property
    def num_frames(self) -> int:
        return len(self.indices)

    def iter_frames(self) -> Iterator[np.ndarray]:
        q = ClipQuality(self.quality)
        if self.ego is not None:
            self.ego.reset()
        for frame in self.cursor.frames(self.indices):
            q.add(frame)
            if self.ego is not None:
                self.ego.add(frame)
            yield frame
        q.finish()
        if self.last:
            self.cursor.close()


def _relative(sp: Span, plan: ClipPlan) -> LanguageSegment:
    """A span as a language segment of the clip: seconds from the clip start, clipped to the clip."""
    start = min(max(0.0, sp.start_s - plan.start_s), plan.end_s - plan.start_s)
    return LanguageSegment(start, max(start, min(plan.end_s, sp.end_s) - plan.start_s), sp.text)


def clip_episodes(item, source: str, video: VideoInfo, plans: list[ClipPlan], opts: ClipOptions,
                  ids: list[str], tasks: list[list[str]], metadata: dict) -> list[Episode]:
    """One Episode per planned clip, all reading frames from one cursor over ``video``."""
    from converters.ego_motion import EgoMotion, add_ego_motion

    size = opts.target_size() or (video.width - video.width % 2, video.height - video.height % 2)
    cursor = VideoCursor(video.path, size if size != (video.width, video.height) else None, opts.threads,
                         opts.decode)
    episodes = []
    for n, (plan, eid, task) in enumerate(zip(plans, ids, tasks)):
        T = len(plan.frames)
        ep = Episode(episode_id=eid, source=source, family="egocentric_video", embodiment="human",
                     fps=float(opts.fps), steps={"timestamp": np.arange(T, dtype=np.float64) / opts.fps},
                     tasks=task, action_space="none")
        ep.add("extra.source_frame", plan.frames.astype(np.int64), unit="frame",
               description="native frame index in the source video shown at this step")
        ep.add("extra.source_time_s", plan.frames / float(video.rate), unit="s",
               description="time of that frame in the source video")
        ep.language = [_relative(sp, plan) for sp in plan.spans]
        ego = EgoMotion(ep, opts.ego_focal) if opts.ego_motion else None
        if ego is not None:
            add_ego_motion(ep, ego)
        q: dict = {}
        ep.metadata.update(metadata)
        ep.metadata.update(quality=q, clip={"start_s": plan.start_s, "end_s": plan.end_s,
                                            "source_frames": [int(plan.frames[0]), int(plan.frames[-1])],
                                            "native_fps": float(video.rate), "mode": opts.clip_mode()[0]},
                           spans=[sp.meta for sp in plan.spans])
        frames = ClipFrames(cursor, plan.frames, size[0], size[1], q, ego, last=n == len(plans) - 1)
        ep.cameras["ego"] = Camera("ego", frames, fps=float(opts.fps),
                                   metadata={"source_size": [video.width, video.height], "source_codec": video.codec})
        episodes.append(ep)
    return episodes
