"""robomimic conversion throughput with images: steps/s and frames/s with 1 and 2 Ray workers.

Data: ``--files`` robomimic-layout HDF5 files (tests/fixtures/robomimic.py) of ``--demos`` demos x
``--steps`` steps each, two cameras (agentview, robot0_eye_in_hand) at ``--size`` (robomimic's image
datasets are 84x84), obs / next_obs as ``dataset_states_to_obs.py`` writes them. Each configuration is
the conversion job in a fresh process, on a local Ray of 1 or 2 workers (RayExecutor, as
``wamdata convert --workers N``); the baseline in the same run is the job in-process (SerialExecutor,
no Ray). Two walls: the process (Ray's start-up included) and the job itself (``convert()``: discover,
read, encode, write, commit), from which steps/s and the 2-vs-1 ratio are computed. RSS is sampled
over the whole process tree as in convert_bench.py.

    python benchmarks/robomimic_bench.py [--files 2] [--demos 12] [--steps 150] [--size 84x84]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.convert_bench import run_measured  # noqa: E402  (after the path insert)

JOB = """
import json, sys
from pipelines.executors import RayExecutor
from wamdata.convert import ConvertConfig, convert
src, out, workers, result = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
cfg = ConvertConfig(source="robomimic", input=src, output=out, quiet=True, workers=max(workers, 1))
if workers == 0:
    report = convert(cfg)
else:
    with RayExecutor(workers=workers) as ex:
        report = convert(cfg, ex)
with open(result, "w") as f:
    json.dump({"job_wall_s": report.wall_s, "steps": report.steps}, f)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2)
    ap.add_argument("--demos", type=int, default=12, help="demos per file")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--size", default="84x84", help="image size WxH")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    from tests.fixtures.robomimic import write_robomimic

    w, h = map(int, a.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "raw")
        for i in range(a.files):
            write_robomimic(os.path.join(src, f"task{i}", "image.hdf5"), demos=a.demos, T=a.steps, h=h, w=w, seed=i)
        steps = a.files * a.demos * a.steps
        frames = steps * 2
        results = {}
        for n, name in ((0, "serial (no Ray)"), (1, "ray, 1 worker"), (2, "ray, 2 workers")):
            result = os.path.join(tmp, f"result{n}.json")
            wall, tree, one = run_measured([sys.executable, "-c", JOB, src, os.path.join(tmp, f"out{n}"), str(n), result])
            with open(result) as f:
                job = json.load(f)
            if job["steps"] != steps:
                raise SystemExit(f"{name}: converted {job['steps']} steps of {steps}")
            results[name] = {"process_wall_s": wall, "job_wall_s": job["job_wall_s"],
                             "steps_s": steps / job["job_wall_s"], "frames_s": frames / job["job_wall_s"],
                             "peak_rss_tree_mb": tree, "peak_rss_process_mb": one}
    base = results["serial (no Ray)"]["steps_s"]
    print(f"robomimic {a.files} files x {a.demos} demos x {a.steps} steps x 2 cameras at {a.size}, cpus={os.cpu_count()}")
    print(f"{'configuration':<18} {'process s':>9} {'job s':>6} {'steps/s':>8} {'frames/s':>9} {'vs serial':>9} "
          f"{'RSS tree MB':>12} {'max proc MB':>12}")
    for name, r in results.items():
        print(f"{name:<18} {r['process_wall_s']:>9.1f} {r['job_wall_s']:>6.1f} {r['steps_s']:>8.0f} {r['frames_s']:>9.0f} "
              f"{r['steps_s'] / base:>8.2f}x {r['peak_rss_tree_mb']:>12.0f} {r['peak_rss_process_mb']:>12.0f}")
    ratio = results["ray, 2 workers"]["steps_s"] / results["ray, 1 worker"]["steps_s"]
    print(f"2 workers / 1 worker: {ratio:.2f}x")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results | {"ratio_2_vs_1": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
