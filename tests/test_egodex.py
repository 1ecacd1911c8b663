"""EgoDex converter: camera-frame poses against a hand-computed pose, exact round trip of the HDF5
arrays, quaternion order, frames, the job on 2 Ray workers with the toolkit flow, bad input failing
its item with file and key named."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

import wamdata
from converters.egodex import KEYPOINTS, EgoDex, description, hand_joints
from pipelines.executors import RayExecutor
from tests.fixtures.egodex import JOINTS, frames_for, write_egodex, write_mp4
from tests.fixtures.frames import psnr
from tests.toolkit_flow import check_toolkit_flow
from wamdata.convert import ConvertConfig, convert
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import validate

S = np.sqrt(0.5)


def _quat_matrix(q):
    """Rotation matrix of quaternions xyzw, written out (not the converter's code)."""
    x, y, z, w = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
                     np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
                     np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], -2)


def _pose(rot, xyz):
    m = np.eye(4, dtype=np.float32)
    m[:3, :3], m[:3, 3] = rot, xyz
    return m


def test_camera_frame_against_a_hand_computed_pose(tmp_path):
    """Camera at (1, 2, 0.5) turned 90 deg about world z (its x axis is world +y). Left wrist at
    (1, 3, 0.5) turned 180 deg about z: 1 m along the camera's x, turned +90 deg about z in the camera
    frame, quaternion (0, 0, s, s). Right wrist at (1, 2, 1.5) turned 90 deg about x: 1 m along the
    camera's z, rotation Rz(-90) Rx(90) = [[0,0,-1],[-1,0,0],[0,1,0]], quaternion (.5, -.5, -.5, .5).
    Left thumb tip at (1, 2.5, 0.7): camera (0.5, 0, 0.2)."""
    written = write_egodex(str(tmp_path), tasks={"t": 1}, T=4)
    path = next(iter(written))
    rz90 = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    rz180 = [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]
    rx90 = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]
    with h5py.File(path, "r+") as f:
        f["transforms/camera"][0] = _pose(rz90, [1, 2, 0.5])
        f["transforms/leftHand"][0] = _pose(rz180, [1, 3, 0.5])
        f["transforms/rightHand"][0] = _pose(rx90, [1, 2, 1.5])
        f["transforms/leftThumbTip"][0] = _pose(np.eye(3), [1, 2.5, 0.7])
    ep = validate(EgoDex().read(next(EgoDex().discover(str(tmp_path)))))
    wrist = ep.steps["state.wrist_pose"][0]
    np.testing.assert_allclose(wrist[0], [1, 0, 0, 0, 0, S, S], atol=1e-6)
    np.testing.assert_allclose(wrist[1], [0, 0, 1, 0.5, -0.5, -0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(_quat_matrix(wrist[1, 3:]), [[0, 0, -1], [-1, 0, 0], [0, 1, 0]], atol=1e-6)
    kp = ep.steps["state.hand_keypoints"][0]
    assert KEYPOINTS[4] == "thumb_tip" and hand_joints("left")[4] == "leftThumbTip"
    np.testing.assert_allclose(kp[0, 4], [0.5, 0, 0.2], atol=1e-6)
    np.testing.assert_allclose(kp[0, 0], [1, 0, 0], atol=1e-6)    # keypoint 0 is the wrist
    np.testing.assert_allclose(kp[1, 0], [0, 0, 1], atol=1e-6)


def test_values_round_trip_exactly_and_are_declared(tmp_path):
    written = write_egodex(str(tmp_path))
    conv = EgoDex()
    items = list(conv.discover(str(tmp_path)))
    assert [i.id for i in items] == ["egodex/add_remove_lid/0", "egodex/add_remove_lid/1", "egodex/basic_pick_place/0"]
    assert len(JOINTS) == 68 and len(KEYPOINTS) == 21
    for item in items:
        ep = validate(conv.read(item))
        truth = written[item.path]
        tf = truth["transforms"]
        assert ep.family == "human_demo" and ep.fps == 30.0 and ep.action_space == "none"
        assert not [n for n in ep.steps if n.startswith("action.")]
        for j, m in tf.items():   # every joint and the camera, as recorded
            assert ep.steps[f"extra.transforms.{j}"].dtype == np.float32
            np.testing.assert_array_equal(ep.steps[f"extra.transforms.{j}"], m)
        for j, c in truth["confidences"].items():
            np.testing.assert_array_equal(ep.steps[f"extra.confidences.{j}"], c)
        inv = np.linalg.inv(tf["camera"].astype(np.float64))
        for s, side in enumerate(("left", "right")):
            wrist = inv @ tf[f"{side}Hand"].astype(np.float64)
            got = ep.steps["state.wrist_pose"][:, s]
            np.testing.assert_allclose(got[:, :3], wrist[:, :3, 3], atol=1e-6)
            np.testing.assert_allclose(_quat_matrix(got[:, 3:]), wrist[:, :3, :3], atol=1e-6)  # xyzw, w last
            assert (got[:, 6] >= 0).all()
            for k, joint in enumerate(hand_joints(side)):
                want = (inv @ tf[joint].astype(np.float64))[:, :3, 3]
                np.testing.assert_allclose(ep.steps["state.hand_keypoints"][:, s, k], want, atol=1e-6)
        cam = ep.cameras["ego"]
        np.testing.assert_array_equal(cam.intrinsics, truth["intrinsic"])
        np.testing.assert_array_equal(cam.extrinsics, tf["camera"])
        assert cam.extrinsics.shape == (12, 4, 4) and cam.transforms == [] and cam.extrinsics_frame == "world"
        frames = np.stack(list(cam.frames.iter_frames()))
        assert frames.shape == truth["frames"].shape and psnr(frames, truth["frames"]) > 35
        for t in range(1, len(frames)):   # frame t is step t, not a neighbour
            assert psnr(frames[t], truth["frames"][t]) > psnr(frames[t], truth["frames"][t - 1]) + 10
        assert ep.tasks[1] == item.path.split(os.sep)[-2].replace("_", " ")
        assert ep.metadata["attrs"]["llm_verbs"] == truth["attrs"]["llm_verbs"]
        kp, wp = ep.features["state.hand_keypoints"], ep.features["state.wrist_pose"]
        assert kp.frame == wp.frame == "camera" and kp.derived and wp.derived and kp.unit == "m"
        assert len(kp.names) == 126 and kp.names[:4] == ("left_wrist_x", "left_wrist_y", "left_wrist_z", "left_thumb_cmc_x")
        assert wp.names[3:7] == ("left_qx", "left_qy", "left_qz", "left_qw")
        assert ep.features["extra.transforms.camera"].frame == "world"
    eps = [conv.read(i) for i in items]
    assert eps[0].tasks[0] == "Put the lid on the cup." and eps[1].tasks[0] == "Take the lid off the cup."


def test_description_follows_the_active_direction():
    rev = {"llm_type": "reversible", "llm_description": "open it", "llm_description2": "close it"}
    assert description({**rev, "which_llm_description": "1"}) == "open it"
    assert description({**rev, "which_llm_description": 2}) == "close it"
    assert description({**rev, "llm_type": "basic", "which_llm_description": "2"}) == "open it"
    assert description({"description": "stack cups", "type": "basic"}) == "stack cups"
    assert description({}) == ""


def test_options_and_longer_video(tmp_path):
    written = write_egodex(str(tmp_path), tasks={"t": 1}, T=10, confidences=False)
    path = next(iter(written))
    write_mp4(path[:-5] + ".mp4", frames_for(13, 36, 64, 0))   # 3 frames more than poses: trimmed
    conv = EgoDex(transforms="none", fps="15")
    ep = validate(conv.read(next(conv.discover(str(tmp_path)))))
    assert ep.fps == 15.0 and ep.metadata["trimmed_video_frames"] == 3
    assert len(list(ep.cameras["ego"].frames.iter_frames())) == 10
    assert not [n for n in ep.steps if n.startswith("extra.")]   # no transforms kept, no confidences recorded
    with pytest.raises(ConfigError, match="transforms"):
        EgoDex(transforms="some")


def _break(root):
    """Four broken episodes next to two good ones; returns {item id: words its error must hold}."""
    with h5py.File(root / "t" / "1.hdf5", "r+") as f:
        del f["transforms/rightThumbTip"]
    write_mp4(str(root / "t" / "2.mp4"), frames_for(7, 36, 64, 0))          # 7 frames for 12 poses
    with h5py.File(root / "t" / "3.hdf5", "r+") as f:
        del f["transforms/leftHand"]
        f.create_dataset("transforms/leftHand", data=np.zeros((12, 3, 4), np.float32))
    with h5py.File(root / "t" / "4.hdf5", "r+") as f:
        del f["confidences/hip"]
        f.create_dataset("confidences/hip", data=np.zeros(11, np.float32))
    return {"egodex/t/1": ["transforms/rightThumbTip", "missing"],
            "egodex/t/2": [str(root / "t" / "2.mp4"), "7 frames", "12 poses"],
            "egodex/t/3": ["transforms/leftHand", "(12, 3, 4)", "(12, 4, 4)"],
            "egodex/t/4": ["confidences/hip", "(11,)"]}


def test_bad_input_fails_its_item_naming_file_and_key(tmp_path):
    write_egodex(str(tmp_path), tasks={"t": 6})
    expected = _break(tmp_path)
    os.remove(tmp_path / "t" / "5.mp4")
    expected["egodex/t/5"] = [str(tmp_path / "t" / "5.mp4"), "no video"]
    conv = EgoDex()
    for item in conv.discover(str(tmp_path)):
        if item.id not in expected:
            validate(conv.read(item))
            continue
        with pytest.raises(SourceError) as e:
            conv.read(item)
        assert item.path in str(e.value), str(e.value)
        for words in expected[item.id]:
            assert words in str(e.value), (words, str(e.value))


def _convert(src, out, **kw):
    cfg = ConvertConfig(source="egodex", input=str(src), output=str(out), workers=2, quiet=True, **kw)
    with RayExecutor(workers=2) as ex:
        return convert(cfg, ex)


def test_converts_on_two_ray_workers_and_flows_through_the_toolkit(tmp_path, ray_session):
    written = write_egodex(str(tmp_path / "src"))
    report = _convert(tmp_path / "src", tmp_path / "ds")
    assert report.converted == 3 and report.failed == 0 and report.ok
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert ds.info["counts"]["episodes"] == 3 and ds.info["counts"]["steps"] == 36
    assert "action.ego_motion" not in ds.features and not [n for n in ds.features if n.startswith("action.")]
    conv = EgoDex()
    for item in conv.discover(str(tmp_path / "src")):
        truth, mine, ep = written[item.path], conv.read(item), ds.episode(item.id)
        for name in ("state.wrist_pose", "state.hand_keypoints", "extra.transforms.leftIndexFingerTip",
                     "extra.confidences.rightHand", "extra.transforms.camera"):
            np.testing.assert_array_equal(ep.array(name), mine.steps[name])
        np.testing.assert_array_equal(ep.array("extra.transforms.spine3"), truth["transforms"]["spine3"])
        cam = ep.meta["cameras"]["ego"]
        np.testing.assert_array_equal(np.asarray(cam["extrinsics"], np.float32), truth["transforms"]["camera"])
        np.testing.assert_array_equal(np.asarray(cam["intrinsics"], np.float32), truth["intrinsic"])
        assert psnr(ep.frames("ego"), truth["frames"]) > 35
        assert ep.meta["action_space"] == "none" and ep.meta["tasks"] == mine.tasks
    check_toolkit_flow(tmp_path / "ds", tmp_path)


def test_job_records_bad_items_and_transcodes_to_the_resolution(tmp_path, ray_session):
    import cv2

    written = write_egodex(str(tmp_path / "src"), tasks={"t": 6})
    expected = _break(tmp_path / "src")
    report = _convert(tmp_path / "src", tmp_path / "ds", resolution=(32, 18), max_failures=4)
    assert report.converted == 2 and report.failed == 4 and report.ok
    failures = {f["item"]: f for f in wamdata.open_dataset(str(tmp_path / "ds")).failures()}
    assert sorted(failures) == sorted(expected)
    for item_id, words in expected.items():
        assert failures[item_id]["path"].endswith(item_id.split("/", 1)[1] + ".hdf5")
        for w in words:
            assert w in failures[item_id]["reason"], (w, failures[item_id])
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    for eid in ("egodex/t/0", "egodex/t/5"):
        ep = ds.episode(eid)
        frames = ep.frames("ego")
        truth = written[str(tmp_path / "src" / "t" / (eid[-1] + ".hdf5"))]
        small = np.stack([cv2.resize(f, (32, 18), interpolation=cv2.INTER_AREA) for f in truth["frames"]])
        assert frames.shape == (12, 18, 32, 3) and psnr(frames, small) > 35
        cam = ep.meta["cameras"]["ego"]
        np.testing.assert_allclose(cam["intrinsics"][0][0], truth["intrinsic"][0][0] / 2, rtol=1e-6)
        assert cam["source_size"] == [64, 36]
    assert json.loads((tmp_path / "ds" / "wamdata.json").read_text())["counts"]["episodes"] == 2


_STREAM_PROBE = """
import resource, sys, time
from converters.egodex import EgoDex
from wamdata.format.writer import VideoOptions, encode_camera
conv = EgoDex()
ep = conv.read(next(conv.discover(sys.argv[1])))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
data, info = encode_camera(ep, "ego", VideoOptions(resolution=(320, 180)))
wall = time.perf_counter() - t0
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(info["num_frames"], info["width"], info["height"], grown // 1024, round(wall, 2))
"""


@pytest.mark.slow
def test_1080p_video_is_transcoded_in_a_stream(tmp_path):
    """A real-size 1920x1080 episode transcoded to 320x180: the process grows by far less than the
    decoded video (90 frames x 6 MB = 560 MB), so frames are decoded, resized and encoded one by one."""
    import subprocess
    import sys

    write_egodex(str(tmp_path), tasks={"t": 1}, T=90, h=1080, w=1920)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", _STREAM_PROBE, str(tmp_path)], capture_output=True, text=True,
                         cwd=root, check=True).stdout.split()
    frames, w, h, grown_mb, wall = int(out[0]), int(out[1]), int(out[2]), int(out[3]), float(out[4])
    print(f"1080p -> 320x180: {frames} frames in {wall} s ({frames / wall:.1f} frames/s), peak RSS +{grown_mb} MB")
    assert (frames, w, h) == (90, 320, 180)
    assert grown_mb < 150
