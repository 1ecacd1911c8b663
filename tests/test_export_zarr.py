"""``wamdata export --format zarr``: the diffusion-policy ReplayBuffer layout (zarr v2, Blosc), read
back with zarr directly and through ``--source zarr_replay`` on a real local Ray; resume; refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

import wamdata
from pipelines.executors import RayExecutor
from tests.fixtures.frames import psnr
from tests.test_export_lerobot import make_dataset
from wamdata.convert import ConvertConfig, convert
from wamdata.export import ExportError, export_zarr
from wamdata.format.writer import write_dataset

LENGTHS = (6, 9, 5)
NUMERIC = ("action.eef_pos", "action.gripper", "extra.grid", "extra.is_first", "extra.reward",
           "state.eef_pos", "state.eef_rot", "state.gripper")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("zarr") / "src", lengths=LENGTHS, size=(32, 24))


def _open(out):
    import zarr

    return zarr.open_group(str(out), mode="r", zarr_format=2)


def test_replay_buffer_layout(source, tmp_path):
    src, eps = source
    out = export_zarr(src, str(tmp_path / "out.zarr"), progress=False)
    root = _open(out)
    assert root["meta/episode_ends"][:].tolist() == np.cumsum(LENGTHS).tolist()
    assert sorted(root["data"].array_keys()) == sorted(NUMERIC + ("exterior_1_rgb", "wrist_rgb"))
    zarray = json.loads((tmp_path / "out.zarr/data/wrist_rgb/.zarray").read_text())
    assert zarray["zarr_format"] == 2 and zarray["dtype"] == "|u1" and zarray["compressor"]["id"] == "blosc"
    assert root["data/wrist_rgb"].shape == (sum(LENGTHS), 24, 32, 3)
    ends = np.concatenate([[0], np.cumsum(LENGTHS)])
    for e, ep in enumerate(eps):
        a, b = ends[e], ends[e + 1]
        for name in NUMERIC:
            np.testing.assert_array_equal(root[f"data/{name}"][a:b], ep.steps[name], err_msg=name)
        truth = np.stack(list(ep.cameras["wrist"].frames.iter_frames()))
        assert psnr(root["data/wrist_rgb"][a:b], truth) > 35
    attrs = root.attrs["wamdata"]
    assert attrs["fps"] == 10 and attrs["episode_ids"] == [ep.episode_id for ep in eps]


def test_resume_after_an_interruption(source, tmp_path):
    src, _ = source
    out = tmp_path / "out.zarr"
    export_zarr(src, str(out), progress=False)
    whole = {k: _open(out)[f"data/{k}"][:] for k in ("state.eef_pos", "wrist_rgb")}
    rec = json.loads((out / ".wamdata-export/progress.json").read_text())
    # as if killed after the first episode, with part of the second already appended
    rec.update(complete=False, done=rec["done"][:1], rows=LENGTHS[0])
    (out / ".wamdata-export/progress.json").write_text(json.dumps(rec))
    export_zarr(src, str(out), progress=False)
    root = _open(out)
    assert root["meta/episode_ends"][:].tolist() == np.cumsum(LENGTHS).tolist()
    for k, v in whole.items():
        np.testing.assert_array_equal(root[f"data/{k}"][:], v)
    with pytest.raises(ExportError, match="already holds a finished zarr export"):
        export_zarr(src, str(out), progress=False)
    export_zarr(src, str(out), overwrite=True, progress=False)


def test_refuses_what_a_replay_buffer_cannot_hold(tmp_path):
    from tests.test_export_lerobot import make_episode

    eps = [make_episode(0, 5), make_episode(1, 6, cameras=("wrist",))]
    write_dataset(str(tmp_path / "mixed"), eps)
    with pytest.raises(ExportError, match="camera 'exterior_1' is missing in 1 of 2 episodes"):
        export_zarr(str(tmp_path / "mixed"), str(tmp_path / "o1"), progress=False)
    out = export_zarr(str(tmp_path / "mixed"), str(tmp_path / "o2"), cameras=["wrist"], progress=False)
    assert "exterior_1_rgb" not in _open(out)["data"]
    write_dataset(str(tmp_path / "nocam"), [make_episode(0, 5, cameras=())])
    out = export_zarr(str(tmp_path / "nocam"), str(tmp_path / "o3"), progress=False)   # no images: fine
    assert _open(out)["meta/episode_ends"][:].tolist() == [5]


def test_round_trip_through_zarr_replay(source, tmp_path, ray_session):
    src, eps = source
    out = export_zarr(src, str(tmp_path / "rt.zarr"), progress=False)
    mapping = ",".join([f"{n}:{n}" for n in NUMERIC if n.startswith(("state.", "action."))]
                       + ["wrist_rgb:camera.wrist", "exterior_1_rgb:camera.exterior_1"])
    cfg = ConvertConfig(source="zarr_replay", input=out, output=str(tmp_path / "back"), workers=2, quiet=True,
                        options={"map": mapping, "fps": "10"})
    with RayExecutor(workers=2) as ex:
        report = convert(cfg, ex)
    assert report.ok and report.converted == len(eps)
    ds = wamdata.open_dataset(str(tmp_path / "back"))
    for e, ep in enumerate(eps):
        got = ds.episode(f"zarr_replay/rt.zarr:{e:06d}")
        for name in ("state.eef_pos", "state.eef_rot", "action.gripper"):
            np.testing.assert_array_equal(got.array(name), ep.steps[name], err_msg=name)
        np.testing.assert_array_equal(got.array("extra.extra.reward"), ep.steps["extra.reward"])
        assert psnr(got.frames("wrist"), np.stack(list(ep.cameras["wrist"].frames.iter_frames()))) > 35
