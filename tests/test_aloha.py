"""ALOHA HDF5 converter: raw and JPEG-compressed images, joint mapping with per-arm names, sim flag,
bad files failing their item only, through discover/read and ``validate``."""

from __future__ import annotations

import os

import numpy as np
import pytest

from converters.aloha import JOINT_NAMES, Aloha
from tests.fixtures.aloha import CAMERAS, write_aloha
from wamdata.errors import SourceError
from wamdata.schema import validate

ROLES = {"cam_high": "exterior_1", "cam_low": "low", "cam_left_wrist": "wrist_left", "cam_right_wrist": "wrist_right"}


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("compress", [False, True])
def test_aloha_values_cameras_and_names(tmp_path, compress):
    written = write_aloha(str(tmp_path), episodes=3, compress=compress)
    conv = Aloha()
    items = list(conv.discover(str(tmp_path)))
    assert [os.path.basename(i.path) for i in items] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    assert len({i.id for i in items}) == 3
    for item in items:
        ep = validate(conv.read(item))
        truth = written[item.path]
        assert ep.family == "teleop" and ep.fps == 50.0 and ep.action_space == "joint_pos"
        # arm joints in rad; ALOHA's normalised grippers (0 closed .. 1 open) as canonical closure
        arms = [i for i in range(14) if i not in (6, 13)]
        np.testing.assert_array_equal(ep.steps["state.joint_pos"], truth["qpos"][:, arms])
        np.testing.assert_array_equal(ep.steps["state.joint_vel"], truth["qvel"][:, arms])
        np.testing.assert_array_equal(ep.steps["action.joint_pos"], truth["action"][:, arms])
        np.testing.assert_allclose(ep.steps["state.gripper"], 1.0 - truth["qpos"][:, [6, 13]], rtol=1e-6)
        np.testing.assert_allclose(ep.steps["action.gripper"], np.clip(1.0 - truth["action"][:, [6, 13]], 0, 1),
                                   rtol=1e-6)
        for raw, key in (("extra.qpos", "qpos"), ("extra.qvel", "qvel"), ("extra.action", "action"),
                         ("extra.effort", "effort")):
            np.testing.assert_array_equal(ep.steps[raw], truth[key])
        assert ep.features["extra.qpos"].names == JOINT_NAMES
        assert JOINT_NAMES[0] == "left_waist" and JOINT_NAMES[6] == "left_gripper" and JOINT_NAMES[13] == "right_gripper"
        assert ep.features["state.joint_pos"].names == tuple(JOINT_NAMES[i] for i in arms)
        assert ep.features["state.gripper"].names == ("left", "right")
        assert ep.features["action.joint_pos"].unit == "rad" and ep.features["state.gripper"].unit == "normalized"
        assert set(ep.cameras) == set(ROLES.values())
        for cam, role in ROLES.items():
            frames = list(ep.cameras[role].frames.iter_frames())
            assert len(frames) == ep.num_steps == 12
            assert ep.cameras[role].metadata["source_name"] == cam
            for got, want in zip(frames, truth["images"][cam]):
                if compress:
                    # JPEG q95 of the RGB arrays, channels not swapped
                    assert _psnr(got, want) > 35 and _psnr(got, want) > _psnr(got, want[..., ::-1]) + 10
                else:
                    np.testing.assert_array_equal(got, want)
        if compress:
            assert ep.steps["extra.compress_len"].shape == (12, len(CAMERAS))


def test_aloha_compressed_frames_equal_jpeg_decode(tmp_path):
    """Decoded frames are exactly cv2.imdecode of the unpadded bytes (padding and compress_len handled)."""
    import cv2
    import h5py

    write_aloha(str(tmp_path), episodes=1, compress=True)
    item = next(Aloha().discover(str(tmp_path)))
    ep = Aloha().read(item)
    with h5py.File(item.path) as f:
        lens = f["compress_len"][()]
        rows = f["observations/images/cam_left_wrist"][()]
    ci = CAMERAS.index("cam_left_wrist")
    want = [cv2.imdecode(rows[t, :int(lens[ci, t])], cv2.IMREAD_COLOR) for t in range(len(rows))]
    for got, w in zip(ep.cameras["wrist_left"].frames.iter_frames(), want):
        np.testing.assert_array_equal(got, w)


def test_aloha_sim_and_options(tmp_path):
    write_aloha(str(tmp_path), episodes=1, sim=True, cameras=("top",))
    conv = Aloha(fps="25", task="transfer the cube", jpeg_channels="bgr")
    ep = validate(conv.read(next(conv.discover(str(tmp_path)))))
    assert ep.family == "sim" and ep.fps == 25.0 and ep.tasks == ["transfer the cube"]
    assert list(ep.cameras) == ["exterior_1"] and ep.metadata["attrs"]["sim"] is True
    assert ep.cameras["exterior_1"].transforms == []  # raw frames: no swap even with jpeg_channels=bgr


def test_aloha_bad_files_fail_their_item_only(tmp_path):
    write_aloha(str(tmp_path), episodes=2)
    with open(tmp_path / "episode_1.hdf5", "r+b") as f:
        f.truncate(2000)
    import h5py

    with h5py.File(tmp_path / "episode_2.hdf5", "w") as f:
        f.create_dataset("action", data=np.zeros((5, 14), np.float32))  # no /observations/qpos
    conv = Aloha()
    items = list(conv.discover(str(tmp_path)))
    assert len(items) == 3
    validate(conv.read(items[0]))
    for item, words in ((items[1], "not a readable HDF5"), (items[2], "missing dataset")):
        with pytest.raises(SourceError) as e:
            conv.read(item)
        assert words in str(e.value) and item.path in str(e.value)
