"""ManiSkill 3 trajectories: every mapped column against the arrays written (obs_mode none with flat
and nested env_states, rgb+depth with sensor params), the T / T + 1 alignment, length from the actions
(not the truncated flag), camera calibration, conversion on 2 Ray workers with frames within PSNR,
bad trajectories failing alone naming file and key, resume, and the toolkit flow."""

from __future__ import annotations

import json

import numpy as np
import pytest

import wamdata
from converters.maniskill import ManiSkill
from pipelines.executors import RayExecutor
from tests.fixtures.frames import psnr
from tests.fixtures.maniskill import write_maniskill
from tests.toolkit_flow import check_toolkit_flow
from wamdata.convert import ConvertConfig, convert
from wamdata.errors import SourceError
from wamdata.schema import validate


def _run(src, out, **kw):
    cfg = ConvertConfig(source="maniskill", input=str(src), output=str(out), workers=2, quiet=True, **kw)
    with RayExecutor(workers=2) as ex:
        return convert(cfg, ex)


def _scale(a, low, high):
    return low + (np.clip(a.astype(np.float64), -1, 1) + 1) / 2 * (high - low)


def _rodrigues(r):
    """Rotation vectors (T, 3) -> matrices, independently of the converter's helpers."""
    out = []
    for v in r:
        th = np.linalg.norm(v)
        k = v / th if th > 0 else np.zeros(3)
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        out.append(np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K)
    return np.stack(out)


def _xyz_intrinsic(e):
    """R = Rx(a) Ry(b) Rz(c), pytorch3d's euler_angles_to_matrix(e, "XYZ") as ManiSkill applies it."""
    out = []
    for a, b, c in e:
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
        rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
        out.append(rx @ ry @ rz)
    return np.stack(out)


def _check_common(get, src, T):
    """What every flavour converts: raw actions, flags, env_states rows 0..T-1."""
    np.testing.assert_array_equal(get("extra.actions"), src["actions"])
    for name, col in (("terminated", "meta.terminated"), ("truncated", "meta.truncated"), ("success", "meta.success"),
                      ("fail", "meta.fail"), ("rewards", "meta.reward")):
        np.testing.assert_array_equal(get(col), src[name])
    for name, values in src.items():
        if name.startswith("env_states"):
            np.testing.assert_array_equal(get("extra." + name.replace("/", ".")), values[:T])


def _check_rgbd(get, src, T):
    a = src["actions"]
    qpos, qvel = src["obs/agent/qpos"], src["obs/agent/qvel"]
    np.testing.assert_array_equal(get("state.joint_pos"), qpos[:T, :7])
    np.testing.assert_array_equal(get("state.joint_vel"), qvel[:T, :7])
    np.testing.assert_array_equal(get("state.gripper")[:, 0],
                                  np.clip(1 - (qpos[:T, 7].astype(np.float64) + qpos[:T, 8]) / 0.08, 0, 1))
    np.testing.assert_array_equal(get("action.eef_delta_pos"), _scale(a[:, :3], -0.1, 0.1))
    rot = a[:, 3:6].astype(np.float64)
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    rot = np.where(norm > 1, rot / norm, rot) * 0.1
    np.testing.assert_allclose(_rodrigues(get("action.eef_delta_rot")), _xyz_intrinsic(rot), atol=1e-12)
    target = _scale(a[:, 6], -0.01, 0.04)
    np.testing.assert_array_equal(get("action.gripper")[:, 0], np.clip(1 - target / 0.04, 0, 1))
    for name, values in src.items():
        if name.startswith("obs/") and not name.endswith("/rgb"):
            np.testing.assert_array_equal(get("extra." + name.replace("/", ".")), values[:T])


@pytest.mark.parametrize("flavour", ["none_flat", "none_nested", "rgbd"])
def test_every_column_the_alignment_and_length_from_actions(tmp_path, flavour):
    written = write_maniskill(str(tmp_path / "trajectory.h5"), flavour)
    conv = ManiSkill()
    items = list(conv.discover(str(tmp_path)))
    assert [i.id for i in items] == [f"maniskill/trajectory.h5:traj_{n}" for n in range(3)]
    for item in items:
        ep = validate(conv.read(item))
        src = written[item.info["traj"]]
        T = len(src["actions"])
        # length from the actions: traj_1's truncated is true from step 2, the recording goes on
        assert ep.num_steps == T == item.info["episode"]["elapsed_steps"]
        if item.index == 1:
            assert src["truncated"][2] and ep.num_steps > 3
        np.testing.assert_array_equal(ep.steps["timestamp"], np.arange(T) / 20.0)
        _check_common(ep.steps.__getitem__, src, T)
        # obs[T] / env_states[T] (after the last action) is not a step: kept in metadata
        final = ep.metadata["final_obs"]
        assert set(final) == {n for n in src if n.startswith(("obs/", "env_states"))} - {
            n for n in src if n.endswith("/rgb")}
        for name, values in final.items():
            np.testing.assert_array_equal(values, src[name][T])
        assert ep.tasks == ["PickCube-v1"] and ep.success is True and ep.family == "sim"
        assert ep.metadata["episode"]["episode_seed"] == 100 + item.index
    if flavour == "none_flat":   # the json names no robot, the flat state no articulation: raw actions only
        assert ep.action_space == "maniskill_pd_joint_pos" and ep.embodiment == "unknown"
        assert not any(n.startswith(("action.", "state.")) for n in ep.steps) and ep.cameras == {}
    elif flavour == "none_nested":   # the robot comes from env_states/articulations/panda
        assert ep.embodiment == "panda" and ep.action_space == "joint_delta" and ep.cameras == {}
        a = src["actions"]
        np.testing.assert_array_equal(ep.steps["action.joint_delta_pos"], _scale(a[:, :7], -0.1, 0.1))
        f = ep.features["action.joint_delta_pos"]
        assert (f.unit, f.encoding, f.derived) == ("rad", "delta", True) and "current qpos" in f.description
        closure = np.clip(1 - _scale(a[:, 7], -0.01, 0.04) / 0.04, 0, 1)
        np.testing.assert_array_equal(ep.steps["action.gripper"][:, 0], closure)
    else:
        assert ep.embodiment == "panda_wristcam" and ep.action_space == "eef_delta"
        _check_rgbd(ep.steps.__getitem__, src, T)
        assert sorted(ep.cameras) == ["base_camera", "wrist"]
        for role, cam in (("base_camera", "base_camera"), ("wrist", "hand_camera")):
            c = ep.cameras[role]
            np.testing.assert_array_equal(np.stack(list(c.frames.iter_frames())), src[f"obs/sensor_data/{cam}/rgb"][:T])
            np.testing.assert_array_equal(c.intrinsics, src[f"obs/sensor_param/{cam}/intrinsic_cv"][0])
            E = np.zeros((T, 4, 4))
            E[:, :3], E[:, 3, 3] = src[f"obs/sensor_param/{cam}/extrinsic_cv"][:T], 1
            want = np.linalg.inv(E)
            np.testing.assert_allclose(c.extrinsics, want[0] if cam == "base_camera" else want, atol=1e-12)
            assert c.extrinsics_frame == "world"
        # the camera pose agrees with ManiSkill's own OpenGL camera-to-world up to the axis flip
        gl = src["obs/sensor_param/hand_camera/cam2world_gl"][:T]
        np.testing.assert_allclose(ep.cameras["wrist"].extrinsics @ np.diag([1, -1, -1, 1]), gl, atol=1e-5)
        assert ep.features["extra.obs.sensor_data.hand_camera.depth"].unit == "mm"
        assert ep.metadata["final_obs_dropped"] == [f"obs/sensor_data/{c}/rgb" for c in ("base_camera", "hand_camera")]


def test_options_robot_fps_task_depth(tmp_path):
    written = write_maniskill(str(tmp_path / "flat.h5"), "none_flat", trajs=1)
    (item,) = ManiSkill().discover(str(tmp_path / "flat.h5"))
    ep = validate(ManiSkill(robot="panda", fps="10", task="pick the cube").read(item))
    a = written["traj_0"]["actions"]
    np.testing.assert_array_equal(ep.steps["action.joint_pos"], a[:, :7])   # pd_joint_pos: absolute, as recorded
    assert ep.action_space == "joint_pos" and ep.embodiment == "panda" and ep.fps == 10.0
    assert ep.tasks == ["pick the cube"] and ep.metadata["fps_source"] == "option"
    write_maniskill(str(tmp_path / "cam.h5"), "rgbd", trajs=1, env_kwargs={"sim_config": {"control_freq": 30}})
    (item,) = ManiSkill().discover(str(tmp_path / "cam.h5"))
    ep = validate(ManiSkill(depth="false").read(item))
    assert ep.fps == 30.0 and ep.metadata["fps_source"] == "env_kwargs.sim_config.control_freq"
    assert not any(n.endswith(".depth") for n in ep.steps) and len(ep.metadata["depth_dropped"]) == 2


def test_convert_on_two_workers_exact_psnr_and_flow(tmp_path, ray_session):
    for flavour in ("rgbd", "none_nested"):
        src = tmp_path / f"src_{flavour}"
        src.mkdir()
        written = write_maniskill(str(src / "trajectory.h5"), flavour)
        out = tmp_path / flavour
        report = _run(src, out)
        assert report.converted == 3 and report.failed == 0 and report.ok
        ds = wamdata.open_dataset(str(out))
        assert ds.info["counts"]["steps"] == 12 + 13 + 14
        for n in range(3):
            ep = ds.episode(f"maniskill/trajectory.h5:traj_{n}")
            truth = written[f"traj_{n}"]
            T = len(truth["actions"])
            assert ep.num_steps == T and ep.meta["tasks"] == ["PickCube-v1"] and ep.meta["success"] is True
            _check_common(ep.array, truth, T)
            if flavour == "rgbd":
                _check_rgbd(ep.array, truth, T)
                for role, cam in (("base_camera", "base_camera"), ("wrist", "hand_camera")):
                    frames = ep.frames(role)
                    assert frames.shape == (T, 48, 64, 3)
                    assert psnr(frames, truth[f"obs/sensor_data/{cam}/rgb"][:T]) > 35
                    meta = ep.meta["cameras"][role]
                    np.testing.assert_array_equal(meta["intrinsics"], truth[f"obs/sensor_param/{cam}/intrinsic_cv"][0])
                assert np.shape(ep.meta["cameras"]["wrist"]["extrinsics"]) == (T, 4, 4)
            else:
                assert ep.meta["cameras"] == {}
        check_toolkit_flow(out, tmp_path / f"flow_{flavour}")


def test_bad_trajectories_fail_alone_naming_file_and_key_and_resume(tmp_path, ray_session):
    import h5py

    src = tmp_path / "src"
    src.mkdir()
    write_maniskill(str(src / "good.h5"), "none_nested", trajs=2, T=8)
    bad = src / "bad.h5"
    write_maniskill(str(bad), "none_nested", trajs=5, T=8, seed=1)
    with h5py.File(bad, "r+") as f:
        del f["traj_1/actions"]                                                    # a missing key
        del f["traj_2/rewards"]
        f["traj_2/rewards"] = np.zeros((3,), np.float32)                           # wrong shape
        cube = f["traj_3/env_states/actors/cube"][()]
        del f["traj_3/env_states/actors/cube"]
        f["traj_3/env_states/actors/cube"] = cube[:-1]                             # T rows where T + 1 are due
    meta = json.loads((src / "bad.json").read_text())
    meta["episodes"][4]["elapsed_steps"] = 99                                      # json disagrees with the h5
    meta["episodes"].append(dict(meta["episodes"][0], episode_id=7))               # a json episode without its traj
    (src / "bad.json").write_text(json.dumps(meta))
    report = _run(src, tmp_path / "ds", max_failures=10)
    assert report.items == 8 and report.converted == 3 and report.failed == 5
    fails = {f["item"]: f for f in map(json.loads, (tmp_path / "ds" / "failures.jsonl").read_text().splitlines())}
    assert set(fails) == {f"maniskill/bad.h5:traj_{n}" for n in (1, 2, 3, 4, 7)}
    reason = {n: fails[f"maniskill/bad.h5:traj_{n}"]["reason"] for n in (1, 2, 3, 4, 7)}
    assert "traj_1/actions missing" in reason[1]
    assert "traj_2/rewards has shape (3,), want 10 rows" in reason[2]
    assert "traj_3/env_states/actors/cube has shape (11, 13), want 12 rows (T + 1" in reason[3]
    assert "'episodes[4].elapsed_steps' is 99 but traj_4/actions has 12 rows" in reason[4]
    assert "bad.json" in reason[4] and "bad.json 'episodes[5]' (episode_id 7) has no group traj_7" in reason[7]
    assert all(str(bad) in f["path"] for f in fails.values())
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert sorted(ds.episodes.column("episode_id").to_pylist()) == [
        "maniskill/bad.h5:traj_0", "maniskill/good.h5:traj_0", "maniskill/good.h5:traj_1"]
    again = _run(src, tmp_path / "ds", max_failures=10)
    assert again.converted == 0 and again.skipped == 8
    with pytest.raises(SourceError, match="traj_1/actions"):
        ManiSkill().read(next(i for i in ManiSkill().discover(str(src)) if i.id == "maniskill/bad.h5:traj_1"))
