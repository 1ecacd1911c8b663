"""Egocentric clip making: input-video seconds processed per wall second and per core, decode paths
compared, peak RSS on a long 1080p60 input (generated here in a temporary folder, never in the repo).

    .venv/bin/python benchmarks/video_bench.py --seconds 120           # figures in benchmarks/README.md

Each case runs in a fresh subprocess (its own peak RSS), converting one H.264 1920x1080 59.94 fps
video with EPIC-like captions (a 3 s segment every 4 s, pad 1 s, so padded clips overlap) through
``--source video``:

- ``read``: the converter's clips decoded to 10 fps frames (the writer's input), no encoding;
- ``convert``: the whole job in this process (read + encode + shard write, SerialExecutor).

Paths compared: ``decode=pass`` (one forward pass, seek back only for overlaps) vs ``decode=seek``
(seek to every clip), resize while decoding (``size=320x180``, swscale) vs full-size frames resized
by the writer (``--resolution``), PyAV threads 1 vs 2.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

import numpy as np

NTSC = Fraction(60000, 1001)


def make_input(path: str, seconds: float, tile: float | None = None) -> None:
    """A 1080p59.94 H.264 file with texture and motion (x264 ultrafast, GOP 60 as cameras write).

    With ``tile``, only ``tile`` seconds are encoded and their packets repeated (timestamps shifted) up
    to ``seconds``: an hour-long input in minutes instead of hours, decoded like any other file."""
    if tile and tile < seconds:
        tile_path = path + ".tile.mp4"
        _encode(tile_path, tile)
        _repeat(tile_path, path, seconds)
        os.remove(tile_path)
    else:
        _encode(path, seconds)
    _write_captions(path, seconds)


def _encode(path: str, seconds: float) -> None:
    import av

    h, w = 1080, 1920
    y, x = np.mgrid[0:h, 0:w]
    base = (128 + 60 * np.sin(x / 23.0) * np.cos(y / 17.0)).astype(np.uint8)
    n = int(seconds * NTSC)
    with av.open(path, "w") as out:
        s = out.add_stream("libx264", rate=NTSC)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = 60
        s.options = {"preset": "ultrafast", "crf": "23"}
        for i in range(n):
            g = np.roll(base, 4 * i, axis=1)
            g[40:140, 40:40 + (i % 1000)] = 255
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.stack([g, g, 255 - g], -1)), format="rgb24")
            vf.pts = i
            out.mux(s.encode(vf))
        out.mux(s.encode())


def _repeat(tile_path: str, path: str, seconds: float) -> None:
    """Copy the tile's packets (no re-encode) until ``seconds`` of video, each copy shifted in time."""
    import av

    with av.open(tile_path) as src:
        packets = [p for p in src.demux(src.streams.video[0]) if p.size]
        tile_pts = max(p.pts + p.duration for p in packets)
        tile_s = float(tile_pts * src.streams.video[0].time_base)
        with av.open(path, "w") as out:
            dst = out.add_stream_from_template(src.streams.video[0])
            for k in range(int(np.ceil(seconds / tile_s))):
                for pkt in packets:
                    pkt.stream = dst
                    shift = k * tile_pts
                    pkt.pts, pkt.dts = pkt.pts + shift, pkt.dts + shift
                    out.mux(pkt)
                    pkt.pts, pkt.dts = pkt.pts - shift, pkt.dts - shift


def _write_captions(path: str, seconds: float) -> None:
    cues = []
    for k, t in enumerate(np.arange(0.5, seconds - 4, 4.0)):
        a, b = t, t + 3
        cues.append(f"{k + 1}\n{_ts(a)} --> {_ts(b)}\nsegment {k}\n")
    with open(os.path.splitext(path)[0] + ".srt", "w") as f:
        f.write("\n".join(cues))


def _ts(t: float) -> str:
    return f"{int(t // 3600):02d}:{int(t % 3600 // 60):02d}:{int(t % 60):02d},{int(round(t % 1 * 1000)):03d}"


def run_case(args) -> dict:
    from converters.video_folder import VideoFolder

    opts = {"clip": "segments", "pad": "1", "fps": "10", "decode": args.decode, "threads": str(args.threads)}
    if args.size:
        opts["size"] = args.size
    t0, c0 = time.perf_counter(), time.process_time()
    if args.mode == "read":
        conv = VideoFolder(**opts)
        item = next(conv.discover(args.input))
        frames = seeks = 0
        eps = conv.read(item)
        cursor = eps[0].cameras["ego"].frames.cursor
        for ep in eps:
            for _ in ep.cameras["ego"].frames.iter_frames():
                frames += 1
        seeks = cursor.seeks
        extra = {"clips": len(eps), "frames": frames, "seeks": seeks}
    else:
        from wamdata.convert import ConvertConfig, convert

        res = tuple(int(v) for v in args.resolution.split("x")) if args.resolution else None
        with tempfile.TemporaryDirectory() as out:
            rep = convert(ConvertConfig(source="video", input=args.input, output=os.path.join(out, "ds"),
                                        options=opts, resolution=res, quiet=True))
            extra = {"clips": rep.converted, "frames": rep.steps, "mb": round(rep.bytes / 1e6, 1)}
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "video_s_per_wall_s": round(args.seconds / wall, 2),
            "video_s_per_core_s": round(args.seconds / cpu, 2), "peak_rss_mb": round(rss), **extra}


CASES = [  # (label, mode, decode, threads, size, resolution)
    ("read pass, resize in decode, 1 thread", "read", "pass", 1, "320x180", None),
    ("read seek, resize in decode, 1 thread", "read", "seek", 1, "320x180", None),
    ("read pass, resize in decode, 2 threads", "read", "pass", 2, "320x180", None),
    ("read pass, full-size frames, 1 thread", "read", "pass", 1, None, None),
    ("convert pass, resize in decode", "convert", "pass", 1, "320x180", None),
    ("convert pass, writer resizes (--resolution)", "convert", "pass", 1, None, "320x180"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--tile", type=float, help="encode this many seconds and repeat them (long inputs)")
    p.add_argument("--cases", help="comma-separated case numbers to run (default: all)")
    p.add_argument("--case", type=int, help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--mode"), p.add_argument("--decode"), p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size"), p.add_argument("--resolution")
    args = p.parse_args()
    if args.input:
        print(json.dumps(run_case(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "long_1080p60.mp4")
        t0 = time.perf_counter()
        make_input(path, args.seconds, args.tile)
        print(f"input: {args.seconds:.0f} s 1920x1080 59.94 fps H.264, {os.path.getsize(path) / 1e6:.0f} MB "
              f"(generated in {time.perf_counter() - t0:.0f} s); {os.cpu_count()} cores")
        chosen = [int(c) for c in args.cases.split(",")] if args.cases else range(len(CASES))
        for label, mode, decode, threads, size, res in (CASES[c] for c in chosen):
            cmd = [sys.executable, __file__, "--input", path, "--seconds", str(args.seconds), "--mode", mode,
                   "--decode", decode, "--threads", str(threads)]
            cmd += ["--size", size] if size else []
            cmd += ["--resolution", res] if res else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            print(f"{label:48s} {out}")


if __name__ == "__main__":
    main()
