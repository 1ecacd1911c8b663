"""Loader throughput and memory: wamdata's WamStream against per-sample seek-and-decode.

Builds one dataset (default 200 episodes x 300 steps, 2 cameras 180x320, H.264) and measures, each in a
fresh child process (so peak RSS is that method's own), samples/s and peak RSS of:

- ``wamdata``: WamStream -> stream.dataloader(batch_size=32), 0 and 2 DataLoader workers;
- ``seek``: a map-style dataset equivalent to LeRobotDataset's video path: per sample and per camera,
  open the episode's MP4, PyAV-seek to the keyframe before the first requested timestamp and decode up
  to the last one (history + future frames), random sample order, 0 and 2 workers;
- ``lerobot``: lerobot's own LeRobotDataset on the same frames (exported with
  ``wamdata.export.lerobot.export_lerobot``), when ``lerobot`` is importable;
- ``to-device`` (with ``--device cuda``, or automatically when CUDA is available): the wamdata loader
  with ``pin_memory=True``, every tensor of every batch copied to the device with
  ``non_blocking=True``, synchronised per batch: batches (and samples) delivered to the GPU per second;
- ``ceiling``: the raw sequential decode rate of the same videos to RGB with the loader's decoder
  (``wamdata.format.video`` PyAV), as samples/s = frames/s divided by the number of cameras (a sample
  needs one new frame per camera), in 1 and 2 processes.

Rates are given two ways: ``overall`` (from creating the iterator to the last sample, including the
time to fill the shuffle buffer) and ``steady`` (after the first batch), with the time to the first
batch. The ratios in the summary use steady rates for the loaders (the regime of a training run).

The machine's speed may drift by 20% within minutes on a shared VM, so the ceiling and the wamdata
loader are measured ``--repeat`` times alternately (ceiling, loader, ceiling, loader, ...) and the
summary gives the median of each pair's ratio next to the median rates.

Every sample: 2 history frames + 3 future frames (t+4, t+8, t+16) per camera, state, 16 actions.
Each consumer reads every page of every batch it gets (one element per 4 KiB), as a trainer does.

    python benchmarks/loader_bench.py --small        # 24 episodes x 150 steps, quick
    python benchmarks/loader_bench.py                # the full run (builds ~60k frames per camera)
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

import numpy as np

HISTORY, FUTURE, HORIZON, BATCH = 2, (4, 8, 16), 16, 32


# ---- dataset ---------------------------------------------------------------------------------------

def _texture(rng, h, w):
    import cv2

    small = rng.integers(0, 255, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    return cv2.resize(small, (w * 2, h * 2), interpolation=cv2.INTER_CUBIC)


def _episode(e: int, steps: int, size, cams):
    from wamdata.schema import ArrayFrames, Camera, Episode

    rng = np.random.default_rng(e)
    h, w = size
    ts = np.arange(steps, dtype=np.float64) / 15.0
    ep = Episode(f"bench/{e:05d}", "bench", "teleop", "franka", 15.0, steps={"timestamp": ts},
                 tasks=["pick"], action_space="eef_abs")
    pos = np.cumsum(rng.normal(0, 0.01, (steps, 3)), axis=0)
    ep.add("state.eef_pos", pos)
    ep.add("state.gripper", (np.arange(steps) // 50 % 2).astype(np.float64)[:, None])
    ep.add("action.eef_pos", pos + 0.01)
    ep.add("action.gripper", (np.arange(steps) // 50 % 2).astype(np.float64)[:, None])
    for c in range(cams):
        tex = _texture(rng, h, w)
        frames = np.stack([tex[(t * 2) % h: (t * 2) % h + h, (t * 3) % w: (t * 3) % w + w] for t in range(steps)])
        ep.cameras[f"cam{c}"] = Camera(f"cam{c}", ArrayFrames(frames))
    return ep


def build(path, episodes, steps, size, cams, fast_decode=False):
    from wamdata.format.writer import write_dataset
    from wamdata.stats import compute_stats

    t0 = time.perf_counter()
    write_dataset(path, (_episode(e, steps, size, cams) for e in range(episodes)), shard_size_mb=32,
                  fast_decode=fast_decode)
    compute_stats(path)
    return time.perf_counter() - t0


def extract_mp4s(path, out):
    """The MP4s as files (LeRobot reads video files from disk), plus state/actions arrays."""
    import wamdata

    ds = wamdata.open_dataset(path)
    os.makedirs(out, exist_ok=True)
    index = []
    for shard in ds.shards:
        for ep in ds.iter_shard(shard):
            files = {}
            for cam in ep.cameras:
                f = os.path.join(out, f"{ep.key}.{cam}.mp4")
                with open(f, "wb") as fh:
                    fh.write(ep.video_bytes(cam))
                files[cam] = f
            np.save(os.path.join(out, f"{ep.key}.state.npy"),
                    np.concatenate([ep.array("state.eef_pos"), ep.array("state.gripper")], 1).astype(np.float32))
            np.save(os.path.join(out, f"{ep.key}.action.npy"),
                    np.concatenate([ep.array("action.eef_pos"), ep.array("action.gripper")], 1).astype(np.float32))
            index.append({"key": ep.key, "steps": ep.num_steps, "fps": ep.meta["fps"], "videos": files})
    with open(os.path.join(out, "index.json"), "w") as fh:
        json.dump(index, fh)


# ---- methods (each runs in its own process) ----------------------------------------------------------

def _wamdata_loader(a, **kwargs):
    from wamdata.loader import WamStream

    stream = WamStream(a.dataset, cameras=a.cameras, history=HISTORY, future=FUTURE, action_horizon=HORIZON,
                       image_size=tuple(a.size), seed=0, shuffle_buffer=a.buffer, normalize="stats",
                       read_ahead=a.read_ahead == "on")
    return stream.dataloader(batch_size=BATCH, num_workers=a.workers, **kwargs)


def run_wamdata(a):
    return _consume(_wamdata_loader(a), a.samples, warmup=a.buffer * max(1, a.workers))


def run_to_device(a):
    """Batches delivered to the accelerator: pinned host batches, asynchronous copies, a sync per
    batch so the rate counts completed transfers."""
    import torch

    device = torch.device(a.device)
    dl = _wamdata_loader(a, pin_memory=device.type == "cuda")

    def to_device(x):
        if isinstance(x, dict):
            return {k: to_device(v) for k, v in x.items()}
        return x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x

    def on_device():
        for batch in dl:
            out = to_device(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            yield out

    return _consume(on_device(), a.samples, warmup=a.buffer * max(1, a.workers))


class SeekDataset:
    """LeRobotDataset's video path, per sample: for each camera, open the file, seek to the keyframe at
    or before the first requested timestamp, decode forward to the last, keep the requested frames."""

    def __init__(self, mp4_dir, cams):
        with open(os.path.join(mp4_dir, "index.json")) as fh:
            self.index = json.load(fh)
        self.dir, self.cams = mp4_dir, cams
        self.items = [(i, t) for i, e in enumerate(self.index) for t in range(e["steps"])]
        self._arrays = {}

    def __len__(self):
        return len(self.items)

    def _decode(self, path, fps, wanted):
        import av

        with av.open(path) as c:
            s = c.streams.video[0]
            tb = s.time_base
            first = min(wanted) / fps
            c.seek(int(first / tb), stream=s, backward=True, any_frame=False)
            out, want = {}, set(wanted)
            for frame in c.decode(s):
                i = int(round(float(frame.pts * tb) * fps))
                if i in want:
                    out[i] = frame.to_ndarray(format="rgb24")
                if i >= max(wanted):
                    break
        return np.stack([out[i] for i in wanted])

    def __getitem__(self, k):
        import torch

        i, t = self.items[k]
        e = self.index[i]
        T = e["steps"]
        hist = [max(t - h, 0) for h in range(HISTORY - 1, -1, -1)]
        fut = [min(t + f, T - 1) for f in FUTURE]
        sample = {}
        for cam in self.cams:
            frames = self._decode(e["videos"][cam], e["fps"], sorted(set(hist + fut)))
            pick = {v: j for j, v in enumerate(sorted(set(hist + fut)))}
            sample[f"frames.{cam}"] = torch.from_numpy(frames[[pick[h] for h in hist]])
            sample[f"future.{cam}"] = torch.from_numpy(frames[[pick[f] for f in fut]])
        if i not in self._arrays:
            self._arrays[i] = (np.load(os.path.join(self.dir, f"{e['key']}.state.npy")),
                               np.load(os.path.join(self.dir, f"{e['key']}.action.npy")))
        st, ac = self._arrays[i]
        sample["state"] = torch.from_numpy(st[hist])
        sample["actions"] = torch.from_numpy(ac[np.clip(np.arange(t, t + HORIZON), 0, T - 1)])
        return sample


def run_seek(a):
    import torch

    ds = SeekDataset(a.mp4_dir, a.cameras)
    g = torch.Generator().manual_seed(0)
    dl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, generator=g, num_workers=a.workers)
    return _consume(dl, a.samples)


def run_lerobot(a):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401  (checked by the caller)
    import torch

    from wamdata.export.lerobot import export_lerobot

    out = os.path.join(a.work, "lerobot")
    if not os.path.exists(out):
        export_lerobot(a.dataset, out)
    fps = 15.0
    keys = [f"observation.images.{c}" for c in a.cameras]
    deltas = {k: [(-h) / fps for h in range(HISTORY - 1, -1, -1)] + [f / fps for f in FUTURE] for k in keys}
    deltas["action"] = [k / fps for k in range(HORIZON)]
    ds = LeRobotDataset("wamdata/export", root=out, delta_timestamps=deltas)
    g = torch.Generator().manual_seed(0)
    dl = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, generator=g, num_workers=a.workers)
    return _consume(dl, a.samples)


def run_ceiling(a):
    """Sequential decode of whole videos, ``a.workers or 1`` processes on disjoint episodes."""
    from concurrent.futures import ProcessPoolExecutor

    with open(os.path.join(a.mp4_dir, "index.json")) as fh:
        index = json.load(fh)
    files = [e["videos"][c] for e in index for c in a.cameras]
    budget = a.samples * len(a.cameras)   # frames to decode
    procs = max(1, a.workers)
    chunks = [files[i::procs] for i in range(procs)]
    t0 = time.perf_counter()
    if procs == 1:
        frames = _decode_files(chunks[0], budget)
    else:
        with ProcessPoolExecutor(procs) as ex:
            frames = sum(ex.map(_decode_files, chunks, [budget // procs] * procs))
    dt = time.perf_counter() - t0
    return {"samples": frames / len(a.cameras), "seconds": dt, "first_s": None}


def _decode_files(files, budget):
    from wamdata.format.video import get_decoder

    dec = get_decoder("pyav")
    n = 0
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        for _ in dec.iter_frames(data):
            n += 1
        if n >= budget:
            break
    return n


def _touch(x):
    """Read one element per 4 KiB page of every tensor, as a trainer reading its batch (into a model,
    onto a device) does: pages not yet mapped in this process are paid for here, not hidden."""
    if isinstance(x, dict):
        for v in x.values():
            _touch(v)
    elif hasattr(x, "element_size") and x.numel() and x.device.type == "cpu":   # device copies were read already
        x.reshape(-1)[:: max(1, 4096 // x.element_size())].sum()


def _consume(dl, limit, warmup: int = 1):
    """Samples/s overall, and "steady": from the first batch boundary at or after ``warmup`` samples.
    A WamStream fills its shuffle buffer (per consumer) before the first batch, and those windows,
    decoded before the clock's steady phase, are handed out first at no decoding cost: counting them
    would overstate the rate a long run sustains (by ~8% at 12,000 samples with 2 workers)."""
    t0 = time.perf_counter()
    n, first, at, n_at = 0, None, None, 0
    for batch in dl:
        _touch(batch)
        n += len(batch["state"] if "state" in batch else batch["index"])  # lerobot batches have no "state"
        if first is None:
            first = time.perf_counter() - t0
        if at is None and n >= warmup:
            at, n_at = time.perf_counter() - t0, n
        if n >= limit:
            break
    dt = time.perf_counter() - t0
    # no batch after the warm-up: no steady phase to measure, so the overall rate stands in for it
    steady = (n - n_at) / max(dt - at, 1e-9) if at is not None and n > n_at else n / dt
    return {"samples": n, "seconds": dt, "first_s": first, "steady": steady}


def child(a):
    fn = {"wamdata": run_wamdata, "to-device": run_to_device, "seek": run_seek, "lerobot": run_lerobot,
          "ceiling": run_ceiling}[a.method]
    res = fn(a)
    res["rss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


def spawn(a, method, workers, samples):
    cmd = [sys.executable, __file__, "--child", method, "--workers", str(workers), "--samples", str(samples),
           "--dataset", a.dataset, "--mp4-dir", a.mp4_dir, "--work", a.work, "--buffer", str(a.buffer),
           "--device", a.device or "cpu", "--read-ahead", a.read_ahead,
           "--size", *map(str, a.size), "--cameras", *a.cameras]
    out = subprocess.run(cmd, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            r["rate"] = r["samples"] / r["seconds"]
            r.setdefault("steady", r["rate"])
            # peak RSS: the process itself plus (for workers) the largest child times the worker count
            r["rss_mb"] = r["rss_self_mb"] + r["rss_children_mb"] * max(1, workers if workers else 0)
            return r
    raise RuntimeError(f"{method} failed:\n{out.stderr[-3000:]}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="24 episodes x 150 steps, shuffle_buffer 512, fewer samples")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--size", type=int, nargs=2, default=[180, 320], metavar=("H", "W"))
    p.add_argument("--cameras", nargs="+", default=["cam0", "cam1"])
    p.add_argument("--buffer", type=int, default=2048, help="WamStream shuffle_buffer")
    p.add_argument("--samples", type=int, default=None, help="samples per measurement")
    p.add_argument("--seek-samples", type=int, default=None)
    p.add_argument("--repeat", type=int, default=3, help="alternate ceiling / wamdata runs per worker count")
    p.add_argument("--work", default=None, help="folder for the dataset (kept between runs)")
    p.add_argument("--fast-decode", action="store_true", help="encode with x264 tune=fastdecode "
                   "(wamdata convert --fast-decode); use another --work than a default-encoded run")
    p.add_argument("--read-ahead", choices=["on", "off"], default="on",
                   help="WamStream read_ahead: a thread decoding the next episode in each consumer (default on)")
    p.add_argument("--device", default=None,
                   help="also measure batches delivered to this device (default: cuda when available)")
    p.add_argument("--child", dest="method", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    p.add_argument("--mp4-dir", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.method:
        return child(a)
    if a.small:
        a.episodes, a.steps = 24, 150
        a.buffer = min(a.buffer, 512)
    a.samples = a.samples or (3000 if a.small else 12000)
    seek_samples = a.seek_samples or (256 if a.small else 640)
    a.work = a.work or os.path.join(tempfile.gettempdir(), f"wam_loader_bench_{a.episodes}x{a.steps}"
                                                           f"{'_fastdecode' if a.fast_decode else ''}")
    a.dataset = os.path.join(a.work, "dataset")
    a.mp4_dir = os.path.join(a.work, "mp4")
    if not os.path.exists(os.path.join(a.dataset, "stats.json")):
        print(f"building {a.episodes} episodes x {a.steps} steps, {len(a.cameras)} cameras "
              f"{a.size[0]}x{a.size[1]} H.264{' (fast decode)' if a.fast_decode else ''} in {a.dataset} ...",
              flush=True)
        secs = build(a.dataset, a.episodes, a.steps, tuple(a.size), len(a.cameras), a.fast_decode)
        print(f"  built in {secs:.1f} s")
        extract_mp4s(a.dataset, a.mp4_dir)
    if a.device is None:
        try:
            import torch

            a.device = "cuda" if torch.cuda.is_available() else None
        except ImportError:
            pass
    paired = [("ceiling", a.samples * 2), ("wamdata", a.samples)]   # the ceiling runs ~as long as the loader
    once = ([("to-device", a.samples)] if a.device else []) + [("seek", seek_samples)]
    rows = []
    for workers in (0, 2):
        for method, n in paired * a.repeat + once:
            r = spawn(a, method, workers, n)
            rows.append((method, workers, r))
            first = f"first batch {r['first_s']:.1f} s" if r["first_s"] is not None else ""
            print(f"{method:11s} workers={workers}: overall {r['rate']:7.1f}  steady {r['steady']:7.1f} samples/s"
                  f"  peak RSS {r['rss_mb']:6.0f} MB  ({r['samples']:.0f} samples, {r['seconds']:.1f} s) {first}",
                  flush=True)
        try:
            import lerobot  # noqa: F401
        except ImportError:
            if workers == 0:
                print("lerobot   not importable: skipped (pip install lerobot to compare)")
        else:
            r = spawn(a, "lerobot", workers, seek_samples)
            rows.append(("lerobot", workers, r))
            print(f"lerobot  workers={workers}: {r['rate']:8.1f} samples/s  peak RSS {r['rss_mb']:7.0f} MB")
    def median(method, w, key="steady"):
        return float(np.median([r[key] for m, ww, r in rows if m == method and ww == w]))

    rate = {(m, w): median(m, w) for m, w, _ in rows}
    overall = {(m, w): median(m, w, "rate") for m, w, _ in rows}
    print()
    print("| workers | wamdata steady (overall) samples/s | seek baseline | x seek | ceiling | % of ceiling "
          "(median of pairs, range) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for w in (0, 2):
        wam, seek, ceil = rate[("wamdata", w)], rate[("seek", w)], rate[("ceiling", w)]
        runs = [r["steady"] for m, ww, r in rows if ww == w and m in ("ceiling", "wamdata")]
        pairs = [100 * loader / ceiling for ceiling, loader in zip(runs[0::2], runs[1::2])]
        print(f"| {w} | {wam:.0f} ({overall[('wamdata', w)]:.0f}) | {seek:.1f} | {wam / seek:.1f}x | {ceil:.0f} "
              f"| {np.median(pairs):.0f}% ({min(pairs):.0f}-{max(pairs):.0f}%) |")
    if a.device:
        for w in (0, 2):
            dev = rate[("to-device", w)]
            print(f"to {a.device}, workers={w}: {dev / BATCH:.1f} batches/s ({dev:.0f} samples/s), "
                  f"{100 * dev / rate[('wamdata', w)]:.0f}% of the host loader's rate")


if __name__ == "__main__":
    main()
