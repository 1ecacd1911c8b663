"""DROID conversion throughput: episodes/s, frames/s and peak RSS with 1 and 2 Ray workers.

The baseline in the same run is the job's in-process SerialExecutor (no Ray); each configuration runs
`wamdata convert` in a fresh process and samples the RSS of the whole process tree (driver, raylet,
workers) every 50 ms.

    python benchmarks/convert_bench.py [--episodes 16] [--steps 120] [--size 320x180]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SERIAL = """
import sys
from wamdata.convert import ConvertConfig, convert
convert(ConvertConfig(source="droid", input=sys.argv[1], output=sys.argv[2], quiet=True, workers=1))
"""


def run_measured(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak tree RSS MB, peak single-process RSS MB) of a command."""
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    peak_tree = peak_one = 0.0
    done = threading.Event()

    def sample():
        nonlocal peak_tree, peak_one
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = [p.memory_info().rss for p in procs if p.is_running()]
            except psutil.Error:
                rss = []
            if rss:
                peak_tree = max(peak_tree, sum(rss) / 1e6)
                peak_one = max(peak_one, max(rss) / 1e6)
            time.sleep(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-2000:]}")
    return time.time() - start, peak_tree, peak_one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=16)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--size", default="320x180", help="source MP4 size WxH")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    from tests.fixtures.droid import write_droid_tree

    w, h = map(int, a.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "raw")
        write_droid_tree(src, episodes=a.episodes, steps=a.steps, size=(w, h), quirks=False)
        frames = a.episodes * a.steps * 3  # three cameras per DROID episode
        wamdata = os.path.join(os.path.dirname(sys.executable), "wamdata")
        runs = {"serial (no Ray)": [sys.executable, "-c", SERIAL, src, os.path.join(tmp, "serial")]}
        for n in (1, 2):
            runs[f"ray, {n} worker{'s' * (n > 1)}"] = [wamdata, "convert", "--source", "droid", "--input", src,
                                                    "--output", os.path.join(tmp, f"w{n}"), "--workers", str(n),
                                                    "--quiet"]
        results = {}
        for name, cmd in runs.items():
            wall, tree, one = run_measured(cmd)
            results[name] = {"wall_s": wall, "episodes_s": a.episodes / wall, "frames_s": frames / wall,
                             "peak_rss_tree_mb": tree, "peak_rss_process_mb": one}
    base = results["serial (no Ray)"]["episodes_s"]
    print(f"DROID {a.episodes} episodes x {a.steps} steps x 3 cameras at {a.size}, cpus={os.cpu_count()}")
    print(f"{'configuration':<18} {'wall s':>7} {'ep/s':>7} {'frames/s':>9} {'vs serial':>9} {'RSS tree MB':>12} {'max proc MB':>12}")
    for name, r in results.items():
        print(f"{name:<18} {r['wall_s']:>7.1f} {r['episodes_s']:>7.2f} {r['frames_s']:>9.0f} "
              f"{r['episodes_s'] / base:>8.2f}x {r['peak_rss_tree_mb']:>12.0f} {r['peak_rss_process_mb']:>12.0f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
