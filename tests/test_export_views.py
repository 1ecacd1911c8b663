"""Every export of a view with ``keep_steps`` holds exactly the kept steps: each kept range is its own
episode naming its source episode and step range, values equal the source dataset's at those steps,
frames match them (PSNR), counts add up; a view keeping no steps is refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import wamdata
from tests.fixtures.frames import psnr
from tests.test_export_lerobot import FPS, make_dataset
from wamdata.export import ExportError, export_hf, export_lerobot, export_zarr
from wamdata.format import video

LENGTHS = (12, 7, 15)
# ep0 cut in two, ep1 whole, ep2's second range runs past its end (cut to it, as the loader does)
KEEP = {0: [[2, 6], [8, 12]], 2: [[0, 5], [10, 40]]}
PARTS = [(0, 2, 6), (0, 8, 12), (1, 0, 7), (2, 0, 5), (2, 10, 15)]
NUMERIC = ("state.eef_pos", "state.eef_rot", "action.eef_pos", "extra.reward", "extra.grid", "extra.is_first")


@pytest.fixture(scope="module")
def view(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    src, eps = make_dataset(root / "src", lengths=LENGTHS, size=(32, 24))
    ids = [e.episode_id for e in eps]
    keep = "".join(f"\n      {ids[i]}: {r}" for i, r in KEEP.items())
    path = root / "view.yaml"
    path.write_text(f"datasets:\n  - path: {src}\n    episodes: {ids}\n    keep_steps:{keep}\n")
    ds = wamdata.open_dataset(src)
    stored = {e: ds.episode(e) for e in ids}
    return str(path), ids, stored


def _want(stored, ids, name):
    """The source dataset's values of ``name`` at the kept steps, one array per exported episode."""
    return [stored[ids[i]].array(name)[a:b] for i, a, b in PARTS]


def test_lerobot_holds_the_kept_steps(view, tmp_path):
    path, ids, stored = view
    out = export_lerobot(path, str(tmp_path / "lr"), video_files_size_in_mb=0.003, progress=False)
    info = json.load(open(f"{out}/meta/info.json"))
    assert info["total_episodes"] == len(PARTS) and info["total_frames"] == sum(b - a for _, a, b in PARTS)
    # the cut ranges are re-encoded (a range need not start at a key frame); the whole episode is copied
    assert info["wamdata"]["reencoded_episodes"] == {"observation.images.exterior_1": 4, "observation.images.wrist": 4}
    rows = pq.read_table(f"{out}/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(r["wamdata/episode_id"], r["wamdata/from_step"], r["wamdata/to_step"]) for r in rows] == [
        (ids[i], a, b) for i, a, b in PARTS]
    data = [r for p in sorted(os.listdir(f"{out}/data/chunk-000"))
            for r in pq.read_table(f"{out}/data/chunk-000/{p}").to_pylist()]
    state = [np.concatenate([s, r], 1) for s, r in zip(_want(stored, ids, "state.eef_pos"), _want(stored, ids, "state.eef_rot"))]
    reward = _want(stored, ids, "extra.reward")
    key = "observation.images.wrist"
    for e, (row, (i, a, b)) in enumerate(zip(rows, PARTS)):
        frames = data[row["dataset_from_index"]:row["dataset_to_index"]]
        assert [r["episode_index"] for r in frames] == [e] * (b - a) and [r["frame_index"] for r in frames] == list(range(b - a))
        np.testing.assert_array_equal(np.array([r["observation.state"] for r in frames])[:, :7], state[e].astype(np.float32))
        np.testing.assert_array_equal([r["extra.reward"] for r in frames], reward[e])
        mp4 = f"{out}/videos/{key}/chunk-000/file-{row[f'videos/{key}/file_index']:03d}.mp4"
        start = round(row[f"videos/{key}/from_timestamp"] * FPS)
        got = video.PyAVDecoder().decode(mp4, start, start + b - a)
        assert psnr(got, stored[ids[i]].frames("wrist")[a:b]) > 35, e


def test_hf_holds_the_kept_steps(view, tmp_path):
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    path, ids, stored = view
    out = export_hf(path, str(tmp_path / "hf"), progress=False)
    d = datasets.load_dataset("parquet", data_dir=out, cache_dir=str(tmp_path / "cache"))["train"]
    assert len(d) == sum(b - a for _, a, b in PARTS)
    col = np.array(d["episode_index"])
    assert sorted(set(col.tolist())) == list(range(len(PARTS)))
    wants = {n: _want(stored, ids, n) for n in NUMERIC + ("timestamp",)}
    for e, (i, a, b) in enumerate(PARTS):
        rows = d.select(np.flatnonzero(col == e))
        assert set(rows["episode_id"]) == {ids[i]} and rows["source_step"] == list(range(a, b))
        assert rows["frame_index"] == list(range(b - a))
        for n, want in wants.items():
            flat = want[e] if want[e].ndim == 1 else want[e].reshape(b - a, -1)
            np.testing.assert_array_equal(np.array(rows[n]), flat, err_msg=n)
        frames = np.stack([np.asarray(im) for im in rows["image.exterior_1"]])
        assert psnr(frames, stored[ids[i]].frames("exterior_1")[a:b]) == float("inf")   # PNG of the decoded steps


def test_zarr_holds_the_kept_steps(view, tmp_path):
    import zarr

    path, ids, stored = view
    out = export_zarr(path, str(tmp_path / "out.zarr"), progress=False)
    root = zarr.open_group(out, mode="r", zarr_format=2)
    ends = root["meta/episode_ends"][:].tolist()
    assert ends == np.cumsum([b - a for _, a, b in PARTS]).tolist()
    attrs = root.attrs["wamdata"]
    assert attrs["episode_ids"] == [ids[i] for i, _, _ in PARTS] and attrs["episode_steps"] == [[a, b] for _, a, b in PARTS]
    starts = [0] + ends[:-1]
    for n in NUMERIC:
        for e, want in enumerate(_want(stored, ids, n)):
            np.testing.assert_array_equal(root[f"data/{n}"][starts[e]:ends[e]], want, err_msg=n)
    for e, (i, a, b) in enumerate(PARTS):
        np.testing.assert_array_equal(root["data/wrist_rgb"][starts[e]:ends[e]], stored[ids[i]].frames("wrist")[a:b])


def test_a_view_keeping_no_steps_is_refused(view, tmp_path):
    path, ids, _ = view
    src = open(path).read().split("path: ")[1].split("\n")[0]
    empty = tmp_path / "empty.yaml"
    empty.write_text(f"datasets:\n  - path: {src}\n    episodes: [{ids[1]}]\n    keep_steps: {{{ids[1]}: [[50, 60]]}}\n")
    for export in (export_lerobot, export_hf, export_zarr):
        with pytest.raises(ExportError, match="keeps no steps"):
            export(str(empty), str(tmp_path / export.__name__), progress=False)
        assert not (tmp_path / export.__name__).exists()
