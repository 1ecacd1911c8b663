"""One check that a converted dataset flows through everything a user runs on it, whatever its source:
``wamdata info``, ``validate``, ``stats``, the streaming loader and the LeRobot export, each asserted
against the dataset's own index and steps — episodes without cameras or without actions included.

Every converter's end-to-end test calls :func:`check_toolkit_flow` on what it converted, so a new
source cannot land while one of those tools breaks on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import wamdata
from wamdata.format.check import check_dataset
from wamdata.report import dataset_summary
from wamdata.stats import compute_stats

PROBE_CAMERA = "probe_cam"   # a camera only the reference dataset has: black and masked in the others


def _stored_arrays(ds, names):
    """{feature: concatenated values over all episodes} in index order, straight from the shards."""
    out = {n: [] for n in names}
    for eid in ds.episodes.column("episode_id").to_pylist():
        ep = ds.episode(eid)
        for n in names:
            if n in ep.steps.column_names:
                out[n].append(ep.array(n).reshape(ep.num_steps, -1).astype(np.float64))
    return {n: np.concatenate(v) for n, v in out.items() if v}


def check_info_and_validate(path: str) -> dict:
    ds = wamdata.open_dataset(path)
    rows = ds.episodes.to_pylist()
    summary = dataset_summary(path)
    assert summary["episodes"] == len(rows) > 0
    assert summary["steps"] == sum(r["num_steps"] for r in rows)
    assert sum(s["episodes"] for s in summary["sources"].values()) == len(rows)
    report = check_dataset(path)
    assert report.ok, report.summary()
    assert report.episodes == len(rows)
    assert report.frames == sum(r["num_steps"] * len(r["cameras"]) for r in rows)
    return summary


def check_stats(path: str) -> dict:
    """stats.json matches numpy over the stored values of every state/action feature."""
    ds = wamdata.open_dataset(path)
    stats = compute_stats(path)
    names = [n for n, f in ds.features.items()
             if n.split(".")[0] in ("state", "action") and np.issubdtype(np.dtype(f.dtype), np.number)]
    stored = _stored_arrays(ds, names)
    assert stats["episodes"] == len(ds.episodes) and stats["steps"] == sum(ds.episodes.column("num_steps").to_pylist())
    for n, values in stored.items():
        s = stats["all"][n]
        assert s["count"] == len(values), n
        np.testing.assert_allclose(np.asarray(s["std"], np.float64).ravel(), values.std(0), rtol=1e-5, atol=1e-9,
                                   err_msg=n)
        np.testing.assert_allclose(np.asarray(s["mean"], np.float64).ravel(), values.mean(0), rtol=1e-6, atol=1e-9,
                                   err_msg=n)
        np.testing.assert_allclose(np.asarray(s["min"], np.float64).ravel(), values.min(0), err_msg=n)
        np.testing.assert_allclose(np.asarray(s["max"], np.float64).ravel(), values.max(0), err_msg=n)
    return stats


def _window_checks(sample, row, cams, has_actions):
    mask = np.asarray(sample["camera_mask"])
    for ci, cam in enumerate(cams):
        frames = np.asarray(sample["frames"][cam])
        assert frames.shape[1:] == (24, 32, 3)
        assert bool(mask[ci]) <= (cam in row["cameras"]), cam
        if not mask[ci]:
            assert not frames.any() and not np.asarray(sample["future_frames"][cam]).any(), cam
    if not has_actions:
        assert np.asarray(sample["actions_is_pad"]).all()


def check_loader(path: str, tmp_path: Path) -> int:
    """One epoch of windows: counts add up, states equal the stored values, a dataset without actions
    yields only padded actions; mixed with a dataset that has a camera this one lacks, that camera
    comes black and masked in this dataset's windows."""
    from wamdata.loader import WamStream
    from tests.fixtures.loader_data import make_dataset

    ds = wamdata.open_dataset(path)
    rows = {r["episode_id"]: r for r in ds.episodes.to_pylist()}
    cams = sorted(ds.cameras)[:2]
    has_actions = any(n.startswith("action.") for n in ds.features)
    knobs = dict(history=2, future=[1, 2], action_horizon=3, image_size=(24, 32), shuffle_buffer=1, normalize=None)
    stream = WamStream(path, cameras=cams, **knobs)
    slots = stream.state_layout.slots
    n, seen = 0, set()
    for sample in stream:
        n += 1
        seen.add(sample["episode_id"])
        _window_checks(sample, rows[sample["episode_id"]], cams, has_actions)
        if slots and n <= 3:   # the anchor step's state is the stored one, laid out slot by slot
            ep = ds.episode(sample["episode_id"])
            t = int(sample["t"])
            state, smask = np.asarray(sample["state"])[-1], np.asarray(sample["state_mask"], bool).reshape(-1)
            for s in slots:
                if s.name in ep.steps.column_names:
                    want = ep.array(s.name)[t].reshape(-1).astype(np.float32)
                    np.testing.assert_allclose(state[s.start:s.start + len(want)], want, rtol=1e-6, err_msg=s.name)
                    assert smask[s.start:s.start + len(want)].all()
    assert seen == set(rows), "every episode yields windows"
    assert n == sum(r["num_steps"] for r in rows.values())

    ref = make_dataset(Path(tmp_path) / "flow_reference", n=1, steps=6, cameras=(PROBE_CAMERA,), prefix="flowref")
    manifest = Path(tmp_path) / "flow_mixture.yaml"
    manifest.write_text(f"datasets:\n  - {{path: '{path}', name: under_test}}\n  - {{path: '{ref}', name: ref}}\n")
    mixed = WamStream(str(manifest), cameras=cams + [PROBE_CAMERA], **knobs)
    ours = 0
    for sample in mixed:
        if sample["dataset"] == "under_test":
            ours += 1
            _window_checks(sample, rows[sample["episode_id"]], cams + [PROBE_CAMERA], has_actions)
            assert not np.asarray(sample["camera_mask"])[-1]
    assert ours > 0
    return n


def check_lerobot_export(path: str, out: Path) -> dict:
    from wamdata.export.lerobot import export_lerobot

    ds = wamdata.open_dataset(path)
    rows = ds.episodes.to_pylist()
    export_lerobot(path, str(out), progress=False)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["total_episodes"] == len(rows)
    assert info["total_frames"] == sum(r["num_steps"] for r in rows)
    videos = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    assert sorted(videos) == sorted(f"observation.images.{c}" for c in ds.cameras)
    return info


def check_toolkit_flow(path, tmp_path, lerobot: bool = True) -> dict:
    """Run info, validate, stats, the loader and (unless ``lerobot=False``) the LeRobot export on a
    dataset, asserting each against the dataset itself. Returns what each produced."""
    path = str(path)
    out = {"info": check_info_and_validate(path), "stats": check_stats(path), "windows": check_loader(path, Path(tmp_path))}
    if lerobot:
        out["lerobot"] = check_lerobot_export(path, Path(tmp_path) / "flow_lerobot")
    return out
