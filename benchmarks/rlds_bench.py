"""Reading RLDS with wamdata (no TensorFlow) vs the baselines: records/s, steps/s, frames/s, peak RSS.

Each reader runs in its own subprocess so its peak RSS (``ru_maxrss``) is its own. A reader does the
whole read: discover, parse every record, and decode every camera frame to RGB.

    wamdata      converters.rlds: header scan + seek, CRC checks, own Example parser, preset mapping,
                 lazy OpenCV decode of each frame
    tfrecord     the `tfrecord` package (no CRC check, bytes features as NUL-stripping S arrays) + OpenCV
    tfds         tensorflow_datasets.builder_from_directory(...).as_dataset(), images decoded by TF;
                 skipped (column "n/a") when TensorFlow / TFDS are not importable

Data: ``--data`` a TFDS version folder (default: the shared real Bridge shard, read ``--passes`` times),
or ``--synthetic N`` a DROID-RLDS-layout folder of N episodes with 3 cameras at 180x320 (DROID's size),
written with tests/fixtures/rlds.py.

    python benchmarks/rlds_bench.py                       # real Bridge shard, 20 passes
    python benchmarks/rlds_bench.py --synthetic 40 --steps 120
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
BRIDGE = os.path.join(os.path.dirname(ROOT), "shared", "data", "rlds", "bridge_dataset", "1.0.0")


def _peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's peak, inherited across fork/exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_wamdata(data: str, passes: int, preset: str | None) -> dict:
    import cv2  # noqa: F401  (imported before the clock starts, as in the other readers)
    import fsspec  # noqa: F401

    from converters.rlds import RLDS

    conv = RLDS(preset=preset) if preset else RLDS()
    records = steps = frames = 0
    t0 = time.perf_counter()
    for _ in range(passes):
        for item in conv.discover(data):
            ep = conv.read(item)
            records += 1
            steps += ep.num_steps
            for cam in ep.cameras.values():
                for _f in cam.frames.iter_frames():
                    frames += 1
    return {"records": records, "steps": steps, "frames": frames, "s": time.perf_counter() - t0}


def run_tfrecord(data: str, passes: int, preset: str | None) -> dict:
    import cv2
    import numpy as np
    import tfrecord

    shards = sorted(os.path.join(data, f) for f in os.listdir(data) if ".tfrecord" in f)
    features = json.load(open(os.path.join(data, "features.json")))
    image_keys = [k for k in _image_keys(features)]
    records = steps = frames = 0
    t0 = time.perf_counter()
    for _ in range(passes):
        for shard in shards:
            for ex in tfrecord.tfrecord_loader(shard, None):
                records += 1
                steps += len(ex["steps/is_first"])
                for k in image_keys:
                    for b in ex[k]:
                        cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                        frames += 1
    return {"records": records, "steps": steps, "frames": frames, "s": time.perf_counter() - t0}


def run_tfds(data: str, passes: int, preset: str | None) -> dict:
    import tensorflow_datasets as tfds  # noqa: F401  (ImportError -> column skipped)

    builder = tfds.builder_from_directory(data)
    records = steps = frames = 0
    t0 = time.perf_counter()
    for _ in range(passes):
        for split in builder.info.splits:
            try:
                ds = builder.as_dataset(split=split)
            except Exception:  # a split named in dataset_info.json whose files are absent (Bridge's val)
                continue
            for ep in ds:
                records += 1
                for step in ep["steps"]:
                    steps += 1
                    for k, v in step["observation"].items():
                        if len(v.shape) == 3 and v.shape[-1] == 3:
                            v.numpy()
                            frames += 1
    return {"records": records, "steps": steps, "frames": frames, "s": time.perf_counter() - t0}


def _image_keys(spec: dict, prefix: str = "") -> list[str]:
    out = []
    if "featuresDict" in spec:
        for name, child in spec["featuresDict"]["features"].items():
            out += _image_keys(child, f"{prefix}/{name}" if prefix else name)
    elif "sequence" in spec:
        out += _image_keys(spec["sequence"]["feature"], prefix)
    elif "image" in spec:
        out.append(prefix)
    return out


READERS = {"wamdata": run_wamdata, "tfrecord": run_tfrecord, "tfds": run_tfds}


def _child(args) -> None:
    try:
        res = READERS[args.reader](args.data, args.passes, args.preset)
        res["peak_rss_mb"] = _peak_rss_mb()
    except ImportError as e:
        res = {"skipped": f"{e.name or e} not importable"}
    print(json.dumps(res))


def _measure(reader: str, data: str, passes: int, preset: str | None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", reader, "--data", data, "--passes", str(passes)]
    if preset:
        cmd += ["--preset", preset]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    if out.returncode != 0:
        return {"skipped": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=BRIDGE)
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--synthetic", type=int, default=0, help="write a DROID-layout folder of N episodes instead")
    ap.add_argument("--steps", type=int, default=120, help="steps per synthetic episode")
    ap.add_argument("--repeat", type=int, default=3, help="runs per reader (fresh process each); median shown")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.reader = args.child
        return _child(args)
    tmp = None
    if args.synthetic:
        sys.path.insert(0, ROOT)
        from tests.fixtures import rlds as fixture

        fixture.H, fixture.W = 180, 320
        tmp = tempfile.TemporaryDirectory()
        args.data, _ = write_data = fixture.write_droid_rlds(tmp.name, lengths=(args.steps,) * args.synthetic, shards=4)
        args.preset = args.preset or "droid"
        args.passes = 1 if args.passes == 20 else args.passes
        del write_data
    size_mb = sum(os.path.getsize(os.path.join(args.data, f)) for f in os.listdir(args.data) if ".tfrecord" in f) / 2**20
    print(f"data: {args.data} ({size_mb:.1f} MB of shards), passes: {args.passes}, preset: {args.preset}, "
          f"median of {args.repeat} runs, {os.cpu_count()} CPUs")
    print(f"{'reader':10s} {'records/s':>10s} {'steps/s':>10s} {'frames/s':>10s} {'MB/s':>8s} {'peak RSS MB':>12s}")
    for reader in READERS:
        runs = [_measure(reader, args.data, args.passes, args.preset) for _ in range(args.repeat)]
        ok = sorted((x for x in runs if "skipped" not in x), key=lambda x: x["s"])
        r = ok[len(ok) // 2] if ok else runs[0]  # the median run (by wall time)
        if "skipped" in r:
            print(f"{reader:10s} {'n/a':>10s} {'n/a':>10s} {'n/a':>10s} {'n/a':>8s} {'n/a':>12s}  ({r['skipped']})")
            continue
        s = r["s"]
        print(f"{reader:10s} {r['records'] / s:10.1f} {r['steps'] / s:10.0f} {r['frames'] / s:10.0f} "
              f"{size_mb * args.passes / s:8.1f} {r['peak_rss_mb']:12.0f}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
