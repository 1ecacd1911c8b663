"""Reading ReplayBuffer zarr stores with wamdata vs loading them whole: steps/s, frames/s, peak RSS.

Each reader runs in its own subprocess (peak RSS = that process's VmHWM) and reads every episode of
the store: all its arrays and every camera frame as RGB uint8.

    wamdata        converters.zarr_replay: discover (meta/episode_ends only), then per episode the
                   arrays sliced start:end and frames read lazily chunk by chunk
    replaybuffer   diffusion policy's way (ReplayBuffer.copy_from_store into a MemoryStore, as its
                   datasets do on start-up): every data/ array decoded into memory, then episodes
                   sliced from it

Data: the real Push-T store (default; 31 MB zip, 2.8 GB decoded) or ``--umi N`` a UMI-layout
``dataset.zarr.zip`` of N episodes x ``--steps`` steps, 2 grippers and 2 JPEG-XL cameras at 224x224
(UMI's size), written with tests/fixtures/zarr_replay.py.

    python benchmarks/zarr_bench.py
    python benchmarks/zarr_bench.py --umi 10 --steps 120
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUSHT = os.path.join(os.path.dirname(ROOT), "shared", "data", "diffusion_policy", "pusht_cchi_v7_replay.zarr.zip")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_wamdata(path: str, preset: str) -> dict:
    from converters.zarr_replay import ZarrReplay

    conv = ZarrReplay(preset=preset)
    episodes = steps = frames = 0
    t0 = time.perf_counter()
    for item in conv.discover(path):
        ep = conv.read(item)
        episodes, steps = episodes + 1, steps + ep.num_steps
        frames += sum(1 for cam in ep.cameras.values() for _ in cam.frames.iter_frames())
    return {"episodes": episodes, "steps": steps, "frames": frames, "s": time.perf_counter() - t0}


def run_replaybuffer(path: str, preset: str) -> dict:
    import numpy as np
    import zarr

    from converters.zarr_store import register_image_codecs, to_uint8

    register_image_codecs()
    t0 = time.perf_counter()
    g = zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r", zarr_format=2)
    data = {k: a[:] for k, a in g["data"].arrays()}          # the whole store in memory
    ends = g["meta/episode_ends"][:]
    images = [k for k, v in data.items() if v.ndim == 4 and v.shape[-1] == 3]
    episodes = steps = frames = 0
    for s, e in zip(np.concatenate([[0], ends[:-1]]), ends):
        episodes += 1
        steps += int(e - s)
        for k in images:
            frames += len(to_uint8(data[k][s:e]))
    return {"episodes": episodes, "steps": steps, "frames": frames, "s": time.perf_counter() - t0}


READERS = {"wamdata": run_wamdata, "replaybuffer": run_replaybuffer}


def _sizes(path: str) -> dict:
    """Decoded bytes of the whole store and of its largest episode."""
    import numpy as np
    import zarr

    from converters.zarr_store import register_image_codecs

    register_image_codecs()
    g = zarr.open_group(zarr.storage.ZipStore(path, mode="r"), mode="r", zarr_format=2)
    ends = g["meta/episode_ends"][:]
    per_step = sum(int(np.prod(a.shape[1:])) * a.dtype.itemsize for _, a in g["data"].arrays())
    longest = int(np.max(np.diff(np.concatenate([[0], ends]))))
    return {"store_mb": per_step * int(ends[-1]) / 2**20, "episode_mb": per_step * longest / 2**20,
            "zip_mb": os.path.getsize(path) / 2**20, "steps": int(ends[-1]), "episodes": len(ends)}


def _measure(reader: str, path: str, preset: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", reader, "--data", path, "--preset", preset]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    if out.returncode != 0:
        raise RuntimeError(f"{reader}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=PUSHT)
    p.add_argument("--preset", default="pusht")
    p.add_argument("--umi", type=int, default=None, help="write a UMI-layout store of N episodes instead")
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--child", choices=READERS)
    args = p.parse_args()
    if args.child:
        res = READERS[args.child](args.data, args.preset)
        res["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(res))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path, preset = args.data, args.preset
        if args.umi:
            sys.path.insert(0, ROOT)
            from tests.fixtures.zarr_replay import write_umi

            path = write_umi(tmp, lengths=[args.steps] * args.umi, h=224, w=224)["path"]
            preset = "umi"
        sizes = _sizes(path)
        print(f"store {os.path.basename(path)}: {sizes['episodes']} episodes, {sizes['steps']} steps, "
              f"{sizes['zip_mb']:.0f} MB on disk, {sizes['store_mb']:.0f} MB decoded, "
              f"largest episode {sizes['episode_mb']:.1f} MB decoded")
        print("| reader | steps/s | frames/s | peak RSS MB | s |")
        print("|---|---:|---:|---:|---:|")
        for reader in READERS:
            runs = sorted((_measure(reader, path, preset) for _ in range(args.runs)), key=lambda r: r["s"])
            r = runs[len(runs) // 2]
            print(f"| {reader} | {r['steps'] / r['s']:,.0f} | {r['frames'] / r['s']:,.0f} | "
                  f"{r['peak_rss_mb']:,.0f} | {r['s']:.1f} |")


if __name__ == "__main__":
    main()
