"""DROID raw converter: discover, exact values, Euler -> quaternion, cameras by role, every known quirk,
annotations, validate, frames, and one end-to-end conversion through the job."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from converters.droid import DroidRaw, idle_mask
from converters.rotations import euler_xyz_to_quat, pose6_to_matrix
from tests.fixtures.droid import NON_ASCII_TASK, ROLES, quat_from_euler_xyz, write_droid_tree
from tests.fixtures.frames import psnr
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import validate
from wamdata.sources import get_converter

S = np.sqrt(0.5)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_droid_tree(tmp_path_factory.mktemp("droid"), episodes=4, steps=40)


@pytest.fixture(scope="module")
def episodes(tree):
    conv = DroidRaw()
    items = {it.id: it for it in conv.discover(tree["root"])}
    return {e["id"]: (e, conv.read(items[e["id"]])) for e in tree["episodes"] if e["ok"]}


def _by_quirk(tree, quirk):
    return next(e for e in tree["episodes"] if quirk in e["quirks"])


def _item(conv, tree, e):
    return next(it for it in conv.discover(tree["root"]) if it.id == e["id"])


def test_registered_and_options():
    assert get_converter("droid") is DroidRaw and DroidRaw.family == "teleop"
    with pytest.raises(ConfigError, match="annotations"):
        DroidRaw(annotation="x.json")
    assert DroidRaw(max_trim="5").options.max_trim == 5


def test_discover_count_ids_and_determinism(tree, episodes):
    conv = DroidRaw()
    ids = [it.id for it in conv.discover(tree["root"])]
    assert ids == [e["id"] for e in tree["episodes"]] == sorted(ids)
    assert len(ids) == 6 and len(set(ids)) == 6
    assert ids == [it.id for it in DroidRaw().discover(tree["root"] + "/")]
    # any folder under which episodes live; ids stay relative to the root given
    lab = [it.id for it in conv.discover(os.path.join(tree["root"], "IRIS"))]
    assert lab == ["droid/" + i.split("/", 2)[2] for i in ids if i.startswith("droid/IRIS/")]
    one = next(iter(tree["episodes"]))
    assert [it.path for it in conv.discover(one["path"])] == [one["path"]]
    # a plain path is a path, whatever it contains ("::" would chain URLs in fsspec), and normalised
    odd = os.path.join(os.path.dirname(tree["root"]), "raw::copy")
    os.symlink(tree["root"], odd)
    assert [it.id for it in conv.discover(odd)] == ids
    ok = next(e for e in tree["episodes"] if e["ok"])
    read = conv.read(next(it for it in conv.discover(odd) if it.id == ok["id"]))
    np.testing.assert_array_equal(read.steps["state.eef_pos"], episodes[ok["id"]][1].steps["state.eef_pos"])
    assert [it.path for it in conv.discover(os.path.join(tree["root"], "IRIS", ".."))] == \
        [it.path for it in conv.discover(tree["root"])]


def test_values_roundtrip_exactly(episodes):
    assert len(episodes) == 4
    for e, ep in episodes.values():
        T, v = e["steps"], e["values"]
        assert ep.num_steps == T
        for name in ("state.eef_pos", "action.eef_pos", "state.joint_pos", "state.joint_vel", "action.joint_pos",
                     "action.joint_vel", "timestamp"):
            np.testing.assert_array_equal(ep.steps[name], v[name][:T], err_msg=f"{e['id']} {name}")
        for name in ("state.gripper", "action.gripper"):
            assert ep.steps[name].shape == (T, 1)
            np.testing.assert_array_equal(ep.steps[name][:, 0], v[name][:T])
        for name in ("state.eef_rot", "action.eef_rot"):
            np.testing.assert_allclose(ep.steps[name], v[name][:T], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(ep.steps["extra.action.joint_velocity"], v["action.joint_velocity"][:T])
        np.testing.assert_array_equal(ep.steps["extra.action.cartesian_velocity"], v["action.cartesian_velocity"][:T])
        np.testing.assert_array_equal(ep.steps["extra.idle"], v["idle"][:T])
        assert ep.steps["timestamp"].dtype == np.float64 and ep.fps == 15.0
        assert ep.features["action.joint_vel"].derived and ep.features["extra.idle"].derived
        assert ep.features["state.eef_rot"].unit == "quat_xyzw" and ep.features["state.joint_pos"].names[0] == "panda_joint1"
        assert ep.action_space == "eef_abs+joint" and ep.family == "teleop" and ep.source == "droid"
        assert ep.episode_id == e["id"] and ep.success is e["success"] and ep.tasks == [e["task"]]
        md = ep.metadata
        assert (md["lab"], md["uuid"], md["building"], md["droid_version"]) == (e["lab"], e["uuid"], "Main Hall", "1.3")
        assert isinstance(md["scene_id"], int) and 1000 <= md["scene_id"] < 1010
        assert md["date"] == e["id"].split("/")[3] and md["user"].startswith("user")
        assert md["camera_serials"] == e["serials"]
        json.dumps(md, ensure_ascii=False)  # metadata is JSON-safe (numpy attrs converted)
        validate(ep)


def test_euler_xyz_to_quaternion_against_known_rotations():
    np.testing.assert_allclose(euler_xyz_to_quat([np.pi / 2, 0, 0]), [S, 0, 0, S], atol=1e-15)
    np.testing.assert_allclose(euler_xyz_to_quat([0, np.pi / 2, 0]), [0, S, 0, S], atol=1e-15)
    np.testing.assert_allclose(euler_xyz_to_quat([0, 0, np.pi / 2]), [0, 0, S, S], atol=1e-15)
    # extrinsic x then z, both 90 deg: R = Rz Rx maps x -> y, y -> z, z -> x (120 deg about (1,1,1))
    np.testing.assert_allclose(euler_xyz_to_quat([np.pi / 2, 0, np.pi / 2]), [0.5, 0.5, 0.5, 0.5], atol=1e-15)
    m = pose6_to_matrix([1.0, 2.0, 3.0, np.pi / 2, 0, np.pi / 2])
    np.testing.assert_allclose(m, [[0, 0, 1, 1], [1, 0, 0, 2], [0, 1, 0, 3], [0, 0, 0, 1]], atol=1e-15)
    # random angles: quaternion == reference product qz*qy*qx, matrix == Rz(c) @ Ry(b) @ Rx(a)
    rng = np.random.default_rng(0)
    e = rng.uniform(-np.pi, np.pi, (50, 3))
    np.testing.assert_allclose(euler_xyz_to_quat(e), quat_from_euler_xyz(e), atol=1e-12)
    for a, b, c in e[:10]:
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
        np.testing.assert_allclose(pose6_to_matrix([0, 0, 0, a, b, c])[:3, :3], rz @ ry @ rx, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(euler_xyz_to_quat(e), axis=-1), 1.0, atol=1e-12)


def test_idle_mask_runs():
    v = np.cumsum(np.ones((30, 2)), axis=0)  # changes of 1 everywhere
    v[5:12] = v[5]  # 7 still steps -> idle
    v[20:26] = v[20]  # 6 still steps -> not idle
    idle = idle_mask(v)
    assert idle[5:12].all() and idle.sum() == 7
    assert not idle_mask(np.zeros((6, 7))).any() and idle_mask(np.zeros((7, 7))).all()


def test_cameras_by_role_frames_and_calibration(tree, episodes):
    for e, ep in episodes.values():
        assert sorted(ep.cameras) == sorted(ROLES)
        T = e["steps"]
        for role, cam in ep.cameras.items():
            assert cam.frames.num_frames == T and cam.frames.codec == "mpeg4"
            assert cam.frames.path.endswith(f"recordings/MP4/{e['serials'][role]}.mp4")  # never the -stereo file
            assert (cam.frames.width, cam.frames.height) == (128, 96) and cam.fps == 15.0
            assert cam.metadata["serial"] == e["serials"][role] and cam.metadata["stereo_file_present"]
            np.testing.assert_array_equal(cam.intrinsics, e["calib"][role]["intrinsics"])
        ext = e["calib"]
        assert ep.cameras["wrist"].extrinsics.shape == (T, 4, 4)  # the wrist camera moves with the gripper
        np.testing.assert_allclose(ep.cameras["wrist"].extrinsics, pose6_to_matrix(ext["wrist"]["extrinsics"][:T]))
        for role in ("exterior_1", "exterior_2"):
            assert ep.cameras[role].extrinsics.shape == (4, 4)
            np.testing.assert_allclose(ep.cameras[role].extrinsics, pose6_to_matrix(ext[role]["extrinsics"][0]))
            np.testing.assert_array_equal(ep.steps[f"extra.camera_extrinsics.{role}_left"], ext[role]["extrinsics"][:T])


def test_frames_equal_decoded_source_frames(episodes):
    import av

    from wamdata.format.video import to_rgb

    e, ep = next(iter(episodes.values()))
    for role, cam in ep.cameras.items():
        with av.open(cam.frames.path) as c:
            ref = np.stack([to_rgb(f) for f in c.decode(video=0)])
        got = np.stack(list(cam.frames.iter_frames()))
        np.testing.assert_array_equal(got, ref)
        assert psnr(got, e["frames"][role]) > 35  # the fixture's MPEG-4 is close to the generated frames


def test_short_mp4_trims_steps_and_cameras(episodes, tree):
    e = _by_quirk(tree, "short_mp4")
    ep = episodes[e["id"]][1]
    assert ep.num_steps == e["h5_steps"] - 1 and ep.metadata["trimmed_steps"] == 1 and ep.metadata["h5_steps"] == 40
    assert all(c.frames.num_frames == ep.num_steps for c in ep.cameras.values())
    assert ep.cameras["exterior_1"].metadata["source_frames"] == 40
    assert len(list(ep.cameras["exterior_1"].frames.iter_frames())) == ep.num_steps
    assert all(len(v) == ep.num_steps for v in ep.steps.values())
    validate(ep)
    with pytest.raises(SourceError, match="max_trim=0"):
        DroidRaw(max_trim=0).read(_item(DroidRaw(), tree, e))


def test_missing_recordings_names_the_folder(tree):
    e = _by_quirk(tree, "no_recordings")
    with pytest.raises(SourceError) as err:
        DroidRaw().read(_item(DroidRaw(), tree, e))
    assert e["path"] in str(err.value) and "recordings" in str(err.value) and err.value.item_id == e["id"]


def test_truncated_h5_is_a_source_error(tree):
    e = _by_quirk(tree, "truncated_h5")
    with pytest.raises(SourceError, match="trajectory.h5: truncated") as err:
        DroidRaw().read(_item(DroidRaw(), tree, e))
    assert e["path"] in str(err.value)


def test_gripper_delta_accepted_as_gripper_velocity(episodes, tree):
    e = _by_quirk(tree, "gripper_delta")
    ep = episodes[e["id"]][1]
    np.testing.assert_array_equal(ep.steps["extra.action.gripper_velocity"], e["values"]["action.gripper_delta"])
    assert ep.metadata["gripper_velocity_source"] == "action/gripper_delta" and ep.success is False
    normal = _by_quirk(tree, "non_ascii_task")
    ep2 = episodes[normal["id"]][1]
    np.testing.assert_array_equal(ep2.steps["extra.action.gripper_velocity"], normal["values"]["action.gripper_velocity"])
    assert "gripper_velocity_source" not in ep2.metadata
    assert set(ep.features) == set(ep2.features)  # same columns whichever name the source used


def test_non_ascii_task_kept(episodes, tree):
    e = _by_quirk(tree, "non_ascii_task")
    ep = episodes[e["id"]][1]
    assert ep.tasks == [NON_ASCII_TASK] and ep.metadata["current_task"] == NON_ASCII_TASK
    assert json.loads(json.dumps(ep.metadata, ensure_ascii=False))["current_task"] == NON_ASCII_TASK


def test_stale_serials_are_not_cameras(episodes, tree):
    e = _by_quirk(tree, "stale_serials")
    ep = episodes[e["id"]][1]
    assert ep.metadata["stale_camera_serials"] == e["stale_serials"] != []
    assert sorted(ep.cameras) == sorted(ROLES)
    assert not any(s in name for s in e["stale_serials"] + list(e["serials"].values()) for name in ep.steps)
    assert "extra.timestamp.cameras.wrist_frame_received" in ep.steps
    # DROID's clocks are time_ms() stamps: their unit says so, for whoever aligns cameras by them
    assert ep.features["extra.timestamp.cameras.wrist_frame_received"].unit == "ms"
    assert ep.features["extra.timestamp.control.step_start"].unit == "ms"
    assert ep.features["extra.timestamp.skip_action"].unit is None and ep.steps["extra.timestamp.skip_action"].dtype == bool


def test_success_from_the_folder_when_metadata_and_h5_are_silent(tree, tmp_path):
    import glob

    import h5py

    e = next(x for x in tree["episodes"] if x["ok"])
    dst = os.path.join(tmp_path, os.path.relpath(e["path"], tree["root"]))
    shutil.copytree(e["path"], dst)
    meta_path = glob.glob(os.path.join(dst, "metadata_*.json"))[0]
    with open(meta_path) as f:
        meta = json.load(f)
    meta.pop("success", None)
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    with h5py.File(os.path.join(dst, "trajectory.h5"), "a") as f:
        for key in ("success", "failure"):
            f.attrs.pop(key, None)
    conv = DroidRaw()
    (item,) = list(conv.discover(str(tmp_path)))
    assert e["path"].split(os.sep)[-3] in ("success", "failure")
    assert conv.read(item).success is (e["path"].split(os.sep)[-3] == "success")


def test_annotations_option_gives_language_instructions(tree):
    conv = DroidRaw(annotations=tree["annotations"])
    for e in tree["episodes"]:
        if not e["ok"]:
            continue
        ep = conv.read(_item(conv, tree, e))
        assert ep.tasks == (e["tasks_annotated"] or [e["task"]])
        assert ep.metadata["current_task"] == e["task"]
    # a mistyped path is a usage error before any item is read (not one failure per item)
    with pytest.raises(ConfigError, match="annotations=.*nope.json: no such file"):
        DroidRaw(annotations=tree["root"] + "/nope.json")


def test_missing_camera_file_and_missing_metadata_json(tmp_path):
    small = write_droid_tree(tmp_path / "src", episodes=1, steps=12, quirks=False)
    e = small["episodes"][0]
    conv = DroidRaw()
    # no metadata json: roles from observation/camera_type (0 = wrist; exteriors by sorted serial)
    meta = [f for f in os.listdir(e["path"]) if f.startswith("metadata_")][0]
    shutil.move(os.path.join(e["path"], meta), tmp_path / meta)
    item = next(iter(conv.discover(small["root"])))
    assert item.id == e["id"]  # still discovered by its trajectory.h5
    ep = conv.read(item)
    assert ep.metadata["camera_serials"] == e["serials"] and ep.success is True and ep.tasks == [e["task"]]
    assert ep.metadata["lab"] == "AUTOLab" and ep.metadata["date"] == "2023-07-07"
    validate(ep)
    os.remove(os.path.join(e["path"], "recordings", "MP4", e["serials"]["exterior_2"] + ".mp4"))
    with pytest.raises(SourceError, match=f"recordings/MP4/{e['serials']['exterior_2']}.mp4"):
        conv.read(item)


def _convert_on_ray(tree, out, workers):
    import wamdata
    from pipelines.executors import RayExecutor
    from wamdata.convert import ConvertConfig, convert

    cfg = ConvertConfig(source="droid", input=tree["root"], output=str(out), workers=workers,
                        quiet=True, max_failures=2)
    with RayExecutor(workers) as ex:
        report = convert(cfg, ex)
        assert (report.converted, report.failed, report.ok) == (4, 2, True)
        again = convert(cfg, ex)  # resume: nothing left to do, nothing duplicated
    assert (again.converted, again.skipped) == (0, 6)
    return wamdata.open_dataset(str(out))


def test_end_to_end_conversion_on_ray_with_1_and_2_workers(tree, tmp_path, ray_session):
    one, two = _convert_on_ray(tree, tmp_path / "w1", 1), _convert_on_ray(tree, tmp_path / "w2", 2)
    assert sorted(one.episodes.column("episode_id").to_pylist()) == sorted(two.episodes.column("episode_id").to_pylist())
    for eid in one.episodes.column("episode_id").to_pylist():
        a, b = one.episode(eid), two.episode(eid)
        assert a.steps.equals(b.steps), eid  # every state/action/extra column, bit for bit
        for role in ROLES:
            # x264 may flip a few bits between worker processes (README), never more
            assert psnr(a.frames(role), b.frames(role)) > 45
    for ds in (one, two):
        _check_against_source(ds, tree)


def _check_against_source(ds, tree):
    failed = {f["item"]: f["reason"] for f in ds.failures()}
    assert sorted(failed) == sorted(e["id"] for e in tree["episodes"] if not e["ok"])
    assert any("truncated" in r for r in failed.values()) and any("recordings" in r for r in failed.values())
    for e in tree["episodes"]:
        if not e["ok"]:
            continue
        T, v = e["steps"], e["values"]
        stored = ds.episode(e["id"])
        assert stored.num_steps == T and stored.cameras == sorted(ROLES)
        for name in ("timestamp", "state.eef_pos", "state.joint_pos", "action.joint_pos", "action.joint_vel"):
            np.testing.assert_array_equal(stored.array(name), v[name][:T], err_msg=name)
        np.testing.assert_array_equal(stored.array("state.gripper").reshape(T), v["state.gripper"][:T])
        np.testing.assert_allclose(stored.array("state.eef_rot"), v["state.eef_rot"][:T], atol=1e-12)
        np.testing.assert_array_equal(stored.array("extra.idle").astype(bool), v["idle"][:T])
        assert stored.meta["tasks"] == [e["task"]] and stored.meta["success"] is e["success"]
        cams = stored.meta["cameras"]
        assert np.shape(cams["wrist"]["extrinsics"]) == (T, 4, 4) and np.shape(cams["exterior_1"]["extrinsics"]) == (4, 4)
        assert {cams[r]["extrinsics_frame"] for r in ROLES} == {"base"}   # DROID calibrates to the robot base
        np.testing.assert_allclose(cams["exterior_2"]["intrinsics"], e["calib"]["exterior_2"]["intrinsics"])
        for role in ROLES:
            frames = stored.frames(role)
            assert frames.shape == (T, 96, 128, 3)
            assert psnr(frames, e["frames"][role][:T]) > 35


def test_success_null_in_metadata_falls_back_to_the_h5_attr_then_the_folder(tmp_path):
    """DROID's postprocessing writes "success": null when the h5 has no attr: not an answer."""
    import h5py

    small = write_droid_tree(tmp_path / "src", episodes=1, steps=12, quirks=False)
    e = small["episodes"][0]
    meta_path = next(os.path.join(e["path"], f) for f in os.listdir(e["path"]) if f.startswith("metadata_"))
    meta = json.load(open(meta_path))
    meta["success"] = None
    json.dump(meta, open(meta_path, "w"))
    conv = DroidRaw()
    item = next(iter(conv.discover(small["root"])))
    with h5py.File(os.path.join(e["path"], "trajectory.h5"), "a") as f:
        f.attrs["success"] = False   # the h5 attr says so
    assert conv.read(item).success is False
    with h5py.File(os.path.join(e["path"], "trajectory.h5"), "a") as f:
        del f.attrs["success"]       # nothing recorded: the success/ folder decides
    assert e["success"] and "/success/" in e["path"] and conv.read(item).success is True


def test_fsspec_url_input_reads_the_same_episodes(tree, tmp_path, episodes):
    """DROID raw read from an fsspec URL (memory:// here; gs:// or s3:// in practice): the same
    ids, the same episodes as from local disk, only the files a reader needs copied (no stereo or
    SVO recordings), the copy removed once the frames are dropped; the job converts it and records
    the broken episodes as it does locally."""
    import gc
    import glob
    import tempfile

    import fsspec

    from wamdata.convert import ConvertConfig, convert

    fs = fsspec.filesystem("memory")
    fs.put(tree["root"], "/droid-src/raw", recursive=True)
    for e in (e for e in tree["episodes"] if e["ok"]):   # raw ZED recordings beside the MP4s: never fetched
        fs.pipe(f"/droid-src/raw/{os.path.relpath(e['path'], tree['root'])}/recordings/SVO/1.svo", b"unused")
    url = "memory://droid-src/raw"
    conv = DroidRaw()
    items = list(conv.discover(url))
    assert [it.id for it in items] == [e["id"] for e in tree["episodes"]]
    assert all(it.path.startswith("memory:///droid-src/raw/") for it in items)   # workers reopen the URL
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "wamdata-droid-*")))
    for it in items:
        e = next(e for e in tree["episodes"] if e["id"] == it.id)
        if not e["ok"]:
            with pytest.raises(SourceError, match=re.escape(it.path)) as err:
                conv.read(it)
            assert "wamdata-droid-" not in str(err.value), "names the deleted temporary copy"
            continue
        ep = conv.read(it)
        local = episodes[it.id][1]
        assert sorted(ep.steps) == sorted(local.steps)
        for name in ep.steps:
            np.testing.assert_array_equal(ep.steps[name], local.steps[name], err_msg=name)
        assert ep.metadata["droid"] == local.metadata["droid"] and ep.tasks == local.tasks
        staged = os.path.dirname(os.path.dirname(os.path.dirname(ep.cameras["wrist"].frames.path)))
        assert sorted(os.listdir(os.path.join(staged, "recordings", "MP4"))) == \
            sorted(f"{s}.mp4" for s in e["serials"].values())
        for role, cam in ep.cameras.items():
            assert cam.metadata == local.cameras[role].metadata and cam.metadata["stereo_file_present"]
            np.testing.assert_array_equal(np.stack(list(cam.frames.iter_frames())),
                                          np.stack(list(local.cameras[role].frames.iter_frames())))
        del ep, cam
        gc.collect()
        assert not os.path.exists(staged), "the staged copy outlived its episode"
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "wamdata-droid-*"))) == before

    report = convert(ConvertConfig(source="droid", input=url, output=str(tmp_path / "ds"), quiet=True,
                                   max_failures=10))
    import wamdata

    _check_against_source(wamdata.open_dataset(str(tmp_path / "ds")), tree)
    assert report.converted == sum(e["ok"] for e in tree["episodes"])
