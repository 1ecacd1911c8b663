"""robomimic converter and its LIBERO / RoboCasa / MimicGen presets: every mapped column against the
source arrays, the quaternion convention, frames after a real encode (LIBERO's upright), filter keys,
bad input failing its item only with a resume, the real job on 2 Ray workers and the toolkit flow."""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest

import wamdata
from converters.robomimic import Robomimic
from pipelines.executors import RayExecutor
from tests.fixtures.frames import psnr
from tests.fixtures.robomimic import LANG, write_robomimic
from tests.toolkit_flow import check_toolkit_flow
from wamdata.convert import ConvertConfig, convert
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import validate


def _run(src, out, workers=2, **options):
    cfg = ConvertConfig(source="robomimic", input=str(src), output=str(out), workers=workers, quiet=True,
                        options=options, max_failures=10)
    with RayExecutor(workers=workers) as ex:
        return convert(cfg, ex)


def _closure(q):   # Panda fingers: finger_joint1 in [0, 0.04], finger_joint2 in [-0.04, 0]
    return np.clip(1 - (q[:, :1] - q[:, 1:2]) / 0.08, 0, 1)


def _check_robot_columns(get, truth, frame_keys=("robot0_eef_pos", "robot0_eef_quat")):
    obs, a = truth["obs"], truth["actions"]
    np.testing.assert_array_equal(get("state.eef_pos"), obs[frame_keys[0]])
    np.testing.assert_array_equal(get("state.eef_rot"), obs[frame_keys[1]])
    np.testing.assert_array_equal(get("state.joint_pos"), obs["robot0_joint_pos"])
    np.testing.assert_array_equal(get("state.joint_vel"), obs["robot0_joint_vel"])
    np.testing.assert_allclose(get("state.gripper"), _closure(obs["robot0_gripper_qpos"]), rtol=0, atol=1e-12)
    # OSC_POSE: clip to [-1, 1], x 0.05 m / 0.5 rad; gripper -1 open .. +1 close
    np.testing.assert_allclose(get("action.eef_delta_pos"), np.clip(a[:, :3], -1, 1) * 0.05, rtol=0, atol=1e-15)
    np.testing.assert_allclose(get("action.eef_delta_rot"), np.clip(a[:, 3:6], -1, 1) * 0.5, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(get("action.gripper"), (a[:, 6:7] + 1) / 2)
    np.testing.assert_array_equal(get("extra.actions"), a)
    np.testing.assert_array_equal(get("extra.states"), truth["states"])
    np.testing.assert_array_equal(get("extra.obs.robot0_gripper_qpos"), obs["robot0_gripper_qpos"])
    np.testing.assert_array_equal(get("extra.obs.robot0_joint_pos_cos"), obs["robot0_joint_pos_cos"])


def test_robomimic_through_the_job_on_two_workers(tmp_path, ray_session):
    src = write_robomimic(str(tmp_path / "raw" / "lift" / "image.hdf5"), demos=3, T=[12, 15, 10])
    report = _run(tmp_path / "raw", tmp_path / "ds")
    assert report.converted == 3 and report.failed == 0
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert sorted(ds.episodes.column("episode_id").to_pylist()) == [
        f"robomimic/lift/image.hdf5:demo_{i}" for i in range(3)]
    assert ds.info["counts"]["steps"] == 37
    for name, truth in src["demos"].items():
        ep = ds.episode(f"robomimic/lift/image.hdf5:{name}")
        _check_robot_columns(ep.array, truth)
        np.testing.assert_array_equal(ep.array("extra.rewards"), truth["rewards"])
        np.testing.assert_array_equal(ep.array("extra.dones"), truth["dones"])
        np.testing.assert_array_equal(ep.array("extra.obs.object"), truth["obs"]["object"])
        np.testing.assert_array_equal(ep.array("timestamp"), np.arange(len(truth["actions"])) / 20.0)
        meta = ep.meta
        assert meta["tasks"] == ["Lift"] and meta["success"] is True and meta["action_space"] == "eef_delta"
        assert meta["embodiment"] == "panda" and meta["fps"] == 20.0
        # next_obs is obs shifted by one: only its final row (after the last action) is kept
        final = meta["metadata"]["final_next_obs"]
        np.testing.assert_array_equal(final["robot0_eef_pos"], truth["next_obs"]["robot0_eef_pos"][-1])
        assert not any(c.startswith("extra.next_obs") for c in ep.steps.column_names)
        for role in ("agentview", "wrist"):
            frames = ep.frames(role)
            assert frames.shape == truth["frames"][role].shape
            assert psnr(frames, truth["frames"][role]) > 35
        cam = meta["cameras"]["agentview"]
        np.testing.assert_array_equal(cam["intrinsics"], truth["camera_info"]["agentview"]["intrinsics"])
        np.testing.assert_array_equal(cam["extrinsics"], truth["camera_info"]["agentview"]["extrinsics"])
        assert cam["extrinsics_frame"] == "world" and cam["transforms"] == []
        wrist = meta["cameras"]["wrist"]   # moves with the gripper: its first-step pose is no extrinsics
        assert wrist["extrinsics"] is None and wrist["extrinsics_frame"] is None
        np.testing.assert_array_equal(wrist["metadata"]["extrinsics_at_first_step"],
                                      truth["camera_info"]["robot0_eye_in_hand"]["extrinsics"])
    f = ds.features
    assert (f["state.eef_pos"].unit, f["state.eef_pos"].frame) == ("m", "world")
    assert (f["state.eef_rot"].unit, f["state.eef_rot"].frame) == ("quat_xyzw", "world")
    assert f["action.eef_delta_pos"].unit == "m" and f["action.eef_delta_pos"].derived
    assert f["action.eef_delta_rot"].unit == "rad_axis_angle" and "0.5" in f["action.eef_delta_rot"].description
    assert f["state.gripper"].derived and "0.08" in f["state.gripper"].description
    check_toolkit_flow(tmp_path / "ds", tmp_path)


def _episodes(conv, path, src):
    """(validated episode, the arrays written for its demo) for every demo of a file."""
    for item in conv.discover(path):
        yield validate(conv.read(item)), src["demos"][item.info["demo"]]


def test_quaternion_is_stored_xyzw_as_robosuite_writes_it(tmp_path):
    """robosuite: robot0_eef_quat = convert_quat(body_xquat (MuJoCo wxyz), to="xyzw"). A 90 degree turn
    about z (wxyz [c, 0, 0, s]) must come out as xyzw [0, 0, s, c], rotating x onto y."""
    path = str(tmp_path / "q.hdf5")
    write_robomimic(path, demos=1, T=4)
    c = s = np.sqrt(0.5)
    xyzw = np.array([c, 0.0, 0.0, s])[[1, 2, 3, 0]]
    with h5py.File(path, "r+") as f:
        f["data/demo_0/obs/robot0_eef_quat"][...] = np.tile(xyzw, (4, 1))
    conv = Robomimic()
    q = validate(conv.read(next(conv.discover(path)))).steps["state.eef_rot"][0]
    np.testing.assert_allclose(q, [0, 0, s, c])
    x, y, z, w = q
    rot_x = [1 - 2 * (y * y + z * z), 2 * (x * y + z * w), 2 * (x * z - y * w)]   # R @ e_x for xyzw
    np.testing.assert_allclose(rot_x, [0, 1, 0], atol=1e-12)


def test_libero_upright_through_the_job(tmp_path, ray_session):
    src = write_robomimic(str(tmp_path / "raw" / "put_the_bowl_demo.hdf5"), variant="libero", demos=2, T=14)
    report = _run(tmp_path / "raw", tmp_path / "ds", preset="libero")
    assert report.converted == 2 and report.failed == 0
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    for name, truth in src["demos"].items():
        ep = ds.episode(f"robomimic/put_the_bowl_demo.hdf5:{name}")
        assert ep.meta["tasks"] == [LANG] and ep.meta["success"] is True
        for role in ("agentview", "wrist"):
            frames, want = ep.frames(role), truth["frames"][role]
            assert psnr(frames, want) > 35 and psnr(frames, want[:, ::-1]) < psnr(frames, want) - 10
            assert frames[:, :4].mean() < frames[:, -4:].mean()    # dark top, bright bottom: upright
            assert ep.meta["cameras"][role]["transforms"] == ["flip_vertical"]
        ee = truth["obs"]["ee_states"]
        np.testing.assert_array_equal(ep.array("state.eef_pos"), ee[:, :3])
        q, want = ep.array("state.eef_rot"), truth["eef_quat"]
        np.testing.assert_allclose(q * np.sign(np.sum(q * want, axis=1, keepdims=True)), want, atol=1e-12)
        np.testing.assert_array_equal(ep.array("state.joint_pos"), truth["obs"]["joint_states"])
        np.testing.assert_allclose(ep.array("state.gripper"), _closure(truth["obs"]["gripper_states"]), atol=1e-12)
        np.testing.assert_array_equal(ep.array("extra.obs.ee_states"), ee)
        np.testing.assert_array_equal(ep.array("extra.rewards"), truth["rewards"])
        np.testing.assert_allclose(ep.array("action.eef_delta_pos"), truth["actions"][:, :3] * 0.05, atol=1e-15)
    assert ds.features["state.eef_rot"].derived and ds.features["state.eef_pos"].frame == "world"
    check_toolkit_flow(tmp_path / "ds", tmp_path)


def test_libero_without_the_preset_warns_and_keeps_frames_as_stored(tmp_path, caplog):
    path = str(tmp_path / "libero.hdf5")
    src = write_robomimic(path, variant="libero", demos=1, T=5)
    with caplog.at_level(logging.WARNING, logger="converters.robomimic"):
        items = list(Robomimic().discover(path))
    assert "preset=libero" in caplog.text and path in caplog.text
    ep = validate(Robomimic().read(items[0]))
    assert ep.cameras["agentview"].transforms == [] and ep.metadata["preset"] == "none"
    got = np.stack(list(ep.cameras["agentview"].frames.iter_frames()))
    np.testing.assert_array_equal(got, src["demos"]["demo_0"]["frames"]["agentview"][:, ::-1])
    assert ep.tasks == [LANG]   # problem_info is read whatever the preset
    with pytest.raises(SourceError, match="problem_info"):
        Robomimic(preset="libero").read(next(Robomimic().discover(write_robomimic(
            str(tmp_path / "plain.hdf5"), demos=1, T=4)["path"])))


def test_robocasa_base_frame_action_layout_and_language(tmp_path):
    path = str(tmp_path / "pnp.hdf5")
    src = write_robomimic(path, variant="robocasa", demos=2, T=9)
    conv = Robomimic(preset="robocasa")
    for ep, truth in _episodes(conv, path, src):
        _check_robot_columns(lambda n: ep.steps[n], truth, ("robot0_base_to_eef_pos", "robot0_base_to_eef_quat"))
        assert ep.features["state.eef_pos"].frame == "base" and ep.features["action.eef_delta_pos"].frame == "base"
        assert ep.tasks == [truth["ep_meta"]["lang"]] and ep.metadata["ep_meta"] == truth["ep_meta"]
        assert ep.embodiment == "pandaomron" and ep.success is True
        np.testing.assert_array_equal(ep.steps["extra.obs.robot0_eef_pos"], truth["obs"]["robot0_eef_pos"])
        for k, v in truth["action_dict"].items():
            np.testing.assert_array_equal(ep.steps[f"extra.action_dict.{k}"], v)
        assert sorted(ep.cameras) == ["robot0_agentview_left", "robot0_agentview_right", "wrist"]
        for role, want in truth["frames"].items():
            np.testing.assert_array_equal(np.stack(list(ep.cameras[role].frames.iter_frames())), want)
    # ep_meta is required by the preset: its absence fails the demo, naming file and key
    with h5py.File(path, "r+") as f:
        del f["data/demo_1"].attrs["ep_meta"]
    with pytest.raises(SourceError) as e:
        conv.read(list(conv.discover(path))[1])
    assert path in str(e.value) and "data/demo_1" in str(e.value) and "ep_meta" in str(e.value)


def test_mimicgen_datagen_info_and_provenance(tmp_path):
    path = str(tmp_path / "stack_d0.hdf5")
    src = write_robomimic(path, variant="mimicgen", demos=2, T=10)
    conv = Robomimic(preset="mimicgen")
    for ep, truth in _episodes(conv, path, src):
        for k, v in truth["datagen_info"].items():
            np.testing.assert_array_equal(ep.steps["extra.datagen_info." + k.replace("/", ".")], v)
        np.testing.assert_array_equal(ep.steps["extra.src_demo_labels"], truth["src_demo_labels"])
        assert ep.metadata["provenance"]["src_demo_inds"] == truth["src_demo_inds"].tolist()
        assert ep.success is None and ep.metadata["success_from"] == "unknown: no rewards"
        np.testing.assert_array_equal(np.stack(list(ep.cameras["wrist"].frames.iter_frames())),
                                      truth["frames"]["wrist"])   # gzip-compressed images
    plain = write_robomimic(str(tmp_path / "plain.hdf5"), demos=1, T=4)["path"]
    with pytest.raises(SourceError, match="datagen_info"):
        conv.read(next(conv.discover(plain)))


def test_filter_keys_and_numeric_demo_order(tmp_path):
    path = str(tmp_path / "many.hdf5")
    write_robomimic(path, demos=11, T=3, masks={"train": [f"demo_{i}" for i in (10, 2, 0)], "valid": ["demo_1"]})
    ids = [i.info["demo"] for i in Robomimic().discover(path)]
    assert ids == [f"demo_{i}" for i in range(11)]
    assert [i.info["demo"] for i in Robomimic(filter_key="train").discover(path)] == ["demo_0", "demo_2", "demo_10"]
    items = list(Robomimic(filter_key="test").discover(path))
    assert len(items) == 1
    with pytest.raises(SourceError) as e:
        Robomimic(filter_key="test").read(items[0])
    assert path in str(e.value) and "mask/test" in str(e.value) and "train, valid" in str(e.value)
    with pytest.raises(ConfigError, match="preset"):
        Robomimic(preset="libro")


def test_unknown_scale_is_declared_normalized_and_differing_next_obs_kept(tmp_path):
    path = str(tmp_path / "f.hdf5")
    src = write_robomimic(path, demos=1, T=6)
    with h5py.File(path, "r+") as f:
        env_args = json.loads(f["data"].attrs["env_args"])
        for k in ("output_max", "output_min"):
            del env_args["env_kwargs"]["controller_configs"][k]
        f["data"].attrs["env_args"] = json.dumps(env_args)
        f["data/demo_0/next_obs/object"][0] += 1.0
    ep = validate(Robomimic().read(next(Robomimic().discover(path))))
    a = src["demos"]["demo_0"]["actions"]
    assert ep.features["action.eef_delta_pos"].unit == "normalized"
    np.testing.assert_array_equal(ep.steps["action.eef_delta_rot"], a[:, 3:6])
    want = src["demos"]["demo_0"]["next_obs"]["object"].copy()
    want[0] += 1.0
    np.testing.assert_array_equal(ep.steps["extra.next_obs.object"], want)
    assert "object" not in ep.metadata["final_next_obs"]


def test_bad_demos_fail_alone_and_a_rerun_resumes(tmp_path, ray_session):
    path = tmp_path / "raw" / "bad.hdf5"
    src = write_robomimic(str(path), demos=5, T=8, masks={"train": [f"demo_{i}" for i in (0, 1, 2, 3, 9)]})
    with h5py.File(path, "r+") as f:
        del f["data/demo_1/actions"]                                       # a missing key
        obs = f["data/demo_2/obs/robot0_eef_pos"][()]
        del f["data/demo_2/obs/robot0_eef_pos"]
        f["data/demo_2/obs/robot0_eef_pos"] = obs[:-1]                     # a wrong shape
    first = _run(tmp_path / "raw", tmp_path / "ds", filter_key="train")
    assert first.converted == 2 and first.failed == 3
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    reasons = {r["item"].rsplit(":", 1)[1]: r for r in ds.failures()}
    assert sorted(reasons) == ["demo_1", "demo_2", "demo_9"]
    assert all(str(path) in r["reason"] or str(path) == r["path"] for r in reasons.values())
    assert "data/demo_1/actions" in reasons["demo_1"]["reason"]
    assert "data/demo_2/obs/robot0_eef_pos" in reasons["demo_2"]["reason"]
    assert "data/demo_9" in reasons["demo_9"]["reason"] and "mask/train" in reasons["demo_9"]["reason"]
    for name in ("demo_0", "demo_3"):
        ep = ds.episode(f"robomimic/bad.hdf5:{name}")
        np.testing.assert_array_equal(ep.array("extra.actions"), src["demos"][name]["actions"])
    again = _run(tmp_path / "raw", tmp_path / "ds", filter_key="train")
    assert again.converted == 0 and again.failed == 0 and again.skipped == 5
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    ids = ds.episodes.column("episode_id").to_pylist()
    assert len(ids) == len(set(ids)) == 2 and len(ds.failures()) == 3
