"""Video in the dataset: encode, stream-copy, probe and decode, through one decoder interface.

Frame ``i`` of a camera belongs to step ``i``: alignment is by integer frame index (pts = i in a
1/fps time base), never by accumulated float time.

Decoding goes through :class:`VideoDecoder`. The default backend is PyAV (single-threaded PyAV beat
decord 0.6 at 480p in our benchmark, decord cannot read AV1 and leaks memory); ``decord`` is the other
backend, and falls back to PyAV for streams it cannot read (AV1, frames under 32 pixels a side).
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Iterable, Iterator, Protocol

import numpy as np

from wamdata.errors import FormatError

CODECS = {"h264": "libx264", "av1": "libsvtav1"}
COPYABLE = ("h264", "hevc", "av1")
# Default quality: about 40 dB PSNR on natural-looking frames at 96p-480p; tiny frames (64x64) with
# fine texture land near 35 dB, so pass a lower --crf for those.
DEFAULT_CRF = {"h264": 18, "av1": 30}
DEFAULT_GOP = 30


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize to (width, height) with area interpolation (the right filter for downscaling)."""
    if size is None or (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    import cv2

    return cv2.resize(frame, tuple(size), interpolation=cv2.INTER_AREA)


def encode_video(
    frames: Iterable[np.ndarray],
    fps: float,
    codec: str = "h264",
    crf: int | None = None,
    size: tuple[int, int] | None = None,
    gop: int = DEFAULT_GOP,
    fast_decode: bool = False,
) -> tuple[bytes, int, tuple[int, int]]:
    """Encode RGB uint8 frames to an MP4 in memory. Returns (bytes, frame count, (width, height)).

    ``fast_decode`` (H.264 only): x264's ``tune=fastdecode`` (no CABAC, no deblocking filter, no
    weighted prediction): for ~25% more bytes at the same crf and PSNR, frames decode to RGB ~1.55x
    faster, and decoding is the loader's main cost (benchmarks/README.md).

    Odd sizes are padded to even by the encoder's requirement (yuv420p), so we round the target size
    down to even and resize once.
    """
    import av

    if codec not in CODECS:
        raise FormatError(f"unknown video codec {codec!r}; known: {', '.join(CODECS)} (or 'copy')")
    if fast_decode and codec != "h264":
        raise FormatError(f"fast_decode applies to h264 only, not {codec!r}")
    buf = io.BytesIO()
    n = 0
    wh = None
    with av.open(buf, mode="w", format="mp4") as out:
        stream = None
        for frame in frames:
            if stream is None:
                w, h = size if size is not None else (frame.shape[1], frame.shape[0])
                wh = (w - w % 2, h - h % 2)
                stream = out.add_stream(CODECS[codec], rate=_rate(fps))
                stream.width, stream.height = wh
                stream.pix_fmt = "yuv420p"
                stream.time_base = Fraction(1, 1) / _rate(fps)
                stream.codec_context.gop_size = gop
                # One encoder thread: x264/SVT output depends on the thread count, and a Ray task owns
                # one CPU anyway; fixing it makes shards byte-identical on any machine.
                stream.codec_context.thread_count = 1
                q = crf if crf is not None else DEFAULT_CRF[codec]
                if codec == "h264":
                    stream.options = {"crf": str(q), "preset": "veryfast", "bf": "0", "threads": "1",
                                      **({"tune": "fastdecode"} if fast_decode else {})}
                else:
                    stream.options = {"crf": str(q), "preset": "10"}
            frame = resize_frame(np.ascontiguousarray(frame), wh)
            # converted to yuv420p here, not by the encoder: PyAV 18's conversion inside encode() gave one
            # of two different frames from run to run (about 1 in 3 encodes in a tight loop), so shards
            # were not reproducible; an explicit reformat gives the same bytes every time
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            vf.pts = n
            out.mux(stream.encode(vf))
            n += 1
        if stream is None:
            raise FormatError("cannot encode a video with no frames")
        out.mux(stream.encode())
    return buf.getvalue(), n, wh


def probe(source) -> dict:
    """Codec, frame count, width, height and fps of the first video stream of a file or bytes.

    The frame count is counted from packets, since container headers are often missing or wrong.
    ``keyframes`` lists the packet indices of keyframes and ``reordered`` says whether any packet's
    pts differs from its dts (B-frames): a stream copy that restamps packets needs neither, and a span
    of the file can be copied only from a keyframe.
    """
    import av

    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with av.open(src) as c:
            s = c.streams.video[0]
            n, keyframes, reordered = 0, [], False
            for p in c.demux(s):
                if p.size > 0:
                    if p.is_keyframe:
                        keyframes.append(n)
                    reordered = reordered or p.pts is None or p.pts != p.dts
                    n += 1
            fps = float(s.average_rate) if s.average_rate else None
            return {"codec": s.codec_context.name, "frames": n, "width": s.codec_context.width,
                    "height": s.codec_context.height, "fps": fps, "keyframes": keyframes,
                    "reordered": reordered}
    except (av.error.FFmpegError, IndexError) as e:
        raise FormatError(f"{source if isinstance(source, str) else '<bytes>'}: not a readable video ({e})") from e


def stream_copy(path: str, fps: float, max_frames: int | None = None, start: int = 0) -> tuple[bytes, int]:
    """Remux the video stream of ``path`` into an MP4 without re-encoding; pts are rewritten to frame
    indices so frame i is step i. ``start`` copies from that packet on (a span of a file holding several
    episodes, as LeRobot v3.0 stores them); it must be a keyframe. Returns (bytes, frames copied)."""
    import av

    buf = io.BytesIO()
    n = 0
    # The muxer may replace the stream's time base once writing starts (e.g. 1/10240 for 10 fps), so
    # packets are stamped in a fixed 1/fps base and the muxer rescales them.
    frame_tb = Fraction(1, 1) / _rate(fps)
    with av.open(path) as src, av.open(buf, mode="w", format="mp4") as out:
        ins = src.streams.video[0]
        outs = out.add_stream_from_template(ins)
        outs.time_base = frame_tb
        skipped = 0
        for packet in src.demux(ins):
            if packet.size == 0:
                continue
            if skipped < start:
                skipped += 1
                continue
            if n == 0 and start and not packet.is_keyframe:
                raise FormatError(f"{path}: frame {start} is not a keyframe; a copy cannot start there")
            if max_frames is not None and n >= max_frames:
                break
            packet.stream = outs
            packet.time_base = frame_tb
            packet.pts = packet.dts = n
            packet.duration = 1
            out.mux(packet)
            n += 1
    return buf.getvalue(), n


class VideoDecoder(Protocol):
    """Decode frames [start, stop) of an encoded video (bytes or path) to uint8 RGB (n, H, W, 3)."""

    name: str

    def decode(self, source, start: int = 0, stop: int | None = None) -> np.ndarray: ...

    def iter_frames(self, source, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]: ...


# FFmpeg colorspace codes that mean BT.601 (unspecified is decoded as BT.601 by swscale too), and the
# colour range code of full-range ("JPEG") video, which OpenCV's conversion does not handle.
_BT601 = (2, 5, 6)
_FULL_RANGE = 2


def i420(frame) -> np.ndarray:
    """The Y, U and V planes of a yuv420p frame (even width and height) as one contiguous
    (height * 3/2, width) I420 array, copied straight from the plane buffers. PyAV's own
    ``to_ndarray()`` gives the same array in ~1.6x the time (22 vs 14 us at 320x180)."""
    w, h = frame.width, frame.height
    cw, ch = w // 2, h // 2
    out = np.empty(h * w + 2 * ch * cw, np.uint8)
    y, u, v = frame.planes
    # plane rows are padded to line_size bytes; keep the first w (or w/2) of each
    out[:h * w].reshape(h, w)[:] = np.frombuffer(y, np.uint8).reshape(h, y.line_size)[:, :w]
    out[h * w:h * w + ch * cw].reshape(ch, cw)[:] = np.frombuffer(u, np.uint8).reshape(ch, u.line_size)[:, :cw]
    out[h * w + ch * cw:].reshape(ch, cw)[:] = np.frombuffer(v, np.uint8).reshape(ch, v.line_size)[:, :cw]
    return out.reshape(h * 3 // 2, w)


def to_rgb(frame) -> np.ndarray:
    """A decoded frame as RGB uint8. Limited-range BT.601 yuv420p (what our encoder writes) goes
    through :func:`i420` and OpenCV's SIMD conversion: as fast as swscale at 320x180 (45-47 us a frame
    against 46-52; through PyAV's ``to_ndarray()`` it took 54-58, benchmarks/decode_bench.py);
    anything else goes through swscale."""
    if (frame.format.name == "yuv420p" and frame.colorspace in _BT601 and frame.color_range != _FULL_RANGE
            and frame.width % 2 == 0 and frame.height % 2 == 0):
        import cv2

        return cv2.cvtColor(i420(frame), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


class PyAVDecoder:
    """Sequential decode with PyAV; frames before ``start`` are decoded and dropped (no seek), which
    for our short GOPs is cheaper than a seek per call and exact by construction."""

    name = "pyav"

    def __init__(self, threads: int = 1):
        self.threads = threads

    def iter_frames(self, source, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        import av

        src = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
        with av.open(src) as c:
            s = c.streams.video[0]
            if self.threads != 1:  # 0 lets FFmpeg pick one thread per core
                s.thread_type = "AUTO"
                s.codec_context.thread_count = self.threads
            for i, frame in enumerate(c.decode(s)):
                if stop is not None and i >= stop:
                    break
                if i >= start:
                    yield to_rgb(frame)

    def decode(self, source, start: int = 0, stop: int | None = None) -> np.ndarray:
        return _stack(list(self.iter_frames(source, start, stop)), source)


class DecordDecoder:
    """decord backend (batch random access). decord 0.6 cannot read AV1 and fails on frames under 32
    pixels a side: those fall back to PyAV."""

    name = "decord"

    def __init__(self, threads: int = 1):
        from wamdata.native_libs import load_datasketches

        load_datasketches()   # before decord's global symbols can shadow libstdc++'s (see there)
        self.threads = threads
        self._fallback = PyAVDecoder(threads)

    def decode(self, source, start: int = 0, stop: int | None = None) -> np.ndarray:
        import decord

        src = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
        try:
            vr = decord.VideoReader(src, num_threads=self.threads)
            stop = len(vr) if stop is None else min(stop, len(vr))
            if stop <= start:
                return _stack([], source)
            return vr.get_batch(list(range(start, stop))).asnumpy()
        except decord.DECORDError:   # AV1; frames under 32 px a side (its converted copy has padded rows)
            return self._fallback.decode(source, start, stop)

    def iter_frames(self, source, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        yield from self.decode(source, start, stop)


DECODERS = {"pyav": PyAVDecoder, "decord": DecordDecoder}
DEFAULT_DECODER = "pyav"


def get_decoder(name: str = DEFAULT_DECODER, threads: int = 1) -> VideoDecoder:
    if name not in DECODERS:
        raise FormatError(f"unknown video decoder {name!r}; known: {', '.join(DECODERS)}")
    return DECODERS[name](threads=threads)


def _stack(frames: list[np.ndarray], source) -> np.ndarray:
    """Frames as (n, H, W, 3); an empty range still has the video's frame size."""
    if not frames:
        info = probe(source)
        return np.zeros((0, info["height"], info["width"], 3), np.uint8)
    return np.stack(frames)
