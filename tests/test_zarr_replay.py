"""zarr_replay: the real Push-T ReplayBuffer (zip store, read in place) and UMI-layout stores written by
tests.fixtures.zarr_replay (zip and directory, JPEG-XL frames through imagecodecs' numcodecs codec):
values round-trip exactly, frames match, axis-angle -> quaternion against hand-computed poses,
derived next-state actions, bad input failing its item with file and key named, and the real job
on 2 Ray workers followed by the whole toolkit (tests.toolkit_flow)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import wamdata
from converters.zarr_replay import ZarrReplay
from tests.fixtures.frames import psnr
from tests.fixtures.zarr_replay import write_umi
from tests.toolkit_flow import check_toolkit_flow
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import validate
from wamdata.sources import get_converter

PUSHT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "diffusion_policy",
                     "pusht_cchi_v7_replay.zarr.zip")
PUSHT_KEYS = ("action", "state", "keypoint", "n_contacts")


@pytest.fixture(scope="module")
def pusht():
    """The real store's arrays, read once with zarr itself (the ground truth)."""
    import zarr

    g = zarr.open_group(zarr.storage.ZipStore(PUSHT, mode="r"), mode="r", zarr_format=2)
    return {"ends": g["meta/episode_ends"][:], **{k: g[f"data/{k}"][:] for k in PUSHT_KEYS}}, g["data/img"]


def _pusht_img(img, start, end):
    return img[start:end].astype(np.uint8)


def _convert(src, out, options, limit=None, workers=2):
    from pipelines.executors import RayExecutor
    from wamdata.convert import ConvertConfig, convert

    cfg = ConvertConfig(source="zarr_replay", input=str(src), output=str(out), workers=workers, quiet=True,
                        options=options, limit=limit, max_failures=100)
    with RayExecutor(workers=workers) as ex:
        return convert(cfg, ex)


def test_registered_and_options():
    assert get_converter("zarr_replay") is ZarrReplay and ZarrReplay.family == "human_demo"
    for bad, words in (({"preset": "lerobot"}, "unknown preset"), ({}, "needs fps="),
                       ({"preset": "umi", "map": "img:frames"}, "map target 'frames'"),
                       ({"preset": "umi", "map": "img"}, "not key:target"),
                       ({"preset": "umi", "derive_action": "delta"}, "known: next_state")):
        with pytest.raises(ConfigError, match=words):
            ZarrReplay(**bad)


def test_pusht_discovery_reads_episode_ends_only(pusht):
    arrays, _ = pusht
    items = list(ZarrReplay(preset="pusht").discover(PUSHT))
    assert len(items) == 206 == len(arrays["ends"])
    assert [i.id for i in items] == sorted(i.id for i in items) and len({i.id for i in items}) == 206
    assert items[0].id == "zarr_replay/pusht_cchi_v7_replay.zarr.zip:000000"
    assert [i.info["end"] for i in items] == arrays["ends"].tolist()
    assert [i.info["start"] for i in items[1:]] == arrays["ends"][:-1].tolist()
    assert [i.id for i in ZarrReplay(preset="pusht").discover(os.path.dirname(PUSHT))] == [i.id for i in items]


def test_pusht_values_frames_and_declarations(pusht):
    arrays, img = pusht
    conv = ZarrReplay(preset="pusht")
    items = list(conv.discover(PUSHT))
    for item in (items[0], items[1], items[103], items[-1]):   # episodes straddle the 161-step chunks
        ep = validate(conv.read(item))
        s, e = item.info["start"], item.info["end"]
        assert ep.num_steps == e - s and ep.fps == 10.0 and ep.family == "sim" and ep.action_space == "agent_target_px"
        np.testing.assert_array_equal(ep.steps["timestamp"], np.arange(e - s) / 10.0)
        for k in PUSHT_KEYS:
            np.testing.assert_array_equal(ep.steps[f"extra.{k}"], arrays[k][s:e])
        assert not any(n.startswith(("state.", "action.")) for n in ep.steps)   # pixels are not metres
        frames = np.stack(list(ep.cameras["agentview"].frames.iter_frames()))
        np.testing.assert_array_equal(frames, _pusht_img(img, s, e))   # float32 0-255, integral: exact
    f = ep.features
    assert f["extra.action"].unit == "px" and f["extra.action"].frame == "world" and f["extra.action"].encoding == "absolute"
    assert f["extra.state"].names == ("agent_x", "agent_y", "block_x", "block_y", "block_angle")
    assert f["extra.state"].unit == "px,px,px,px,rad" and f["extra.keypoint"].unit == "px"
    assert ep.cameras["agentview"].metadata["source_dtype"] == "float32" and ep.tasks


@pytest.mark.parametrize("zipped", [True, False])
def test_umi_values_quaternions_grippers_and_cameras(tmp_path, zipped):
    w = write_umi(str(tmp_path), zipped=zipped)
    conv = ZarrReplay(preset="umi")
    items = list(conv.discover(str(tmp_path)))
    name = "dataset.zarr.zip" if zipped else "dataset.zarr"
    assert [i.id for i in items] == [f"zarr_replay/{name}:{i:06d}" for i in range(3)]
    a = w["arrays"]
    for item, (s, e) in zip(items, zip([0, *w["episode_ends"][:-1]], w["episode_ends"])):
        ep = validate(conv.read(item))
        assert ep.family == "human_demo" and ep.embodiment == "umi_bimanual" and ep.fps == 59.94
        assert ep.action_space == "none" and not any(n.startswith("action.") for n in ep.steps)
        np.testing.assert_array_equal(ep.steps["state.eef_pos"], a["robot0_eef_pos"][s:e])
        np.testing.assert_array_equal(ep.steps["extra.robot1_eef_pos"], a["robot1_eef_pos"][s:e])
        for r in ("robot0", "robot1"):
            for k in ("eef_rot_axis_angle", "gripper_width", "demo_start_pose", "demo_end_pose"):
                np.testing.assert_array_equal(ep.steps[f"extra.{r}_{k}"], a[f"{r}_{k}"][s:e])
        assert ep.steps["extra.robot0_demo_start_pose"].dtype == np.float64   # UMI's float64 pair kept
        closure = np.clip(1 - a["robot0_gripper_width"][s:e] / 0.09, 0, 1)
        np.testing.assert_allclose(ep.steps["state.gripper"], closure, atol=1e-7)
        np.testing.assert_allclose(ep.steps["extra.robot1_gripper"], np.clip(1 - a["robot1_gripper_width"][s:e] / 0.09, 0, 1),
                                   atol=1e-7)
        np.testing.assert_array_equal(ep.steps["extra.timestamp"], a["timestamp"][s:e])   # unknown key kept
        assert ep.metadata["unmapped_keys"] == ["timestamp"]
        assert set(ep.cameras) == {"wrist_right", "wrist_left"}      # camera0 = robot0 = right gripper
        for role, key in (("wrist_right", "camera0_rgb"), ("wrist_left", "camera1_rgb")):
            frames = np.stack(list(ep.cameras[role].frames.iter_frames()))
            np.testing.assert_array_equal(frames, w["images"][key][s:e])          # the JPEG-XL decode
            assert psnr(frames, w["source_images"][key][s:e]) > 35               # lossy, like UMI's
            assert ep.cameras[role].metadata["source_codec"] == "imagecodecs_jpegxl"
        f = ep.features
        assert f["state.eef_pos"].frame == "world" and f["state.eef_pos"].unit == "m"
        assert f["state.eef_rot"].derived and f["state.gripper"].derived and "0.09" in f["state.gripper"].description
        assert f["extra.robot0_gripper_width"].unit == "m"


def test_umi_axis_angle_to_quaternion_by_hand(tmp_path):
    write_umi(str(tmp_path))
    conv = ZarrReplay(preset="umi")
    q = conv.read(next(conv.discover(str(tmp_path)))).steps["state.eef_rot"][:3].astype(np.float64)
    h = np.sqrt(0.5)
    np.testing.assert_allclose(q[0], [0, 0, 0, 1], atol=1e-7)            # no rotation
    np.testing.assert_allclose(q[1], [0, 0, h, h], atol=1e-7)            # 90 deg about z: (0, 0, sin 45, cos 45)
    # 180 deg about x: (1, 0, 0, 0) — q and -q are one rotation and w is ~0, so compare up to sign
    assert abs(abs(q[2] @ np.array([1.0, 0, 0, 0])) - 1) < 1e-6


def test_umi_derive_action_next_state(tmp_path):
    w = write_umi(str(tmp_path))
    conv = ZarrReplay(preset="umi", derive_action="next_state")
    items = list(conv.discover(str(tmp_path)))
    ep = validate(conv.read(items[1]))
    assert ep.action_space == "eef_abs"
    for state, action in (("state.eef_pos", "action.eef_pos"), ("state.eef_rot", "action.eef_rot"),
                          ("state.gripper", "action.gripper"), ("extra.robot1_eef_pos", "extra.robot1_action_eef_pos"),
                          ("extra.robot1_eef_rot", "extra.robot1_action_eef_rot")):
        v, a = ep.steps[state], ep.steps[action]
        np.testing.assert_array_equal(a[:-1], v[1:])
        np.testing.assert_array_equal(a[-1], v[-1])          # the last step holds its pose
        assert ep.features[action].derived and ep.features[action].encoding == "absolute"
    s = int(w["episode_ends"][0])
    np.testing.assert_array_equal(ep.steps["action.eef_pos"][0], w["arrays"]["robot0_eef_pos"][s + 1])
    with pytest.raises(SourceError, match="nothing to derive"):
        ZarrReplay(preset="pusht", derive_action="next_state").read(next(ZarrReplay(preset="pusht").discover(PUSHT)))


def test_single_gripper_umi_and_map_option(tmp_path):
    w = write_umi(str(tmp_path), robots=1, cameras=1, extra_key=True)
    ep = validate(ZarrReplay(preset="umi").read(next(ZarrReplay(preset="umi").discover(str(tmp_path)))))
    assert list(ep.cameras) == ["wrist"] and ep.embodiment == "umi_gripper"
    assert ep.steps["state.gripper"].shape == (12, 1) and not any("robot1" in n for n in ep.steps)
    # no preset: only what map= names is mapped; the rest is extra.<key>; skip drops a key on request
    conv = ZarrReplay(fps="30", map="robot0_eef_pos:state.eef_pos,camera0_rgb:camera.wrist,timestamp:skip")
    ep = validate(conv.read(next(conv.discover(w["path"]))))
    np.testing.assert_array_equal(ep.steps["state.eef_pos"], w["arrays"]["robot0_eef_pos"][:12])
    np.testing.assert_array_equal(ep.steps["extra.robot0_eef_rot_axis_angle"], w["arrays"]["robot0_eef_rot_axis_angle"][:12])
    assert list(ep.cameras) == ["wrist"] and ep.fps == 30.0 and ep.metadata["skipped_keys"] == ["timestamp"]
    assert "extra.timestamp" not in ep.steps and "robot0_gripper_width" in ep.metadata["unmapped_keys"]


def _fails(conv, item, *words):
    with pytest.raises(SourceError) as e:
        conv.read(item)
    for word in (item.path, *words):
        assert word in str(e.value), (word, str(e.value))


def test_bad_input_fails_the_item_naming_file_and_key(tmp_path):
    conv = ZarrReplay(preset="umi")
    missing = write_umi(str(tmp_path / "a"), drop=("robot0_eef_pos",))
    for item in conv.discover(missing["path"]):
        _fails(conv, item, "data/robot0_eef_pos", "missing")
    w = write_umi(str(tmp_path / "b"), episode_ends=[12, 9, 36])            # not increasing
    items = list(conv.discover(w["path"]))
    validate(conv.read(items[0]))
    _fails(conv, items[1], "meta/episode_ends", "not increasing at episode 1")
    w = write_umi(str(tmp_path / "c"), episode_ends=[12, 21, 40])           # past the arrays' 36 steps
    items = list(conv.discover(w["path"]))
    validate(conv.read(items[1]))
    _fails(conv, items[2], "data/", "has 36 steps", "meta/episode_ends[2] = 40")
    w = write_umi(str(tmp_path / "d"), unknown_codec="umi_custom_jxl")
    _fails(conv, next(conv.discover(w["path"])), "data/camera0_rgb", "'umi_custom_jxl'", "not registered")
    w = write_umi(str(tmp_path / "e"), zipped=False)
    shutil.rmtree(os.path.join(w["path"], "meta", "episode_ends"))
    [item] = list(conv.discover(w["path"]))                                  # the store is one failed item
    _fails(conv, item, "meta/episode_ends")


def test_umi_on_two_ray_workers_with_failures_recorded_and_toolkit_flow(tmp_path, ray_session):
    src = tmp_path / "src"
    good = write_umi(str(src), name="good.zarr.zip")
    write_umi(str(src), name="bad.zarr.zip", episode_ends=[12, 21, 40], seed=1)
    report = _convert(src, tmp_path / "ds", {"preset": "umi", "derive_action": "next_state"})
    assert report.items == 6 and report.converted == 5 and report.failed == 1   # bad.zarr.zip:000002
    with open(tmp_path / "ds" / "failures.jsonl") as f:
        [fail] = [json.loads(line) for line in f]
    assert fail["item"] == "zarr_replay/bad.zarr.zip:000002" and "episode_ends[2] = 40" in fail["reason"]
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert ds.info["counts"]["steps"] == 36 + 21 and ds.features["action.eef_rot"].derived
    for i, (s, e) in enumerate(zip([0, 12, 21], good["episode_ends"])):
        ep = ds.episode(f"zarr_replay/good.zarr.zip:{i:06d}")
        np.testing.assert_array_equal(ep.array("state.eef_pos"), good["arrays"]["robot0_eef_pos"][s:e])
        np.testing.assert_array_equal(ep.array("extra.robot1_demo_end_pose"), good["arrays"]["robot1_demo_end_pose"][s:e])
        assert psnr(ep.frames("wrist_left"), good["images"]["camera1_rgb"][s:e]) > 35
    # LeRobot v3 stores an integer fps: the export refuses UMI's 59.94 Hz by name ...
    check_toolkit_flow(tmp_path / "ds", tmp_path, lerobot=False)
    from wamdata.export import ExportError
    from wamdata.export.lerobot import export_lerobot

    with pytest.raises(ExportError, match="fps 59.94 is not an integer"):
        export_lerobot(str(tmp_path / "ds"), str(tmp_path / "lr"), progress=False)
    # ... and takes it labelled at 60 Hz (--option fps=60: the steps are the same, their clock 0.1% fast)
    os.remove(src / "bad.zarr.zip")
    assert _convert(src, tmp_path / "ds60", {"preset": "umi", "derive_action": "next_state", "fps": "60"}).ok
    check_toolkit_flow(tmp_path / "ds60", tmp_path / "flow60")


def _check_pusht_dataset(path, pusht, n):
    arrays, img = pusht
    ds = wamdata.open_dataset(str(path))
    ends = arrays["ends"][:n]
    assert ds.info["counts"]["episodes"] == n and ds.info["counts"]["steps"] == int(ends[-1])
    for i, (s, e) in enumerate(zip([0, *ends[:-1]], ends)):
        ep = ds.episode(f"zarr_replay/pusht_cchi_v7_replay.zarr.zip:{i:06d}")
        for k in PUSHT_KEYS:
            np.testing.assert_array_equal(ep.array(f"extra.{k}"), arrays[k][s:e])
        if i % 10 == 0:
            assert psnr(ep.frames("agentview"), _pusht_img(img, s, e)) > 35
    assert ds.features["extra.action"].unit == "px"


def test_pusht_on_two_ray_workers_and_toolkit_flow(tmp_path, ray_session, pusht):
    report = _convert(PUSHT, tmp_path / "ds", {"preset": "pusht"}, limit=12)
    assert report.converted == 12 and report.failed == 0
    _check_pusht_dataset(tmp_path / "ds", pusht, 12)
    check_toolkit_flow(tmp_path / "ds", tmp_path)


@pytest.mark.slow
def test_pusht_whole_store_on_two_ray_workers(tmp_path, ray_session, pusht):
    report = _convert(PUSHT, tmp_path / "ds", {"preset": "pusht"})
    assert report.converted == 206 and report.failed == 0
    _check_pusht_dataset(tmp_path / "ds", pusht, 206)
