"""Decoding for the clip engine (converters/clips.py): the header probe and the shared forward cursor.

A native frame is identified by its pts, ``round((pts - start_time) * time_base * rate)``, so its index
stays exact after a seek; only the frames an output step shows are converted to RGB (and resized by
swscale in the same call).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from wamdata.errors import SourceError


@dataclass(frozen=True)
class VideoInfo:
    path: str
    rate: Fraction          # native frames per second
    frames: int             # native frame count
    width: int
    height: int
    codec: str

    @property
    def duration_s(self) -> float:
        return float(self.frames / self.rate)


def probe_video(item, path: str) -> VideoInfo:
    """Rate, frame count and size from the container header (no decoding: an hour-long file opens in
    milliseconds). Raises SourceError naming the file for anything PyAV cannot open."""
    import av

    try:
        with av.open(path) as c:
            s = c.streams.video[0]
            rate = s.average_rate or s.guessed_rate
            frames = int(s.frames or 0)
            if not frames and s.duration is not None:
                frames = int(round(s.duration * s.time_base * rate))
            if not frames and c.duration:
                frames = int(round(Fraction(c.duration, av.time_base) * rate))
            info = VideoInfo(path, Fraction(rate), frames, s.codec_context.width, s.codec_context.height,
                             s.codec_context.name)
    except (av.error.FFmpegError, IndexError, TypeError, ZeroDivisionError) as e:
        raise SourceError(item, f"{path}: not a readable video ({type(e).__name__}: {e})") from None
    if info.frames <= 0 or info.width <= 0:
        raise SourceError(item, f"{path}: video stream has no frames or no size in its header")
    return info


class VideoCursor:
    """One forward-moving PyAV decoder shared by the clips of a video (see the module docstring)."""

    def __init__(self, path: str, size: tuple[int, int] | None = None, threads: int = 1, seek: str = "pass"):
        self.path, self.size, self.threads, self.seek_policy = path, size, threads, seek
        self._container = None
        self._frames = None
        self._next = 0          # native index of the next frame the decoder yields
        self.seeks = 0          # seeks done (for the benchmark)

    def _open(self):
        import av

        self._container = av.open(self.path)
        s = self._container.streams.video[0]
        if self.threads != 1:
            s.thread_type = "AUTO"
            s.codec_context.thread_count = self.threads
        self._stream = s
        self._rate = Fraction(s.average_rate or s.guessed_rate)
        self._start = s.start_time or 0
        self._frames = self._container.decode(s)
        self._next = 0

    def _seek(self, index: int) -> None:
        """Seek to the keyframe at or before native frame ``index``."""
        pts = self._start + math.floor(Fraction(index) / self._rate / self._stream.time_base)
        self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._next = -1          # unknown until the first frame after the seek
        self.seeks += 1

    def frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """RGB frames (resized to ``size``) of the sorted native ``indices``; a repeated index yields
        the same frame again."""
        if self._container is None:
            self._open()
        if len(indices) and (indices[0] < self._next or (self.seek_policy == "seek" and indices[0] > self._next)):
            self._seek(int(indices[0]))
        j, out = 0, None
        tb = self._stream.time_base
        for frame in self._frames:
            i = round((frame.pts - self._start) * tb * self._rate) if frame.pts is not None else self._next
            self._next = i + 1
            if i < indices[j]:
                continue
            out = self._rgb(frame)
            while j < len(indices) and indices[j] <= i:
                yield out
                j += 1
            if j == len(indices):
                return
        raise SourceError(self.path, f"video ended before native frame {int(indices[j])} "
                                     f"(decoded up to {self._next - 1}); its header promised more frames")

    def _rgb(self, frame) -> np.ndarray:
        if self.size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(width=self.size[0], height=self.size[1], format="rgb24", interpolation="AREA")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = self._frames = None
