"""Does the commit protocol hold at 100k episodes? Time per commit early vs late, finalize, resume scan.

Commits ``--units`` work units of ``--per-unit`` episodes each (tiny placeholder shards, real index
rows) through ``DatasetIndex``, then finalizes and re-opens it as a resumed job would. The baseline is
the first 10% of commits: a protocol whose per-commit cost grows with the dataset shows a late/early
ratio well above 1.

    python benchmarks/index_scale_bench.py [--units 2000] [--per-unit 50] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from wamdata.format import layout  # noqa: E402
from wamdata.format.index import DatasetIndex  # noqa: E402
from wamdata.format.writer import UnitResult  # noqa: E402


def unit_result(idx: DatasetIndex, u: int, per_unit: int) -> UnitResult:
    tmp = idx.path(f"{layout.TMP_DIR}/u{u:06d}.part-000.tar")
    with idx.fs.open(tmp, "wb") as f:
        f.write(b"\0" * 1024)
    rows = []
    for i in range(per_unit):
        eid = f"bench/u{u:06d}/ep{i:03d}"
        rows.append({"episode_id": eid, "key": layout.episode_key(eid), "shard": tmp, "offset": i, "size": 1,
                     "crc32": 0, "source": "bench", "family": "teleop", "embodiment": "bot", "task": "t",
                     "tasks": ["t"], "success": True, "num_steps": 300, "duration_s": 20.0, "fps": 15.0,
                     "cameras": ["wrist"], "action_space": "joint_pos", "split": "", "source_item": eid,
                     "metadata": "{}"})
    res = UnitResult(f"u{u:06d}", shards=[(tmp, rows)])
    res.features = {"state.joint_pos": {"name": "state.joint_pos", "dtype": "float64", "shape": [7]}}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--per-unit", type=int, default=50)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp()
    idx = DatasetIndex.open(os.path.join(out, "ds"), overwrite=True)
    idx.fs.makedirs(idx.path(layout.TMP_DIR), exist_ok=True)
    times = []
    for u in range(a.units):
        res = unit_result(idx, u, a.per_unit)
        t = time.perf_counter()
        idx.commit(res)
        times.append(time.perf_counter() - t)
    tenth = max(1, a.units // 10)
    early, late = sum(times[:tenth]) / tenth, sum(times[-tenth:]) / tenth
    t = time.perf_counter()
    info = idx.finalize()
    fin = time.perf_counter() - t
    t = time.perf_counter()
    resumed = DatasetIndex.open(os.path.join(out, "ds"))
    done = resumed.done_items()
    scan = time.perf_counter() - t
    n = a.units * a.per_unit
    assert info["counts"]["episodes"] == n and len(done) == n
    print(f"{n} episodes in {a.units} shards")
    print(f"commit: first 10% {early * 1e3:.2f} ms/unit, last 10% {late * 1e3:.2f} ms/unit, late/early {late / early:.2f}x")
    print(f"finalize (merge index, write wamdata.json): {fin:.2f} s")
    print(f"resume scan (open + done items): {scan:.2f} s")


if __name__ == "__main__":
    main()
