"""Frame sources a converter hands to the writer: lazy, RGB, upright.

Converters never hold a whole video in memory: they return a FrameSource that decodes on demand when
the writer encodes (or stream-copies) it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from wamdata.format import video


def decode_image(data: bytes) -> np.ndarray:
    """JPEG / PNG bytes -> RGB uint8 (H, W, 3). Raises ValueError for undecodable bytes."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise ValueError(f"undecodable image ({len(data)} bytes)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


@dataclass
class VideoFileFrames:
    """Frames of a video file, decoded lazily with PyAV; ``limit`` trims to the first N frames and
    ``start`` skips the first frames (one episode's span of a file holding several).

    ``codec`` is the source codec, so the writer can stream-copy H.264/HEVC/AV1 instead of encoding;
    it is None where a copy would be wrong: a span that does not start on a keyframe, or a stream with
    reordered frames (B-frames), whose packets the copy cannot restamp as frame indices.
    """

    path: str
    limit: int | None = None
    start: int = 0
    _info: dict = field(default=None, repr=False)
    # whatever must outlive the frames' reading, e.g. the temporary folder a remote file was copied to
    keepalive: object = field(default=None, repr=False, compare=False)

    @property
    def info(self) -> dict:
        if self._info is None:
            self._info = video.probe(self.path)
        return self._info

    @property
    def video_path(self) -> str:
        return self.path

    @property
    def video_start(self) -> int:
        return self.start

    @property
    def codec(self) -> str | None:
        info = self.info
        if info.get("reordered") or (self.start and self.start not in info.get("keyframes", ())):
            return None
        return info["codec"]

    @property
    def num_frames(self) -> int:
        n = max(0, self.info["frames"] - self.start)
        return n if self.limit is None else min(n, self.limit)

    @property
    def height(self) -> int:
        return self.info["height"]

    @property
    def width(self) -> int:
        return self.info["width"]

    def iter_frames(self) -> Iterator[np.ndarray]:
        return video.PyAVDecoder().iter_frames(self.path, self.start, self.start + self.num_frames)


@dataclass
class LazyFrames:
    """Frames produced by ``load(i)`` for i in range(n): encoded images, HDF5 rows, zarr chunks."""

    num_frames: int
    height: int
    width: int
    load: Callable[[int], np.ndarray]
    video_path: str | None = None
    codec: str | None = None

    def iter_frames(self) -> Iterator[np.ndarray]:
        for i in range(self.num_frames):
            yield self.load(i)


def encoded_image_frames(images: Sequence[bytes]) -> LazyFrames:
    """A FrameSource over a list of JPEG/PNG byte strings (RLDS, ALOHA compressed, ...)."""
    first = decode_image(images[0])
    return LazyFrames(len(images), first.shape[0], first.shape[1], lambda i: decode_image(images[i]))
