"""Does cost grow linearly with the number of episodes? Convert, index, stats and one loader epoch at
several sizes, each size in a fresh process so its peak memory is its own.

For every size N (default 1k and 10k) small synthetic episodes (``tests.fixtures.synthetic``: 10 steps,
one 32x24 camera, 4 features) are converted on a local Ray with ``--workers`` workers, then the index is
opened, ``wamdata stats`` recomputed on Ray, and one epoch of the streaming loader read (every window,
frames decoded). Reported per size: wall time and episodes/s of each stage, the driver's peak RSS
(``ru_maxrss`` of the size's process) and the largest RSS any Ray worker reached (sampled every 50 ms
with psutil). The bars: cost per episode at the largest size within 1.3x of the smallest, driver memory
flat beyond the index itself; and ``open_dataset`` + index load of a 100k-row index under 2 s.

    python benchmarks/scale_bench.py [--sizes 1000 10000] [--workers 2] [--index-rows 100000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


class WorkerRSS:
    """Samples the RSS of this process's Ray worker processes; ``peak`` is the largest seen (bytes)."""

    def __init__(self, period: float = 0.05):
        import psutil

        self._me, self._period, self.peak = psutil.Process(), period, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            for p in psutil.process_iter(["name", "cmdline"]):
                try:
                    if p.info["name"] and p.info["name"].startswith("ray::") or any(
                            "default_worker.py" in c for c in (p.info["cmdline"] or [])):
                        self.peak = max(self.peak, p.memory_info().rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self._stop.wait(self._period)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def one_size(n: int, workers: int, work: str) -> dict:
    import ray

    from pipelines.executors import RayExecutor
    from pipelines.stats_job import compute_stats
    from tests.fixtures.synthetic import SOURCE, write_npz_tree
    from wamdata.convert import ConvertConfig, convert
    from wamdata.loader import WamStream
    import wamdata

    src, out = os.path.join(work, "src"), os.path.join(work, "ds")
    # in its own process: the generator returns every array it wrote (for tests), which is the
    # fixture's memory, not the driver's
    gen = multiprocessing.get_context("spawn").Process(target=write_npz_tree, args=(src,), kwargs={"n": n, "T": 10})
    gen.start()
    gen.join()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    ray.get([ray.remote(lambda: 0).remote() for _ in range(workers)])   # workers up before timing
    res: dict = {"episodes": n}
    with WorkerRSS() as rss:
        t = time.perf_counter()
        with RayExecutor(workers=workers) as ex:
            report = convert(ConvertConfig(source=SOURCE, input=src, output=out, workers=workers, quiet=True), ex)
        res["convert_s"] = time.perf_counter() - t
        assert report.converted == n and report.failed == 0
        t = time.perf_counter()
        ds = wamdata.open_dataset(out)
        assert len(ds.episodes) == n
        res["index_s"] = time.perf_counter() - t
        t = time.perf_counter()
        compute_stats(out, workers=workers, progress=False)
        res["stats_s"] = time.perf_counter() - t
    res["worker_peak_rss_mb"] = rss.peak / 2**20
    ray.shutdown()
    t = time.perf_counter()
    stream = WamStream(out, cameras=["front"], image_size=(24, 32), history=1, future=[2], action_horizon=4,
                       shuffle_buffer=256, normalize="stats")
    windows = sum(1 for _ in stream)
    res["loader_s"] = time.perf_counter() - t
    assert windows == 10 * n
    res["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["index_bytes"] = os.path.getsize(os.path.join(out, "episodes.parquet"))
    return res


def index_open(rows: int, work: str) -> float:
    """Seconds to open a dataset with ``rows`` index rows and load its index, built through the real
    commit protocol (benchmarks/index_scale_bench.py's placeholder shards)."""
    from benchmarks.index_scale_bench import unit_result
    from wamdata.format import layout
    from wamdata.format.index import DatasetIndex
    import wamdata

    idx = DatasetIndex.open(os.path.join(work, "big"), overwrite=True)
    idx.fs.makedirs(idx.path(layout.TMP_DIR), exist_ok=True)
    per = 500
    for u in range(rows // per):
        idx.commit(unit_result(idx, u, per))
    idx.finalize()
    t = time.perf_counter()
    ds = wamdata.open_dataset(os.path.join(work, "big"))
    assert len(ds.episodes) == rows and len(ds._row_of) == rows
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--index-rows", type=int, default=100_000)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)   # internal: run one size, print JSON
    a = ap.parse_args()
    if a.one:
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(one_size(a.one, a.workers, work)))
        return
    results = []
    for n in a.sizes:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--workers", str(a.workers)],
                              capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'episodes':>9} {'convert s':>10} {'ep/s':>7} {'index s':>8} {'stats s':>8} {'loader s':>9} "
          f"{'ms/ep total':>11} {'driver MB':>10} {'worker MB':>10} {'index MB':>9}")
    for r in results:
        total = r["convert_s"] + r["index_s"] + r["stats_s"] + r["loader_s"]
        r["ms_per_episode"] = 1e3 * total / r["episodes"]
        print(f"{r['episodes']:>9} {r['convert_s']:>10.1f} {r['episodes'] / r['convert_s']:>7.0f} "
              f"{r['index_s']:>8.3f} {r['stats_s']:>8.1f} {r['loader_s']:>9.1f} {r['ms_per_episode']:>11.2f} "
              f"{r['driver_peak_rss_mb']:>10.0f} {r['worker_peak_rss_mb']:>10.0f} {r['index_bytes'] / 2**20:>9.2f}")
    small, big = results[0], results[-1]
    print(f"cost per episode {big['episodes']} vs {small['episodes']}: "
          f"{big['ms_per_episode'] / small['ms_per_episode']:.2f}x (bar 1.3x); per stage: " + ", ".join(
              f"{k[:-2]} {(big[k] / big['episodes']) / (small[k] / small['episodes']):.2f}x"
              for k in ("convert_s", "stats_s", "loader_s")))
    print(f"driver peak RSS {small['driver_peak_rss_mb']:.0f} -> {big['driver_peak_rss_mb']:.0f} MB")
    if a.index_rows:
        with tempfile.TemporaryDirectory() as work:
            print(f"open_dataset + index of {a.index_rows} rows: {index_open(a.index_rows, work):.2f} s (bar 2 s)")


if __name__ == "__main__":
    main()
