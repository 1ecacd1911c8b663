"""The LeRobot v3.0 export opened by the real ``lerobot`` (0.4.x): ``LeRobotDataset(repo_id, root=DIR)``.

Needs the separate venv made by ``scripts/setup_lerobot_venv.sh`` (lerobot, torch CPU, torchcodec)::

    bash scripts/setup_lerobot_venv.sh
    HF_HUB_OFFLINE=1 .venv-lerobot/bin/python -m pytest -m lerobot tests/test_export_lerobot_interop.py

Skipped when lerobot is not importable. Videos decode with lerobot's default backend, torchcodec.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytestmark = pytest.mark.lerobot
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before lerobot / huggingface_hub are imported
lerobot_dataset = pytest.importorskip("lerobot.datasets.lerobot_dataset", reason="lerobot is not installed")

from tests.fixtures.frames import psnr  # noqa: E402
from tests.test_export_lerobot import FPS, make_dataset  # noqa: E402
from wamdata.export import export_lerobot  # noqa: E402

LENGTHS = (12, 7, 15, 9, 11, 8)
REPO = "wamdata/interop"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot_interop")
    src, eps = make_dataset(root / "src", lengths=LENGTHS)
    # Small files: several episodes per video file and several files per camera.
    out = export_lerobot(src, str(root / "out"), repo_id=REPO, video_files_size_in_mb=0.006, progress=False)
    return out, eps


@pytest.fixture(scope="module")
def lds(exported):
    out, _ = exported
    return lerobot_dataset.LeRobotDataset(REPO, root=out)


def _to_uint8_hwc(t) -> np.ndarray:
    return np.clip(np.round(t.numpy().transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


def test_metadata(lds, exported):
    _, eps = exported
    assert lds.meta.info["codebase_version"] == "v3.0"
    assert lds.num_episodes == len(eps) and len(lds) == sum(LENGTHS)
    assert lds.fps == FPS
    assert lds.meta.video_keys == ["observation.images.wrist", "observation.images.exterior_1"] or \
        sorted(lds.meta.video_keys) == ["observation.images.exterior_1", "observation.images.wrist"]
    assert lds.meta.stats["observation.state"]["mean"].shape == (8,)
    files = {str(lds.meta.get_video_file_path(e, "observation.images.wrist")) for e in range(len(eps))}
    assert 1 < len(files) < len(eps), "episodes are concatenated, and over several files"


def test_items_equal_our_values_and_frames(lds, exported):
    _, eps = exported
    starts = np.cumsum((0,) + LENGTHS)
    # First, middle and last frames of several episodes, including the last frame of a
    # concatenated file and the last frame of the dataset.
    picks = [(e, t) for e in range(len(eps)) for t in (0, LENGTHS[e] // 2, LENGTHS[e] - 1)]
    for e, t in picks:
        ep = eps[e]
        item = lds[int(starts[e] + t)]
        assert item["episode_index"].item() == e and item["frame_index"].item() == t
        assert item["index"].item() == starts[e] + t
        assert abs(item["timestamp"].item() - t / FPS) < 1e-6
        assert item["task"] == ep.tasks[0]
        want_state = np.concatenate([ep.steps["state.eef_pos"][t], ep.steps["state.eef_rot"][t],
                                     ep.steps["state.gripper"][t]]).astype(np.float32)
        np.testing.assert_array_equal(item["observation.state"].numpy(), want_state)
        want_action = np.concatenate([ep.steps["action.eef_pos"][t], ep.steps["action.gripper"][t]]).astype(np.float32)
        np.testing.assert_array_equal(item["action"].numpy(), want_action)
        assert item["extra.reward"].item() == pytest.approx(float(ep.steps["extra.reward"][t]))
        for cam in ("wrist", "exterior_1"):
            frame = item[f"observation.images.{cam}"]
            assert tuple(frame.shape) == (3, 48, 64)
            got = _to_uint8_hwc(frame)
            want = ep.cameras[cam].frames.array[t]
            assert psnr(got, want) > 30, (e, t, cam)
            # The frame is this step's, not a neighbour's (neighbours are measurably different).
            for dt in (-1, 1):
                if 0 <= t + dt < ep.num_steps:
                    assert psnr(got, want) > psnr(got, ep.cameras[cam].frames.array[t + dt]) + 3


def test_delta_timestamps_windows(exported):
    """History and future frames across the episode edge, as a WAM trainer would ask lerobot."""
    out, eps = exported
    d = lerobot_dataset.LeRobotDataset(REPO, root=out, delta_timestamps={
        "observation.images.wrist": [-1 / FPS, 0.0, 2 / FPS], "action": [0.0, 1 / FPS, 2 / FPS]})
    e = 2
    t = LENGTHS[e] - 2
    item = d[int(sum(LENGTHS[:e]) + t)]
    assert item["observation.images.wrist"].shape == (3, 3, 48, 64)
    assert item["observation.images.wrist_is_pad"].tolist() == [False, False, True]
    assert item["action_is_pad"].tolist() == [False, False, True]
    got_prev = _to_uint8_hwc(item["observation.images.wrist"][0])
    assert psnr(got_prev, eps[e].cameras["wrist"].frames.array[t - 1]) > 30


def test_long_concatenated_file_does_not_drift(tmp_path):
    """40 episodes back to back in one file at 30 fps: the last one's frames are still exact."""
    lengths = [30 + (i % 7) for i in range(40)]
    src, eps = make_dataset(tmp_path / "src", lengths=lengths, fps=30, cameras=("wrist",))
    out = export_lerobot(src, str(tmp_path / "out"), repo_id=REPO, progress=False)
    d = lerobot_dataset.LeRobotDataset(REPO, root=out)
    assert len({str(d.meta.get_video_file_path(e, "observation.images.wrist")) for e in range(len(eps))}) == 1
    starts = np.cumsum([0] + lengths)
    for e in (len(eps) - 2, len(eps) - 1):
        for t in (0, lengths[e] - 1):
            item = d[int(starts[e] + t)]
            got = _to_uint8_hwc(item["observation.images.wrist"])
            assert psnr(got, eps[e].cameras["wrist"].frames.array[t]) > 30, (e, t)


def test_a_view_with_kept_steps_loads_range_by_range(tmp_path):
    """A view's kept ranges become LeRobot episodes (cut ranges re-encoded): LeRobotDataset reads the
    provenance columns and gives each kept step's values and frame."""
    import wamdata

    src, eps = make_dataset(tmp_path / "src", lengths=(12, 9))
    ids = [e.episode_id for e in eps]
    view = tmp_path / "view.yaml"
    view.write_text(f"datasets:\n  - path: {src}\n    episodes: {ids}\n"
                    f"    keep_steps:\n      {ids[0]}: [[2, 6], [8, 12]]\n")
    parts = [(0, 2, 6), (0, 8, 12), (1, 0, 9)]
    out = export_lerobot(str(view), str(tmp_path / "out"), repo_id=REPO, video_files_size_in_mb=0.006, progress=False)
    d = lerobot_dataset.LeRobotDataset(REPO, root=out)
    assert d.meta.total_episodes == 3 and len(d) == sum(b - a for _, a, b in parts)
    stored = {e: wamdata.open_dataset(src).episode(e) for e in ids}
    index = 0
    for e, (i, a, b) in enumerate(parts):
        row = d.meta.episodes[e]
        assert (row["wamdata/episode_id"], row["wamdata/from_step"], row["wamdata/to_step"]) == (ids[i], a, b)
        want = stored[ids[i]].array("state.eef_pos")[a:b]
        for t in (0, b - a - 1):
            item = d[index + t]
            assert int(item["episode_index"]) == e and int(item["frame_index"]) == t
            np.testing.assert_allclose(item["observation.state"].numpy()[:3], want[t], rtol=1e-6)
            got = _to_uint8_hwc(item["observation.images.wrist"])
            assert psnr(got, eps[i].cameras["wrist"].frames.array[a + t]) > 30, (e, t)
        index += b - a
