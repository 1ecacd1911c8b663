"""Which decoder backend is the default: sequential decode rate and memory growth, PyAV vs decord.

Encodes one clip per codec with wamdata's own encoder, then decodes it whole, repeatedly, through
``wamdata.format.video.get_decoder(name, threads)``. Reports frames/s, the ratio to single-threaded
PyAV in the same run, and RSS growth over the repeats (decord 0.6 is known to leak).

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


if __name__ == "__main__":
    main()
