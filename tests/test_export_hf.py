"""``wamdata export --format hf``: parquet shards + card, loaded by the real ``datasets`` (offline);
values exact, frames PNG (lossless over the stored video), views, resume, refusals."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests.fixtures.frames import psnr
from tests.test_export_lerobot import make_dataset
from wamdata.cli import main
from wamdata.export import ExportError, export_hf

LENGTHS = (6, 9, 5)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return make_dataset(root / "src", lengths=LENGTHS, size=(32, 24))


def _load(out, cache):
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    return datasets.load_dataset("parquet", data_dir=str(out), cache_dir=str(cache))["train"]


def test_loads_with_datasets(source, tmp_path):
    src, eps = source
    out = export_hf(src, str(tmp_path / "out"), shard_size_mb=0.01, progress=False)
    d = _load(out, tmp_path / "cache")
    assert len(d) == sum(LENGTHS)
    assert len([f for f in os.listdir(os.path.join(out, "data")) if f.endswith(".parquet")]) > 1
    import datasets

    assert isinstance(d.features["image.wrist"], datasets.Image)
    for e, ep in enumerate(eps):
        rows = d.filter(lambda r: r["episode_index"] == e)
        assert rows["episode_id"][0] == ep.episode_id and rows["frame_index"] == list(range(ep.num_steps))
        np.testing.assert_array_equal(np.array(rows["state.eef_rot"]), ep.steps["state.eef_rot"])
        np.testing.assert_array_equal(np.array(rows["extra.grid"]), ep.steps["extra.grid"].reshape(ep.num_steps, 6))
        np.testing.assert_array_equal(np.array(rows["extra.reward"], np.float32), ep.steps["extra.reward"])
        assert rows["task"][0] == ep.tasks[0]
        frames = np.stack([np.asarray(im) for im in rows["image.wrist"]])
        assert psnr(frames, np.stack(list(ep.cameras["wrist"].frames.iter_frames()))) > 35
    card = open(os.path.join(out, "README.md")).read()
    assert card.startswith("---\nconfigs:") and "`state.eef_rot`" in card and "## Provenance" in card


def test_view_resume_and_refusals(source, tmp_path):
    src, eps = source
    view = tmp_path / "view.yaml"
    view.write_text(f"datasets:\n  - path: {src}\n    episodes: [{eps[2].episode_id}, {eps[0].episode_id}]\n")
    out = tmp_path / "out"
    assert main(["export", str(view), "--format", "hf", "--output", str(out), "--quiet"]) == 0
    record = json.loads((out / ".wamdata-export/progress.json").read_text())
    assert record["complete"] and [e for s in record["done"] for e in s["episodes"]] == [eps[0].episode_id, eps[2].episode_id]
    d = _load(out, tmp_path / "cache")
    assert sorted(set(d["episode_id"])) == [eps[0].episode_id, eps[2].episode_id]
    with pytest.raises(ExportError, match="already holds a finished hf export"):
        export_hf(str(view), str(out), progress=False)
    record["complete"] = False
    first = record["done"][0]
    (out / ".wamdata-export/progress.json").write_text(json.dumps(record))
    mtime = os.path.getmtime(out / "data" / first["file"])
    export_hf(str(view), str(out), progress=False)      # an unfinished record resumes: finished shards kept
    assert os.path.getmtime(out / "data" / first["file"]) == mtime
    with pytest.raises(ExportError, match="other settings"):
        record["complete"] = False
        (out / ".wamdata-export/progress.json").write_text(json.dumps(record))
        export_hf(str(view), str(out), image_format="jpeg", progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("x")
    with pytest.raises(ExportError, match="not an export of this format"):
        export_hf(src, str(tmp_path / "other"), progress=False)
    with pytest.raises(ExportError, match="unknown camera"):
        export_hf(src, str(tmp_path / "o2"), cameras=["nope"], progress=False)
