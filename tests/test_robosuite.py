"""Raw robosuite demonstrations: every mapped column against the source arrays (robosuite's OSC_POSE
scaling, its gripper polarity, 1.4 and 1.5 controller configs), the real shipped demos converted on 2
Ray workers exactly, bad demos failing alone with file and key named, resume, and the toolkit flow on
a dataset without cameras."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import wamdata
from converters.robosuite import Robosuite, task_from_env_name
from pipelines.executors import RayExecutor
from tests.fixtures.robosuite import write_robosuite
from tests.toolkit_flow import check_toolkit_flow
from wamdata.convert import ConvertConfig, convert
from wamdata.errors import SourceError
from wamdata.schema import validate

REAL = "/work/shared/data/robosuite"


def _run(src, out, **kw):
    cfg = ConvertConfig(source="robosuite", input=str(src), output=str(out), workers=2, quiet=True, **kw)
    with RayExecutor(workers=2) as ex:
        return convert(cfg, ex)


@pytest.mark.parametrize("controller", ["1.4", "1.5"])
def test_osc_pose_actions_states_and_metadata(tmp_path, controller):
    written = write_robosuite(str(tmp_path / "demo.hdf5"), demos=3, controller=controller)
    conv = Robosuite()
    items = list(conv.discover(str(tmp_path)))
    assert [i.info["demo"] for i in items] == ["demo_1", "demo_2", "demo_3"]
    assert len({i.id for i in items}) == 3
    for item in items:
        ep = validate(conv.read(item))
        src = written[item.info["demo"]]
        a = src["actions"]
        assert ep.num_steps == len(a) and ep.family == "sim" and ep.cameras == {}
        assert ep.fps == 20.0 and ep.metadata["fps_source"].startswith(f"data/{item.info['demo']}/states[:, 0]")
        np.testing.assert_array_equal(ep.steps["timestamp"], np.arange(len(a)) / 20.0)
        # robosuite's scale_action: clip to [-1, 1], then x0.05 m / x0.5 rad; raw teleop input overshoots
        np.testing.assert_array_equal(ep.steps["action.eef_delta_pos"], np.clip(a[:, :3], -1, 1) * 0.05)
        np.testing.assert_array_equal(ep.steps["action.eef_delta_rot"], np.clip(a[:, 3:6], -1, 1) * 0.5)
        assert np.abs(a[:, :6]).max() > 1 and np.abs(ep.steps["action.eef_delta_pos"]).max() <= 0.05
        # gripper -1 = open .. +1 = close -> closure 0 .. 1
        np.testing.assert_array_equal(ep.steps["action.gripper"][:, 0], (a[:, 6] + 1) / 2)
        np.testing.assert_array_equal(ep.steps["extra.actions"], a)
        np.testing.assert_array_equal(ep.steps["extra.states"], src["states"])
        np.testing.assert_array_equal(ep.steps["extra.joint_torques"], src["joint_torques"])
        feats = ep.features
        assert feats["action.eef_delta_pos"].unit == "m" and feats["action.eef_delta_rot"].unit == "rad_axis_angle"
        assert feats["action.eef_delta_pos"].derived and feats["action.gripper"].derived
        assert feats["action.eef_delta_pos"].frame == ("base" if controller == "1.5" else "world")
        assert feats["extra.joint_torques"].unit == "N m"
        assert ep.action_space == "eef_delta" and ep.embodiment == "panda" and ep.tasks == ["pick place can"]
        assert ep.metadata["demo_attrs"]["model_file"]["chars"] > 0   # XML digested, not copied
        assert ep.metadata["provenance"] == {"path": "demo.hdf5", "demo": f"data/{item.info['demo']}"}


def test_other_controllers_options_and_task_names(tmp_path):
    write_robosuite(str(tmp_path / "a.hdf5"), demos=1, controller="unscaled", control_freq=10)
    write_robosuite(str(tmp_path / "b.hdf5"), demos=1, controller="joint", robots=["Panda", "Sawyer"])
    (item_a,), (item_b,) = (list(Robosuite().discover(str(tmp_path / n))) for n in ("a.hdf5", "b.hdf5"))
    ep = validate(Robosuite().read(item_a))
    raw = ep.steps["extra.actions"]
    assert ep.fps == 10.0 and ep.metadata["fps_source"] == "env_info.control_freq"
    np.testing.assert_array_equal(ep.steps["action.eef_delta_pos"], raw[:, :3])   # no ranges: as recorded
    assert ep.features["action.eef_delta_pos"].unit == "normalized" and not ep.features["action.eef_delta_pos"].derived
    ep = validate(Robosuite(fps="5", embodiment="bimanual", task="stack", keep_model_xml="true").read(item_b))
    assert ep.action_space == "joint_velocity" and not any(n.startswith("action.") for n in ep.steps)
    assert ep.fps == 5.0 and ep.embodiment == "bimanual" and ep.tasks == ["stack"]
    assert ep.metadata["demo_attrs"]["model_file"].startswith("<mujoco")
    assert Robosuite().read(item_b).embodiment == "panda+sawyer"
    assert task_from_env_name("NutAssemblySquare") == "nut assembly square"
    assert task_from_env_name("TwoArmLift") == "two arm lift"


def test_real_demos_on_two_workers_exact_and_flow(tmp_path, ray_session):
    """Each real file converts on 2 workers into its own dataset: robosuite's flattened sim state and
    raw action widths differ per environment, and one dataset declares one shape per feature (mix
    environments through a manifest)."""
    import h5py

    for name, task, steps, width in (("lift", "lift", 412, 7), ("wipe", "wipe", 174, 6)):
        out = tmp_path / name
        report = _run(f"{REAL}/{name}_panda_demo.hdf5", out)
        assert report.converted == 1 and report.failed == 0 and report.ok
        ds = wamdata.open_dataset(str(out))
        ep = ds.episode(f"robosuite_{name}_panda_demo_demo_1")
        with h5py.File(f"{REAL}/{name}_panda_demo.hdf5", "r") as f:
            a, s, tq = (f[f"data/demo_1/{k}"][()] for k in ("actions", "states", "joint_torques"))
            env_info = json.loads(f["data"].attrs["env_info"])
        assert ep.num_steps == steps and a.shape == (steps, width) and ep.meta["tasks"] == [task]
        assert ep.meta["fps"] == 20.0 and ep.meta["embodiment"] == "panda" and ep.meta["cameras"] == {}
        out_max = np.asarray(env_info["controller_configs"]["output_max"])
        np.testing.assert_array_equal(ep.array("action.eef_delta_pos"), np.clip(a[:, :3], -1, 1) * out_max[:3])
        np.testing.assert_array_equal(ep.array("action.eef_delta_rot"), np.clip(a[:, 3:6], -1, 1) * out_max[3:])
        np.testing.assert_array_equal(ep.array("extra.actions"), a)
        np.testing.assert_array_equal(ep.array("extra.states"), s)
        np.testing.assert_array_equal(ep.array("extra.joint_torques"), tq)
        if width == 7:
            np.testing.assert_array_equal(ep.array("action.gripper")[:, 0], (a[:, 6] + 1) / 2)
        else:   # Wipe's wiping tool has no gripper DoF: 6-D actions, no gripper feature
            assert "action.gripper" not in ep.steps.column_names
        check_toolkit_flow(out, tmp_path / f"flow_{name}")


def test_bad_demos_fail_alone_naming_file_and_key_and_resume(tmp_path, ray_session):
    import h5py

    src = tmp_path / "src"
    src.mkdir()
    write_robosuite(str(src / "lift.hdf5"), demos=1, T=10)   # same env as bad.hdf5: one declaration per feature
    path = src / "bad.hdf5"
    write_robosuite(str(path), demos=4, T=10)
    with h5py.File(path, "r+") as f:
        del f["data/demo_2/actions"]                                        # a missing key
        states = f["data/demo_3/states"][()]
        del f["data/demo_3/states"]
        f["data/demo_3/states"] = np.concatenate([states, states[-1:]])     # T+1 states for T actions
        del f["data/demo_4/joint_torques"]
        f["data/demo_4/joint_torques"] = np.zeros(7)                        # wrong shape
    (src / "broken.hdf5").write_bytes(b"not hdf5")
    report = _run(src, tmp_path / "ds", max_failures=10)
    assert report.items == 6 and report.converted == 2 and report.failed == 4
    fails = {f["item"]: f for f in map(json.loads, (tmp_path / "ds" / "failures.jsonl").read_text().splitlines())}
    assert set(fails) == {"robosuite_bad_demo_2", "robosuite_bad_demo_3", "robosuite_bad_demo_4", "robosuite_broken"}
    assert "'data/demo_2/actions'" in fails["robosuite_bad_demo_2"]["reason"]
    rows = re.search(r"'data/demo_3/states' has (\d+) rows for (\d+) rows of 'data/demo_3/actions'",
                     fails["robosuite_bad_demo_3"]["reason"])
    assert rows and int(rows[1]) == int(rows[2]) + 1
    assert "'data/demo_4/joint_torques' has shape (7,)" in fails["robosuite_bad_demo_4"]["reason"]
    assert "not a readable HDF5" in fails["robosuite_broken"]["reason"]
    assert all(f["path"].endswith((".hdf5")) for f in fails.values())
    assert str(path) in str(fails["robosuite_bad_demo_2"]["path"])
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert sorted(ds.episodes.column("episode_id").to_pylist()) == ["robosuite_bad_demo_1", "robosuite_lift_demo_1"]
    again = _run(src, tmp_path / "ds", max_failures=10)
    assert again.converted == 0 and again.skipped == 6
    with pytest.raises(SourceError, match="data/demo_2/actions"):
        Robosuite().read(next(i for i in Robosuite().discover(str(src)) if i.id == "robosuite_bad_demo_2"))
