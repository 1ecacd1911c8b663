"""``--source lerobot``: v2.0 (with published data's quirks), v2.1 and v3.0 datasets, values compared
with what the fixtures wrote; wamdata -> LeRobot v3.0 -> wamdata round trip on a real local Ray;
converted episodes through the whole toolkit (info, validate, stats, loader, export)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import wamdata
from converters.lerobot import LeRobot
from pipelines.executors import RayExecutor
from tests.fixtures.frames import psnr
from tests.fixtures.lerobot import MODALITY, write_v20, write_v21
from tests.test_export_lerobot import make_dataset
from tests.toolkit_flow import check_toolkit_flow
from wamdata.convert import ConvertConfig, convert
from wamdata.errors import ConfigError, SourceError
from wamdata.export import export_lerobot
from wamdata.schema import validate


def _read_all(root, **options):
    conv = LeRobot(**options)
    return {it.id: validate(conv.read(it)) for it in conv.discover(str(root))}


def _frames(ep, cam):
    return np.stack(list(ep.cameras[cam].frames.iter_frames()))


def _convert(src, out, **kw):
    cfg = ConvertConfig(source="lerobot", input=str(src), output=str(out), workers=2, quiet=True, **kw)
    with RayExecutor(workers=2) as ex:
        return convert(cfg, ex)


def test_v20_quirks(tmp_path):
    written = write_v20(tmp_path / "so100")
    eps = _read_all(tmp_path / "so100")
    assert list(eps) == [f"lerobot/so100/episode_{e:06d}" for e in range(3)]
    for e, truth in written.items():
        ep = eps[f"lerobot/so100/episode_{e:06d}"]
        T = len(truth["state"])
        # motor names are not canonical: kept whole under extra, names from {"motors": [...]}
        np.testing.assert_array_equal(ep.steps["extra.observation.state"], truth["state"])
        np.testing.assert_array_equal(ep.steps["extra.action"], truth["action"])
        assert ep.features["extra.observation.state"].names[0] == "shoulder_pan"
        assert ep.action_space == "unmapped" and not any(n.startswith(("state.", "action.")) for n in ep.steps)
        assert "state.gripper" in ep.metadata["unmapped"]["observation.state[5:6]"]   # named, values not 0..1
        # timestamps start at 1/fps in the file; the video's first frame is at 0: steps from 0, raw kept
        np.testing.assert_allclose(ep.steps["timestamp"], np.arange(T) / 10.0)
        np.testing.assert_array_equal(ep.steps["extra.timestamp"], truth["timestamp"])
        assert ep.tasks == [truth["task"]]
        assert ep.metadata["annotations"]["annotation.human.action.task_description"] == [truth["task"]]
        np.testing.assert_array_equal(ep.steps["extra.annotation.human.action.task_description"], truth["annotation"])
        assert ep.steps["extra.next.done"].dtype == bool and ep.steps["extra.next.done"][-1]
        # the declared wrist video has no files: reported, not fatal
        assert ep.metadata["missing_cameras"] == ["observation.images.wrist"] and set(ep.cameras) == {"front"}
        assert ep.metadata["lerobot"]["meta_files"]["modality.json"] == MODALITY
        assert ep.metadata["lerobot"]["codebase_version"] == "v2.0" and ep.embodiment == "so100"
        front = ep.cameras["front"].frames
        assert front.codec == "h264"   # no B-frames: stream-copyable
        assert psnr(_frames(ep, "front"), truth["frames"]["observation.images.front"]) > 35


def test_v20_state_map_and_modality_preset(tmp_path):
    written = write_v20(tmp_path / "so100", lengths=(8,))
    truth = written[0]
    ep, = _read_all(tmp_path / "so100", state_map="joint_pos=0:5", action_map="joint_pos=single_arm").values()
    np.testing.assert_array_equal(ep.steps["state.joint_pos"], truth["state"][:, :5])
    np.testing.assert_array_equal(ep.steps["action.joint_pos"], truth["action"][:, :5])   # via modality.json
    np.testing.assert_array_equal(ep.steps["extra.observation.state"], truth["state"])   # raw kept: not all mapped
    assert ep.features["state.joint_pos"].names[:2] == ("shoulder_pan", "shoulder_lift")
    assert ep.action_space == "joint_pos"
    preset = tmp_path / "so100_deg.yaml"
    preset.write_text(
        "embodiment: so100_arm\naction_space: joint_pos\ncameras: {exterior_1: observation.images.front}\n"
        "features:\n  state.joint_pos: {source: observation.state, modality: single_arm, scale: 0.017453292519943295}\n")
    ep, = _read_all(tmp_path / "so100", preset=str(preset)).values()
    np.testing.assert_allclose(ep.steps["state.joint_pos"], truth["state"][:, :5] * np.float32(np.pi / 180), rtol=1e-6)
    assert ep.features["state.joint_pos"].derived and ep.embodiment == "so100_arm"
    assert set(ep.cameras) == {"exterior_1"} and ep.action_space == "unmapped"   # the preset maps no action
    with pytest.raises(ConfigError, match="not canonical"):
        LeRobot(state_map="elbow=0:1")


def test_v21_names_images_and_order(tmp_path):
    written = write_v21(tmp_path / "drawer")
    eps = _read_all(tmp_path / "drawer")
    for e, truth in written.items():
        ep = eps[f"lerobot/drawer/episode_{e:06d}"]
        # canonical dimension names map; rows were stored in reverse, frame_index orders them
        np.testing.assert_array_equal(ep.steps["state.eef_pos"], truth["state"][:, :3])
        np.testing.assert_array_equal(ep.steps["state.gripper"], truth["state"][:, 3:])
        np.testing.assert_array_equal(ep.steps["action.eef_pos"], truth["action"][:, :3])
        assert "extra.observation.state" not in ep.steps and ep.features["state.eef_pos"].names == ("x", "y", "z")
        np.testing.assert_array_equal(ep.steps["extra.next.reward"], truth["reward"])
        assert ep.tasks == ["open the drawer", "close the drawer"]
        assert [s.text for s in ep.language] == ep.tasks
        assert ep.language[1].start_s == pytest.approx((len(truth["state"]) // 2) / 10.0)
        assert ep.cameras["top"].frames.codec is None   # B-frames: re-encoded, not copied
        assert psnr(_frames(ep, "top"), truth["frames"]["observation.images.top"]) > 35
        np.testing.assert_array_equal(_frames(ep, "side"), truth["frames"]["observation.images.side"])   # PNG


def test_bad_input_names_file_and_key(tmp_path):
    write_v21(tmp_path / "drawer")
    conv = LeRobot()
    items = list(conv.discover(str(tmp_path / "drawer")))
    bad = tmp_path / "drawer/data/chunk-000/episode_000001.parquet"
    bad.write_bytes(b"PAR1 broken")
    with pytest.raises(SourceError, match="episode_000001.parquet: lerobot: unreadable parquet"):
        conv.read(items[1])
    conv.read(items[0])
    info = json.loads((tmp_path / "drawer/meta/info.json").read_text())
    (tmp_path / "drawer/meta/info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(ConfigError, match="info.json: codebase_version 'v1.6'"):
        list(LeRobot().discover(str(tmp_path / "drawer")))


def test_roundtrip_v30_on_ray(tmp_path, ray_session):
    src, eps = make_dataset(tmp_path / "src", lengths=(12, 7, 15))
    lr = export_lerobot(src, str(tmp_path / "lerobot"), video_files_size_in_mb=0.004, progress=False)
    report = _convert(lr, tmp_path / "back", video_codec="copy")
    assert report.ok and report.converted == len(eps)
    ds = wamdata.open_dataset(str(tmp_path / "back"))
    assert len(ds) == len(eps)
    copied = 0
    for e, orig in enumerate(eps):
        ep = ds.episode(f"lerobot/lerobot/episode_{e:06d}")
        assert ep.meta["metadata"]["lerobot"]["codebase_version"] == "v3.0"
        for name in ("state.eef_pos", "state.eef_rot", "state.gripper", "action.eef_pos", "action.gripper"):
            np.testing.assert_array_equal(ep.array(name), orig.steps[name].astype(np.float32), err_msg=name)
        np.testing.assert_array_equal(ep.array("extra.reward"), orig.steps["extra.reward"])
        np.testing.assert_array_equal(ep.array("extra.grid").reshape(-1, 2, 3), orig.steps["extra.grid"].astype(np.float64))
        assert ep.meta["tasks"] == orig.tasks and ep.meta["action_space"] == "eef_pos+gripper"
        for cam in ("wrist", "exterior_1"):
            truth = np.stack(list(orig.cameras[cam].frames.iter_frames()))
            assert psnr(ep.frames(cam), truth) > 35
            copied += ep.meta["cameras"][cam]["stream_copied"]
    assert copied == 2 * len(eps)   # every span of the concatenated v3.0 files started on a keyframe
    check_toolkit_flow(str(tmp_path / "back"), tmp_path)


@pytest.mark.parametrize("writer", [write_v20, write_v21])
def test_through_the_toolkit(tmp_path, ray_session, writer):
    written = writer(tmp_path / "src/ds")
    report = _convert(tmp_path / "src", tmp_path / "out", video_codec="copy")
    assert report.ok and report.converted == len(written)
    again = _convert(tmp_path / "src", tmp_path / "out", video_codec="copy")   # resume: nothing to redo
    assert again.ok and len(wamdata.open_dataset(str(tmp_path / "out"))) == len(written)
    check_toolkit_flow(str(tmp_path / "out"), tmp_path)


def test_shipped_preset(tmp_path):
    truth = write_v20(tmp_path / "so100", lengths=(6,))[0]
    ep, = _read_all(tmp_path / "so100", preset="gr00t_so100").values()
    np.testing.assert_allclose(ep.steps["action.joint_pos"], truth["action"][:, :5] * np.float32(np.pi / 180), rtol=1e-6)
    assert ep.action_space == "joint_pos" and "extra.action" in ep.steps and ep.features["action.joint_pos"].derived
    with pytest.raises(ConfigError, match="lerobot: unknown preset 'nope'; known: gr00t_so100"):
        LeRobot(preset="nope")
