"""Steps/s of `wamdata curate --signals` in-process and on a local Ray with 1 and 2 workers.

Builds one dataset (default 48 episodes x 200 steps at 15 fps in 8 shards, one 160x120 camera showing a
sliding block texture, so H.264 has real work; a 7-joint arm, gripper, eef position), then times
``pipelines.curate_job.compute_signals`` per setting from an empty side table. Ray is started and
warmed before the clock starts, so the figure is the job, not Ray's start-up.

    python benchmarks/curate_bench.py [--episodes 48] [--steps 200] [--shards 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np


def build(path: str, episodes: int, steps: int, shards: int) -> None:
    from wamdata.format.index import DatasetIndex
    from wamdata.format.writer import VideoOptions, write_unit
    from wamdata.schema import ArrayFrames, Camera, Episode

    def episode(i: int) -> Episode:
        rng = np.random.default_rng(i)
        ep = Episode(f"bench/{i:05d}", "bench", "teleop", "franka", 15.0, {"timestamp": np.arange(steps) / 15.0},
                     action_space="joint_pos", tasks=["pick up the block"])
        t = np.arange(steps)[:, None] / 15.0
        joints = np.sin(t * rng.uniform(0.2, 1.0, 7) + rng.uniform(0, 6, 7))
        ep.add("state.joint_pos", joints)
        ep.add("action.joint_pos", np.vstack([joints[1:], joints[-1:]]))
        ep.add("state.eef_pos", np.hstack([0.4 + 0.1 * np.cos(t), 0.1 * np.sin(t), 0.2 + 0 * t]))
        ep.add("state.gripper", (np.arange(steps) > steps // 2).astype(np.float64)[:, None])
        blocks = rng.integers(30, 226, (30, 40 + steps // 4 + 1, 3), dtype=np.uint8)
        tex = np.repeat(np.repeat(blocks, 4, 0), 4, 1)
        ep.cameras["front"] = Camera("front", ArrayFrames(np.stack([tex[:, k: k + 160] for k in range(steps)])))
        return ep

    idx = DatasetIndex.open(path, overwrite=True)
    per = -(-episodes // shards)
    for s in range(shards):  # one write unit -> one shard
        ids = range(s * per, min(episodes, (s + 1) * per))
        work = ((f"bench/{i:05d}", "", (lambda i=i: [episode(i)])) for i in ids)
        idx.commit(write_unit(idx.fs, idx.root, f"u{s:04d}", work, VideoOptions(), shard_size_mb=1e6))
    idx.finalize()


def run(path: str, workers: int) -> float:
    from pipelines.curate_job import compute_signals
    from wamdata.curate import CURATION_DIR

    shutil.rmtree(os.path.join(path, CURATION_DIR), ignore_errors=True)
    if workers == 0:
        t = time.perf_counter()
        compute_signals(path, workers=0)
        return time.perf_counter() - t
    import ray

    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        ray.get([ray.remote(lambda: os.getpid()).remote() for _ in range(workers * 2)])  # warm workers
        t = time.perf_counter()
        compute_signals(path, workers=workers)
        return time.perf_counter() - t
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=48)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs per setting")
    ap.add_argument("--dataset", default=None, help="reuse/keep the dataset here")
    args = ap.parse_args()

    path = args.dataset or os.path.join(tempfile.mkdtemp(prefix="wamdata-curate-bench-"), "ds")
    if not os.path.exists(os.path.join(path, "wamdata.json")):
        t = time.perf_counter()
        build(path, args.episodes, args.steps, args.shards)
        print(f"built {path} in {time.perf_counter() - t:.1f} s")
    import wamdata

    ds = wamdata.open_dataset(path)
    steps = ds.info["counts"]["steps"]
    print(f"{len(ds)} episodes, {steps} steps, {len(ds.shards)} shards, "
          f"{ds.info['counts']['bytes'] / 1e6:.1f} MB, {os.cpu_count()} CPUs")
    results = {}
    for label, workers in (("in-process", 0), ("ray 1 worker", 1), ("ray 2 workers", 2)):
        secs = min(run(path, workers) for _ in range(args.repeat))
        results[label] = {"seconds": secs, "steps_per_s": steps / secs}
        print(f"  {label:<14} {secs:7.2f} s   {steps / secs:>12,.0f} steps/s")
    one, two = results["ray 1 worker"]["steps_per_s"], results["ray 2 workers"]["steps_per_s"]
    print(f"  2 workers / 1 worker: {two / one:.2f}x")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
