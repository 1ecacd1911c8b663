"""RLDS converter: the real 25-episode Bridge shard (read in place, copied before corrupting), the
synthetic DROID-RLDS fixture with the ``droid`` preset, record CRCs and truncation, exact bytes
tensors, presets and the Euler math; one end-to-end conversion through the job, then streamed."""

from __future__ import annotations

import os
import pickle
import shutil
import struct

import cv2
import numpy as np
import pytest

from converters.rlds import RLDS
from converters.rlds_mapping import CONVERSIONS
from tests.fixtures.rlds import write_droid_rlds
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import validate
from wamdata.sources import SourceItem, get_converter

BRIDGE = os.environ.get("WAMDATA_BRIDGE", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                         "rlds", "bridge_dataset", "1.0.0"))
SHARD = "bridge_dataset-train.tfrecord-00000-of-00001"
needs_bridge = pytest.mark.skipif(not os.path.exists(os.path.join(BRIDGE, SHARD)), reason="shared Bridge data absent")


def _reference(path):
    """Independent parse of the same file with the `tfrecord` package (fine for JPEG, text, floats)."""
    import tfrecord

    return list(tfrecord.tfrecord_loader(path, None))


def _rot(q):
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _euler_matrix(r, p, y):  # extrinsic x, then y, then z: R = Rz Ry Rx
    cx, sx, cy, sy, cz, sz = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def test_euler_conversions_match_rotation_matrices():
    rng = np.random.default_rng(0)
    e = rng.uniform(-3, 3, (200, 3))
    q = CONVERSIONS["euler_xyz_to_quat"](e)
    assert np.allclose(np.linalg.norm(q, axis=1), 1) and np.all(q[:, 3] >= 0)
    for qi, ei in zip(q, e):
        assert np.allclose(_rot(qi), _euler_matrix(*ei), atol=1e-9)
    rv = CONVERSIONS["euler_xyz_to_rotvec"](e)
    for r, ei in zip(rv, e):  # Rodrigues of the rotation vector gives the same matrix
        R, _ = cv2.Rodrigues(r.reshape(3, 1))
        assert np.allclose(R, _euler_matrix(*ei), atol=1e-9)
    small = CONVERSIONS["euler_xyz_to_rotvec"](np.array([[1e-9, -2e-9, 3e-9]]))
    assert np.allclose(small, [[1e-9, -2e-9, 3e-9]], atol=1e-15)


@needs_bridge
def test_bridge_real_shard_values_language_frames():
    conv = get_converter("rlds")(preset="bridge")
    items = list(conv.discover(BRIDGE))
    assert len(items) == 25 and len({i.id for i in items}) == 25
    assert [i.index for i in items] == list(range(25)) and all(i.info["offset"] is not None for i in items)
    ref = _reference(os.path.join(BRIDGE, SHARD))
    placeholder_seen = False
    for item, r in zip(items, ref):
        ep = validate(conv.read(item))
        state = r["steps/observation/state"].reshape(-1, 7)
        action = r["steps/action"].reshape(-1, 7)
        T = len(state)
        assert ep.num_steps == T and ep.fps == 5 and ep.action_space == "eef_delta"
        assert ep.tasks == [r["steps/language_instruction"][0].decode()]
        assert ep.language[0].text == ep.tasks[0] and ep.language[0].end_s == pytest.approx(T / 5)
        np.testing.assert_array_equal(ep.steps["extra.observation.state"], state)
        np.testing.assert_array_equal(ep.steps["extra.action"], action)
        np.testing.assert_array_equal(ep.steps["state.eef_pos"], state[:, :3])
        np.testing.assert_array_equal(ep.steps["action.eef_delta_pos"], action[:, :3])
        np.testing.assert_allclose(ep.steps["state.gripper"][:, 0], np.clip(1 - state[:, 6], 0, 1), atol=1e-6)
        np.testing.assert_allclose(ep.steps["action.gripper"][:, 0], np.clip(1 - action[:, 6], 0, 1), atol=1e-6)
        for q, s in zip(ep.steps["state.eef_rot"], state):
            assert np.allclose(_rot(q.astype(np.float64)), _euler_matrix(*s[3:6].astype(np.float64)), atol=1e-5)
        assert ep.features["state.eef_rot"].derived and not ep.features["state.eef_pos"].derived
        np.testing.assert_array_equal(ep.steps["meta.is_first"], r["steps/is_first"].astype(bool))
        np.testing.assert_array_equal(ep.steps["meta.is_last"], r["steps/is_last"].astype(bool))
        np.testing.assert_array_equal(ep.steps["meta.reward"], r["steps/reward"])
        np.testing.assert_array_equal(ep.steps["extra.language_embedding"], r["steps/language_embedding"].reshape(T, 512))
        assert ep.metadata["episode_metadata"]["file_path"] == r["episode_metadata/file_path"].decode()
        assert ep.metadata["episode_metadata"]["episode_id"] == int(r["episode_metadata/episode_id"][0])
        assert set(ep.cameras) == {"exterior_1", "exterior_2", "exterior_3", "wrist"}
        for role, src in (("exterior_1", 0), ("exterior_2", 1), ("exterior_3", 2), ("wrist", 3)):
            cam = ep.cameras[role]
            frames = list(cam.frames.iter_frames())
            assert len(frames) == T and (cam.frames.height, cam.frames.width) == (64, 64)
            for got, jpeg in zip(frames, r[f"steps/observation/image_{src}"]):
                want = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                np.testing.assert_array_equal(got, want)
            blank = all(int(f.max()) == 0 for f in frames)
            assert cam.metadata["placeholder"] == blank  # image_3 is an all-black placeholder in this shard
            placeholder_seen |= blank
    assert placeholder_seen


@needs_bridge
def test_bridge_generic_mapping_keeps_every_field():
    conv = RLDS()
    ep = validate(conv.read(next(conv.discover(BRIDGE))))
    assert set(ep.cameras) == {"image_0", "image_1", "image_2", "image_3"}
    assert ep.action_space == "none" and ep.metadata["fps_source"] == "default"
    assert not any(k.startswith(("state.", "action.")) for k in ep.steps)
    assert {"extra.observation.state", "extra.action", "extra.language_embedding", "meta.is_first",
            "meta.is_last", "meta.is_terminal", "meta.reward", "meta.discount"} <= set(ep.steps)


@needs_bridge
@pytest.mark.parametrize("damage", ["data_crc", "truncate_mid_record", "drop_last_record", "length_crc"])
def test_bridge_corrupt_record_fails_only_that_item(tmp_path, damage):
    shutil.copytree(BRIDGE, tmp_path / "b")
    path = tmp_path / "b" / SHARD
    conv = RLDS(preset="bridge")
    spans = [i.info for i in conv.discover(str(tmp_path / "b"))]
    data = bytearray(path.read_bytes())
    if damage == "data_crc":
        data[spans[5]["offset"] + 12 + 100] ^= 0xFF
        bad, words = [5], "bad data CRC in record 5"
    elif damage == "length_crc":
        data[spans[20]["offset"] + 9] ^= 0xFF
        bad, words = list(range(20, 25)), "bad length CRC in record 20"
    elif damage == "truncate_mid_record":
        data = data[:spans[24]["offset"] + 5000]
        bad, words = [24], "truncated shard: record 24"
    else:
        data = data[:spans[24]["offset"]]
        bad, words = [24], "record 24 not found (shard ends after 24 whole records, dataset_info.json says 25)"
    path.write_bytes(bytes(data))
    items = list(conv.discover(str(tmp_path / "b")))
    assert len(items) == 25  # every record is an item: converted or failed, none silently lost
    for item in items:
        if item.index in bad:
            with pytest.raises(SourceError) as e:
                conv.read(item)
            assert words in str(e.value) and str(path) in str(e.value)
        else:
            validate(conv.read(item))


def test_droid_preset_on_fixture(tmp_path):
    folder, expected = write_droid_rlds(str(tmp_path))
    conv = RLDS(preset="droid")
    items = list(conv.discover(str(tmp_path)))
    assert len(items) == 5 and len({i.id for i in items}) == 5
    assert items == sorted(items, key=lambda i: (i.path, i.index))
    for item in items:
        want = expected[(os.path.basename(item.path), item.index)]
        ep = validate(conv.read(pickle.loads(pickle.dumps(item))))
        assert ep.fps == 15 and ep.embodiment == "franka_panda" and ep.action_space == "eef_abs+joint"
        assert ep.success is want["success"]
        assert ep.tasks == want["tasks"] and ep.metadata["episode_metadata"]["file_path"] == want["file_path"]
        cart, grip = want["obs/cartesian_position"], want["obs/gripper_position"]
        np.testing.assert_allclose(ep.steps["state.eef_pos"], cart[:, :3])
        assert ep.steps["state.eef_pos"].dtype == np.float64  # declared float64 in features.json
        np.testing.assert_allclose(ep.steps["state.gripper"], grip, atol=1e-7)
        np.testing.assert_array_equal(ep.steps["state.joint_pos"], want["obs/joint_position"])
        np.testing.assert_array_equal(ep.steps["action.joint_pos"], want["act/joint_position"])
        # the normalised command in rad/s, the same unit and scale as converters.droid gives the raw release
        np.testing.assert_allclose(ep.steps["action.joint_vel"], want["act/joint_velocity"] * 3.0, rtol=1e-6)
        assert ep.features["action.joint_vel"].derived
        np.testing.assert_array_equal(ep.steps["extra.action_dict.joint_velocity"], want["act/joint_velocity"])
        np.testing.assert_allclose(ep.steps["action.eef_pos"], want["act/cartesian_position"][:, :3])
        for q, e in zip(ep.steps["action.eef_rot"], want["act/cartesian_position"][:, 3:]):
            assert np.allclose(_rot(q.astype(np.float64)), _euler_matrix(*e), atol=1e-5)
        assert ep.features["state.joint_pos"].names[0] == "panda_joint1"
        # unmapped or converted fields stay under extra., exactly
        np.testing.assert_array_equal(ep.steps["extra.action"], want["action"])
        np.testing.assert_array_equal(ep.steps["extra.action_dict.cartesian_velocity"], want["act/cartesian_velocity"])
        np.testing.assert_array_equal(ep.steps["extra.observation.cartesian_position"], cart)
        assert "extra.observation.joint_position" not in ep.steps  # copied whole into state.joint_pos
        # raw float32 bytes with trailing NULs (and an all-NUL step) come back exactly
        np.testing.assert_array_equal(ep.steps["extra.observation.wrench_raw"], want["wrench_raw"])
        np.testing.assert_array_equal(ep.steps["extra.observation.zlib_tensor"], want["zlib_tensor"])
        np.testing.assert_array_equal(ep.steps["meta.is_last"], want["is_last"])
        assert {"exterior_1", "exterior_2", "wrist"} == set(ep.cameras)
        for role, src in (("exterior_1", "exterior_image_1_left"), ("wrist", "wrist_image_left")):
            for got, jpeg in zip(ep.cameras[role].frames.iter_frames(), want["jpeg"][src]):
                bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                np.testing.assert_array_equal(got, bgr[..., ::-1])
    # the tfrecord package would have lost those NUL bytes: that is why we parse Examples ourselves
    ref = _reference(os.path.join(folder, os.path.basename(items[0].path)))
    assert len(ref[0]["steps/observation/wrench_raw"][0]) == 0


def test_options_split_unknown_preset_and_item_without_offset(tmp_path):
    write_droid_rlds(str(tmp_path))
    assert list(RLDS(split="train").discover(str(tmp_path)))
    with pytest.raises(ConfigError, match="no shards of split 'val'; its splits: train"):   # a typo is not an empty dataset
        list(RLDS(split="val").discover(str(tmp_path)))
    with pytest.raises(ConfigError, match="known: bridge, droid"):
        RLDS(preset="nope")
    item = list(RLDS().discover(str(tmp_path)))[3]
    bare = SourceItem(item.id, item.path, item.index)  # rebuilt from the id alone: the record is found again
    a, b = RLDS(fps="30").read(item), RLDS(fps="30").read(bare)
    assert a.fps == 30 and a.metadata["fps_source"] == "option"
    np.testing.assert_array_equal(a.steps["extra.observation.joint_position"], b.steps["extra.observation.joint_position"])


@needs_bridge
def test_corrupt_record_through_the_job_is_recorded_and_the_rest_converted(tmp_path):
    import wamdata
    from wamdata.convert import ConvertConfig, convert

    shutil.copytree(BRIDGE, tmp_path / "b")
    path = tmp_path / "b" / SHARD
    spans = [i.info for i in RLDS(preset="bridge").discover(str(tmp_path / "b"))]
    data = bytearray(path.read_bytes())
    data[spans[5]["offset"] + 12 + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    cfg = ConvertConfig(source="rlds", input=str(tmp_path / "b"), output=str(tmp_path / "ds"),
                        options={"preset": "bridge"}, quiet=True, max_failures=1, unit_size=4)
    report = convert(cfg)
    assert (report.converted, report.failed, report.ok) == (24, 1, True)
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    (failure,) = ds.failures()
    assert "bad data CRC in record 5" in failure["reason"] and str(path) in failure["reason"] + failure["path"]
    assert len(ds) == 24 and failure["item"] not in ds.episodes.column("episode_id").to_pylist()
    assert convert(cfg).converted == 0  # a re-run neither retries nor duplicates


def test_bridge_end_to_end_with_the_job(tmp_path, ray_session):
    import wamdata
    from pipelines.executors import RayExecutor
    from tests.fixtures.frames import psnr
    from wamdata.convert import ConvertConfig, convert

    # crf 12: these 64x64 frames are mostly JPEG block noise; the default crf 18 gives 34.7-35.2 dB on them
    cfg = ConvertConfig(source="rlds", input=BRIDGE, output=str(tmp_path / "ds"), options={"preset": "bridge"},
                        workers=2, quiet=True, crf=12)
    with RayExecutor(workers=2) as ex:
        report = convert(cfg, ex)
    assert report.converted == 25 and report.failed == 0
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert len(ds) == 25
    ref = _reference(os.path.join(BRIDGE, SHARD))
    conv = RLDS(preset="bridge")
    for item, r in zip(conv.discover(BRIDGE), ref):
        ep = ds.episode(item.id)
        state = r["steps/observation/state"].reshape(-1, 7)
        np.testing.assert_array_equal(ep.array("state.eef_pos"), state[:, :3])
        np.testing.assert_array_equal(ep.array("extra.action"), r["steps/action"].reshape(-1, 7))
        assert ep.meta["tasks"] == [r["steps/language_instruction"][0].decode()]
        jpegs = [cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                 for b in r["steps/observation/image_0"]]
        assert psnr(ep.frames("exterior_1"), np.stack(jpegs)) > 35
        assert set(ep.cameras) == {"exterior_1", "exterior_2", "exterior_3", "wrist"}
        assert ep.meta["cameras"]["wrist"]["metadata"]["placeholder"]   # image_3 is blank in all 25
        assert not ep.meta["cameras"]["exterior_1"]["metadata"]["placeholder"]
    assert ds.features["state.eef_rot"].unit == "quat_xyzw" and ds.features["action.eef_delta_rot"].derived

    # The loader delivers the placeholder wrist camera as a missing one: masked, black, and the real
    # camera beside it still carries its frames.
    from wamdata.loader import WamStream

    stream = WamStream(str(tmp_path / "ds"), cameras=["exterior_1", "wrist"], history=1, future=[2], image_size=None,
                       shuffle_buffer=64, normalize=None, seed=0)
    n = 0
    for sample in stream:
        assert sample["camera_mask"].tolist() == [True, False], sample["episode_id"]
        assert not sample["frames"]["wrist"].any() and not sample["future_frames"]["wrist"].any()
        assert sample["frames"]["exterior_1"].shape == (1, 64, 64, 3)
        n += 1
    assert n == sum(ds.episode(e).meta["num_steps"] for e in ds.episodes.column("episode_id").to_pylist())
    ext = np.stack([s["frames"]["exterior_1"][0] for s in stream])
    assert ext.mean() > 20   # real views, not black


def test_contract_deterministic_discover_and_read(tmp_path):
    """Same input, same converter: same sorted unique ids and identical episodes (rlds and aloha)."""
    from converters.aloha import Aloha
    from tests.fixtures.aloha import write_aloha

    write_droid_rlds(str(tmp_path / "r"))
    write_aloha(str(tmp_path / "a"), episodes=2, compress=True)
    for conv, root in ((RLDS(preset="droid"), tmp_path / "r"), (Aloha(), tmp_path / "a")):
        a, b = list(conv.discover(str(root))), list(conv.discover(str(root)))
        assert [i.id for i in a] == [i.id for i in b] and len({i.id for i in a}) == len(a) > 0
        for x, y in zip(a, b):
            e1, e2 = validate(conv.read(x)), validate(type(conv)(**vars(conv.options)).read(y))
            assert e1.episode_id == e2.episode_id and sorted(e1.steps) == sorted(e2.steps)
            for k in e1.steps:
                np.testing.assert_array_equal(e1.steps[k], e2.steps[k])
            assert e1.tasks == e2.tasks and e1.metadata == e2.metadata and list(e1.cameras) == list(e2.cameras)
            for cam in e1.cameras:
                np.testing.assert_array_equal(np.stack(list(e1.cameras[cam].frames.iter_frames())),
                                              np.stack(list(e2.cameras[cam].frames.iter_frames())))


def test_fsspec_url_input(tmp_path):
    """A non-local fsspec URL (memory://) is discovered and read, items keep the protocol for workers."""
    import fsspec

    folder, expected = write_droid_rlds(str(tmp_path), lengths=(5, 6), shards=1)
    mem = fsspec.filesystem("memory")
    for name in os.listdir(folder):
        mem.pipe(f"/rlds_url_test/droid_100/1.0.0/{name}", open(os.path.join(folder, name), "rb").read())
    conv = RLDS(preset="droid")
    items = list(conv.discover("memory://rlds_url_test"))
    assert len(items) == 2 and all(i.path.startswith("memory://") for i in items)
    ep = validate(conv.read(items[1]))
    np.testing.assert_array_equal(ep.steps["state.joint_pos"], expected[(os.path.basename(items[1].path), 1)]["obs/joint_position"])
    mem.rm("/rlds_url_test", recursive=True)
