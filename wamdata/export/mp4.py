"""Concatenate whole MP4 clips into one MP4 by packet copy (no re-encode).

LeRobot v3.0 stores many episodes of one camera in one video file and locates an episode by its start
time in that file. We concatenate episode clips packet by packet and rewrite every timestamp to a
running frame index (pts = frame index in a 1/fps time base), so episode ``e`` starts exactly at frame
``offset_e`` and at ``offset_e / fps`` seconds: no float time accumulates, long files do not drift.

Packet copy is only valid when every clip of a file carries the same stream parameters (codec, size,
pixel format and the decoder configuration record, i.e. H.264 SPS/PPS or the AV1 sequence header) and
has no reordered frames (pts == dts, as wamdata's encoder writes with ``bf=0``). :func:`clip_signature`
says what a clip is; the exporter starts a new file when the signature changes and re-encodes clips
that cannot be copied.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from wamdata.errors import FormatError


@dataclass(frozen=True)
class ClipSignature:
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    extradata: bytes

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass
class Clip:
    """One demuxed clip: its signature, packets in decode order and frame count."""

    signature: ClipSignature
    packets: list
    num_frames: int
    reordered: bool  # B-frames (pts != dts): not safe to concatenate by copy
    _container: object = None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def open_clip(data: bytes, where: str) -> Clip:
    """Demux an MP4 held in memory (packets keep a reference to the open container until closed)."""
    import av

    try:
        container = av.open(io.BytesIO(data))
        stream = container.streams.video[0]
    except (av.error.FFmpegError, IndexError) as e:
        raise FormatError(f"{where}: not a readable video ({e})") from e
    cc = stream.codec_context
    sig = ClipSignature(cc.name, cc.width, cc.height, cc.pix_fmt, bytes(cc.extradata or b""))
    packets = [p for p in container.demux(stream) if p.size > 0]
    reordered = any(p.pts is None or p.dts is None or p.pts != p.dts for p in packets)
    return Clip(sig, packets, len(packets), reordered, container)


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


class Mp4Concat:
    """Writes one MP4 file from clips of equal signature, appended whole and in order.

    ``append`` returns the frame offset at which the clip starts in the file.
    """

    def __init__(self, path: Path, fps: float):
        self.path = Path(path)
        self.fps = fps
        self.signature: ClipSignature | None = None
        self.num_frames = 0
        self.num_bytes = 0
        self._out = None
        self._stream = None
        self._tb = 1 / _rate(fps)

    def accepts(self, clip: Clip) -> bool:
        return self.signature is None or clip.signature == self.signature

    def append(self, clip: Clip) -> int:
        import av

        if clip.reordered:
            raise FormatError(f"{self.path}: cannot concatenate a clip with reordered frames by copy")
        if not self.accepts(clip):
            raise FormatError(f"{self.path}: clip {clip.signature} differs from the file's {self.signature}")
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(str(self.path), mode="w", format="mp4")
            self._stream = self._out.add_stream_from_template(clip.packets[0].stream)
            self._stream.time_base = self._tb
            self.signature = clip.signature
        start = self.num_frames
        # Without reordered frames, decode order is presentation order: packet i of the clip is frame
        # i of the episode, whatever timestamps the clip carried.
        for i, p in enumerate(clip.packets):
            p.stream = self._stream
            # Our fixed 1/fps time base: the muxer rescales to its own timescale (the stream's
            # time_base changes when the header is written, so it must not be read back here).
            p.time_base = self._tb
            p.pts = p.dts = start + i
            p.duration = 1
            self.num_bytes += p.size
            self._out.mux(p)
        self.num_frames += clip.num_frames
        return start

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
