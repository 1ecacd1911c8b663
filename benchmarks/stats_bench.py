"""Steps/s of `wamdata stats` in-process and on a local Ray with 1 and 2 workers.

Builds one dataset (default 240 episodes x 500 steps, the feature set of a joint-space arm plus a
6-D extra, ``--cameras`` small cameras whose video the stats pass seeks over), then times
``pipelines.stats_job.compute_stats`` per setting. Ray is started and warmed (worker processes
running) before the clock starts, so the figure is the job's throughput, not Ray's start-up.

    python benchmarks/stats_bench.py [--episodes 240] [--steps 500] [--shards 16] [--cameras 1]

``--at-conversion`` measures instead what the statistics computed inside the conversion tasks cost
(``ConvertConfig.stats``: a StatsPartial per shard fed the values already in memory, merged into
stats.json when the job finalises): the same fixture converted with and without them, alternating,
on a warmed local Ray with 2 workers, reporting the median walls and their ratio; plus one in-process
run whose statistics calls are timed directly (the per-shard observe / serialise calls and the
final merge), a figure the machine's other load does not blur.

    python benchmarks/stats_bench.py --at-conversion [--repeat 3] [--episodes 8] [--steps 100]
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
    ap.add_argument("--episodes", type=int, default=None, help="default 240 (--at-conversion: 8)")
    ap.add_argument("--steps", type=int, default=None, help="default 500 (--at-conversion: 100)")
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=None,
                    help="best of N runs per setting (default 2; --at-conversion: N alternating pairs, default 3)")
    ap.add_argument("--dataset", default=None, help="reuse/keep the dataset here")
    ap.add_argument("--at-conversion", action="store_true",
                    help="the cost of statistics at conversion (with vs without), not the stats pass")
    args = ap.parse_args()
    if args.at_conversion:
        conversion_cost(args.episodes or 8, args.steps or 100, args.repeat or 3)
        return
    args.episodes, args.steps, args.repeat = args.episodes or 240, args.steps or 500, args.repeat or 2

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


# ---- the cost of statistics inside a conversion ---------------------------------------------------

def _sources(root: str, episodes: int, steps: int) -> dict[str, tuple[str, str, int]]:
    """name -> (converter, input, steps): ALOHA with 4 cameras (encode-bound, the usual case) and
    robosuite demonstrations without cameras (nothing to encode: the worst case for statistics)."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from tests.fixtures.aloha import write_aloha
    from tests.fixtures.robosuite import write_robosuite

    aloha = os.path.join(root, "aloha")
    write_aloha(aloha, episodes=episodes, T=steps, h=96, w=128)
    os.makedirs(os.path.join(root, "robosuite"))
    demos = episodes * 8
    written = write_robosuite(os.path.join(root, "robosuite", "demo.hdf5"), demos=demos, T=steps * 4)
    return {f"aloha, 4 cameras 128x96, {episodes} x {steps} steps": ("aloha", aloha, episodes * steps),
            f"robosuite, no camera, {demos} demos": ("robosuite", os.path.join(root, "robosuite"),
                                                     sum(len(v["states"]) for v in written.values()))}


def _convert(source: str, src: str, out: str, stats: bool, executor=None) -> float:
    from wamdata.convert import ConvertConfig, convert

    t = time.perf_counter()
    convert(ConvertConfig(source=source, input=src, output=out, workers=2, quiet=True, stats=stats,
                          overwrite=True), executor)
    return time.perf_counter() - t


def _timed_stats_run(source: str, src: str, out: str) -> tuple[float, float]:
    """(wall, seconds inside the statistics calls) of one in-process conversion with statistics: the
    writer's per-shard StatsPartial is swapped in this process for a subclass timing observe/to_bytes,
    and the finalising merge is timed the same way (a patch of this process only, for measuring)."""
    from wamdata import convert as wconvert
    from wamdata import stats as wstats

    spent = [0.0]

    def timed(fn):
        def run(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[0] += time.perf_counter() - t
        return run

    class TimedPartial(wstats.StatsPartial):
        observe = timed(wstats.StatsPartial.observe)
        to_bytes = timed(wstats.StatsPartial.to_bytes)

    orig_partial, orig_merge = wstats.StatsPartial, wstats.conversion_stats
    wstats.StatsPartial, wstats.conversion_stats = TimedPartial, timed(orig_merge)
    try:
        wall = _convert(source, src, out, True, wconvert.SerialExecutor())
    finally:
        wstats.StatsPartial, wstats.conversion_stats = orig_partial, orig_merge
    return wall, spent[0]


def conversion_cost(episodes: int, steps: int, repeat: int) -> None:
    import statistics

    import ray

    from pipelines.executors import RayExecutor

    tmp = tempfile.mkdtemp(prefix="wamdata-stats-convert-bench-")
    sources = _sources(tmp, episodes, steps)
    os.environ["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # Ray workers
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {}
    try:
        ray.get([ray.remote(lambda: os.getpid()).remote() for _ in range(4)])  # warm workers
        for name, (source, src, n_steps) in sources.items():
            walls = {True: [], False: []}
            with RayExecutor(workers=2) as ex:
                _convert(source, src, os.path.join(tmp, "warm"), True, ex)   # imports, first-task costs
                for r in range(repeat):
                    for stats in ((True, False) if r % 2 == 0 else (False, True)):   # alternate the order
                        walls[stats].append(_convert(source, src, os.path.join(tmp, f"out-{stats}"), stats, ex))
            serial_wall, in_stats = _timed_stats_run(source, src, os.path.join(tmp, "serial"))
            with_s, without_s = statistics.median(walls[True]), statistics.median(walls[False])
            results[name] = {"steps": n_steps, "with_s": walls[True], "without_s": walls[False],
                             "ratio": with_s / without_s, "serial_wall_s": serial_wall, "serial_stats_s": in_stats,
                             "serial_stats_fraction": in_stats / serial_wall}
            print(f"{name}: {n_steps} steps; Ray 2 workers, median of {repeat}: with stats {with_s:.2f} s, "
                  f"without {without_s:.2f} s, ratio {with_s / without_s:.3f}; in-process {serial_wall:.2f} s "
                  f"of which {in_stats:.3f} s in statistics ({in_stats / serial_wall:.1%})")
    finally:
        ray.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
