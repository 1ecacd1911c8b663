"""Steps/s of `wamdata stats` in-process and on a local Ray with 1 and 2 workers.

Builds one dataset (default 240 episodes x 500 steps, the feature set of a joint-space arm plus a
6-D extra, ``--cameras`` small cameras whose video the stats pass seeks over), then times
``pipelines.stats_job.compute_stats`` per setting. Ray is started and warmed (worker processes
running) before the clock starts, so the figure is the job's throughput, not Ray's start-up.

    python benchmarks/stats_bench.py [--episodes 240] [--steps 500] [--shards 16] [--cameras 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np


def build(path: str, episodes: int, steps: int, shards: int, cameras: int) -> None:
    from wamdata.format.index import DatasetIndex
    from wamdata.format.writer import VideoOptions, write_unit
    from wamdata.schema import ArrayFrames, Camera, Episode

    rng = np.random.default_rng(0)

    def episode(i: int) -> Episode:
        ep = Episode(f"bench/{i:05d}", "bench", "teleop", ("franka", "ur5")[i % 2], 15.0,
                     {"timestamp": np.arange(steps) / 15.0}, action_space="joint_pos", tasks=["task"])
        ep.add("state.joint_pos", rng.normal(0, 1, (steps, 7)))
        ep.add("action.joint_pos", rng.normal(0, 1, (steps, 7)))
        ep.add("state.eef_pos", rng.normal(0, 0.3, (steps, 3)))
        q = rng.normal(size=(steps, 4))
        ep.add("state.eef_rot", q / np.linalg.norm(q, axis=1, keepdims=True))
        ep.add("state.gripper", rng.uniform(0, 1, (steps, 1)))
        ep.add("action.gripper", rng.uniform(0, 1, (steps, 1)))
        ep.add("extra.wrench", rng.normal(0, 5, (steps, 6)))
        ep.add("extra.idle", rng.uniform(size=steps) < 0.1)
        frame = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
        for c in range(cameras):
            ep.cameras[f"cam{c}"] = Camera(f"cam{c}", ArrayFrames([frame] * steps))
        return ep

    idx = DatasetIndex.open(path, overwrite=True)
    per = -(-episodes // shards)
    for s in range(shards):  # one write unit -> one shard
        ids = range(s * per, min(episodes, (s + 1) * per))
        work = ((f"bench/{i:05d}", "", (lambda i=i: [episode(i)])) for i in ids)
        result = write_unit(idx.fs, idx.root, f"u{s:04d}", work, VideoOptions(), shard_size_mb=1e6)
        idx.commit(result)
    idx.finalize()


def run(path: str, workers: int) -> float:
    from pipelines.stats_job import compute_stats

    if workers == 0:
        t = time.perf_counter()
        compute_stats(path, workers=0, write=False)
        return time.perf_counter() - t
    import ray

    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        ray.get([ray.remote(lambda: os.getpid()).remote() for _ in range(workers * 2)])  # warm workers
        t = time.perf_counter()
        compute_stats(path, workers=workers, write=False)
        return time.perf_counter() - t
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=240)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs per setting")
    ap.add_argument("--dataset", default=None, help="reuse/keep the dataset here")
    args = ap.parse_args()

    path = args.dataset or os.path.join(tempfile.mkdtemp(prefix="wamdata-stats-bench-"), "ds")
    if not os.path.exists(os.path.join(path, "wamdata.json")):
        t = time.perf_counter()
        build(path, args.episodes, args.steps, args.shards, args.cameras)
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
    print(json.dumps(results))


if __name__ == "__main__":
    main()
