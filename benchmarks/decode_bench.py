"""Which decoder backend is the default: sequential decode rate and memory growth, PyAV vs decord.

Encodes one clip per codec with wamdata's own encoder, then decodes it whole, repeatedly, through
``wamdata.format.video.get_decoder(name, threads)``. Reports frames/s, the ratio to single-threaded
PyAV in the same run, and RSS growth over the repeats (decord 0.6 is known to leak). Then the
yuv420p -> RGB step alone on the H.264 clip's decoded frames: swscale (PyAV's ``rgb24``) as the
baseline, PyAV's I420 array + OpenCV, and wamdata's ``to_rgb`` (planes copied directly + OpenCV).

    python benchmarks/decode_bench.py [--size 640x480] [--frames 300] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.fixtures.frames import textured_frames  # noqa: E402
from wamdata.format import video  # noqa: E402


def measure(decoder, data: bytes, repeats: int) -> tuple[float, float, int]:
    proc = psutil.Process()
    decoder.decode(data)  # warm-up: codec init, page faults
    rss0 = proc.memory_info().rss
    start = time.perf_counter()
    n = 0
    for _ in range(repeats):
        n += len(decoder.decode(data))
    wall = time.perf_counter() - start
    return n / wall, (proc.memory_info().rss - rss0) / 1e6, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=10)
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    frames = textured_frames(a.frames, h, w, seed=0)
    clips = {codec: video.encode_video(frames, 30.0, codec)[0] for codec in ("h264", "av1")}
    print(f"{a.frames} frames {a.size}, {a.repeats} full decodes each, cpus={os.cpu_count()}")
    print(f"{'codec':<6} {'backend':<18} {'frames/s':>9} {'vs pyav-1':>9} {'RSS growth MB':>14}")
    for codec, data in clips.items():
        base = None
        for name, threads in (("pyav", 1), ("pyav", 0), ("decord", 1), ("decord", 0)):
            dec = video.get_decoder(name, threads=threads)
            if name == "decord" and codec == "av1":
                label = "decord (falls back)"
            else:
                label = f"{name}, threads={threads or 'auto'}"
            fps, growth, _ = measure(dec, data, a.repeats)
            base = base or fps
            print(f"{codec:<6} {label:<18} {fps:>9.0f} {fps / base:>8.2f}x {growth:>14.1f}")
    rgb_conversion(clips["h264"], a.repeats)


def rgb_conversion(data: bytes, repeats: int) -> None:
    import io

    import av
    import cv2

    with av.open(io.BytesIO(data)) as c:
        frames = list(c.decode(video=0))
    paths = {"swscale rgb24": lambda f: f.to_ndarray(format="rgb24"),
             "to_ndarray + OpenCV": lambda f: cv2.cvtColor(f.to_ndarray(), cv2.COLOR_YUV2RGB_I420),
             "wamdata to_rgb": video.to_rgb}
    print(f"{'yuv420p -> RGB':<22} {'us/frame':>9} {'vs swscale':>10}")
    base = None
    for label, fn in paths.items():
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for f in frames:
                fn(f)
            best = min(best, (time.perf_counter() - start) / len(frames))
        base = base or best
        print(f"{label:<22} {best * 1e6:>9.1f} {base / best:>9.2f}x")


if __name__ == "__main__":
    main()
