"""LeRobot v3.0 export: the layout, checked structurally without lerobot installed.

The interop test against the real ``lerobot`` is tests/test_export_lerobot_interop.py (marker
``lerobot``). Both build their datasets with :func:`make_dataset` here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.fixtures.frames import psnr, textured_frames
from wamdata.export import ExportError, export_lerobot
from wamdata.format import video
from wamdata.format.writer import write_dataset
from wamdata.schema import ArrayFrames, Camera, Episode

FPS = 10
LENGTHS = (12, 7, 15, 9, 11)


def make_episode(i: int, T: int, cameras=("wrist", "exterior_1"), size=(64, 48), fps=FPS,
                 embodiment="franka") -> Episode:
    rng = np.random.default_rng(100 + i)
    ep = Episode(episode_id=f"synthetic/ep{i:03d}", source="synthetic", family="teleop",
                 embodiment=embodiment, fps=fps, steps={"timestamp": np.arange(T) / fps * 1.01},
                 tasks=[f"task {i % 2}", "second task"], action_space="eef_pos")
    q = rng.normal(size=(T, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ep.add("state.eef_pos", rng.normal(size=(T, 3)))
    ep.add("state.eef_rot", q)
    ep.add("state.gripper", rng.uniform(0, 1, size=(T, 1)))
    ep.add("action.eef_pos", rng.normal(size=(T, 3)))
    ep.add("action.gripper", rng.uniform(0, 1, size=(T, 1)))
    ep.add("extra.reward", rng.normal(size=T).astype(np.float32))
    ep.add("extra.grid", rng.normal(size=(T, 2, 3)))
    ep.add("extra.is_first", np.arange(T) == 0)
    for k, cam in enumerate(cameras):
        ep.cameras[cam] = Camera(cam, ArrayFrames(textured_frames(T, size[1], size[0], seed=10 * i + k)))
    return ep


def make_dataset(path, lengths=LENGTHS, **kw) -> tuple[str, list[Episode]]:
    eps = [make_episode(i, T, **kw) for i, T in enumerate(lengths)]
    write_dataset(str(path), eps, video_codec="h264")
    return str(path), eps


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    src, eps = make_dataset(root / "src")
    # A small video file limit so the episodes spread over several concatenated files.
    out = export_lerobot(src, str(root / "out"), video_files_size_in_mb=0.004, progress=False)
    return Path(out), eps


def _frame_times(path) -> list[float]:
    import av

    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(c.streams.video[0])]


def _episodes(out: Path) -> list[dict]:
    return pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()


def test_info_json(exported):
    out, eps = exported
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["fps"] == FPS and info["robot_type"] == "franka"
    assert info["total_episodes"] == len(eps) and info["total_frames"] == sum(LENGTHS)
    assert info["total_tasks"] == 3   # every task of every episode, not only first ones
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    f = info["features"]
    assert f["observation.state"] == {"dtype": "float32", "shape": [8], "names": [
        "eef_pos.x", "eef_pos.y", "eef_pos.z", "eef_rot.qx", "eef_rot.qy", "eef_rot.qz", "eef_rot.qw", "gripper"]}
    assert f["action"]["shape"] == [4] and f["action"]["names"][-1] == "gripper"
    assert f["extra.reward"] == {"dtype": "float32", "shape": [1], "names": ["reward"]}
    assert f["extra.grid"]["shape"] == [6] and f["extra.is_first"]["dtype"] == "bool"
    cam = f["observation.images.wrist"]
    assert cam["dtype"] == "video" and cam["shape"] == [48, 64, 3]
    assert cam["info"]["video.codec"] == "h264" and cam["info"]["video.fps"] == FPS
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert f[k]["shape"] == [1]


def test_data_and_episode_tables(exported):
    out, eps = exported
    data = [r for p in sorted((out / "data").glob("*/*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(data) == sum(LENGTHS)
    assert [r["index"] for r in data] == list(range(sum(LENGTHS)))
    rows = _episodes(out)
    tasks = pq.read_table(out / "meta/tasks.parquet").to_pandas()
    assert list(tasks.index) == ["task 0", "second task", "task 1"] and list(tasks["task_index"]) == [0, 1, 2]
    for e, (row, ep) in enumerate(zip(rows, eps)):
        T = ep.num_steps
        assert row["episode_index"] == e and row["length"] == T
        assert row["wamdata/episode_id"] == ep.episode_id
        assert row["dataset_to_index"] - row["dataset_from_index"] == T
        assert row["tasks"] == list(ep.tasks)
        frames = data[row["dataset_from_index"]:row["dataset_to_index"]]
        assert all(r["episode_index"] == e for r in frames)
        assert [r["frame_index"] for r in frames] == list(range(T))
        np.testing.assert_allclose([r["timestamp"] for r in frames], np.arange(T) / FPS, rtol=1e-6)
        state = np.array([r["observation.state"] for r in frames])
        want = np.concatenate([ep.steps["state.eef_pos"], ep.steps["state.eef_rot"], ep.steps["state.gripper"]], 1)
        np.testing.assert_allclose(state, want.astype(np.float32))
        action = np.array([r["action"] for r in frames])
        np.testing.assert_allclose(action, np.concatenate([ep.steps["action.eef_pos"], ep.steps["action.gripper"]], 1)
                                   .astype(np.float32))
        np.testing.assert_array_equal([r["extra.reward"] for r in frames], ep.steps["extra.reward"])
        np.testing.assert_allclose(np.array([r["extra.grid"] for r in frames]), ep.steps["extra.grid"].reshape(T, 6))
        assert [r["task_index"] for r in frames] == [0 if e % 2 == 0 else 2] * T   # the first task's
        # Per-episode stats, LeRobot's column layout.
        np.testing.assert_allclose(row["stats/observation.state/mean"], want.mean(0), rtol=1e-5, atol=1e-6)
        assert row["stats/observation.state/count"] == [T]
        assert np.array(row["stats/observation.images.wrist/mean"]).shape == (3, 1, 1)


def test_videos_concatenated_by_frame_offsets(exported):
    out, eps = exported
    rows = _episodes(out)
    for cam in ("wrist", "exterior_1"):
        key = f"observation.images.{cam}"
        files: dict[tuple, list] = {}
        for row, ep in zip(rows, eps):
            files.setdefault((row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]), []).append((row, ep))
        assert len(files) > 1, "the small size limit should give several files"
        assert any(len(v) > 1 for v in files.values()), "and several episodes in a file"
        for (chunk, fno), members in files.items():
            path = out / f"videos/{key}/chunk-{chunk:03d}/file-{fno:03d}.mp4"
            info = video.probe(str(path))
            assert info["frames"] == sum(ep.num_steps for _, ep in members)
            assert info["fps"] == FPS
            # Frame k is presented at exactly k / fps: seeking by from_timestamp lands on the episode.
            assert _frame_times(path) == [k / FPS for k in range(info["frames"])]
            decoded = video.PyAVDecoder().decode(str(path))
            offset = 0
            for row, ep in members:
                T = ep.num_steps
                assert row[f"videos/{key}/from_timestamp"] == offset / FPS
                assert row[f"videos/{key}/to_timestamp"] == (offset + T) / FPS
                start = round(row[f"videos/{key}/from_timestamp"] * FPS)
                got = decoded[start:start + T]
                want = ep.cameras[cam].frames.array
                assert psnr(got, want) > 30, (cam, row["episode_index"])
                offset += T


def test_stream_copy_is_bit_exact(exported, tmp_path):
    """Packets are copied, so decoding the export gives exactly what decoding our shards gives."""
    import wamdata

    out, eps = exported
    ds = wamdata.open_dataset(str(out.parent / "src"))
    rows = _episodes(out)
    key = "observation.images.wrist"
    last = rows[-1]
    path = out / f"videos/{key}/chunk-{last[f'videos/{key}/chunk_index']:03d}/file-{last[f'videos/{key}/file_index']:03d}.mp4"
    decoded = video.PyAVDecoder().decode(str(path))
    stored = ds.episode(eps[-1].episode_id).frames("wrist")
    start = round(last[f"videos/{key}/from_timestamp"] * FPS)
    np.testing.assert_array_equal(decoded[start:start + len(stored)], stored)
    assert start + len(stored) == len(decoded)  # the last episode ends the file


def test_stats_json(exported):
    out, eps = exported
    stats = json.loads((out / "meta/stats.json").read_text())
    state = np.concatenate([np.concatenate([e.steps["state.eef_pos"], e.steps["state.eef_rot"],
                                            e.steps["state.gripper"]], 1) for e in eps]).astype(np.float32)
    s = stats["observation.state"]
    np.testing.assert_allclose(s["mean"], state.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s["std"], state.std(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(s["min"], state.min(0))
    np.testing.assert_allclose(s["max"], state.max(0))
    assert s["count"] == [sum(LENGTHS)]
    assert set(s) >= {"q01", "q10", "q50", "q90", "q99"}
    img = np.array(stats["observation.images.wrist"]["mean"])
    assert img.shape == (3, 1, 1) and np.all((img > 0) & (img < 1))


def test_resized_episode_is_reencoded(tmp_path):
    eps = [make_episode(0, 8, cameras=("wrist",)), make_episode(1, 6, cameras=("wrist",), size=(80, 60)),
           make_episode(2, 5, cameras=("wrist",))]
    write_dataset(str(tmp_path / "src"), eps, video_codec="h264")
    out = Path(export_lerobot(str(tmp_path / "src"), str(tmp_path / "out"), progress=False))
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"]["observation.images.wrist"]["shape"] == [48, 64, 3]
    assert info["wamdata"]["reencoded_episodes"] == {"observation.images.wrist": 1}
    rows = _episodes(out)
    key = "observation.images.wrist"
    for row, ep in zip(rows, eps):
        path = out / f"videos/{key}/chunk-{row[f'videos/{key}/chunk_index']:03d}/file-{row[f'videos/{key}/file_index']:03d}.mp4"
        start = round(row[f"videos/{key}/from_timestamp"] * FPS)
        got = video.PyAVDecoder().decode(str(path), start, start + ep.num_steps)
        assert got.shape == (ep.num_steps, 48, 64, 3)
        want = np.stack([video.resize_frame(f, (64, 48)) for f in ep.cameras["wrist"].frames.array])
        assert psnr(got, want) > 28


def test_camera_missing_in_some_episodes(tmp_path):
    eps = [make_episode(0, 5), make_episode(1, 5, cameras=("wrist",))]
    write_dataset(str(tmp_path / "src"), eps, video_codec="h264")
    with pytest.raises(ExportError, match="exterior_1.*missing in 1 of 2 episodes.*synthetic/ep001"):
        export_lerobot(str(tmp_path / "src"), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()
    out = export_lerobot(str(tmp_path / "src"), str(tmp_path / "out"), cameras=["wrist"], progress=False)
    info = json.loads((Path(out) / "meta/info.json").read_text())
    assert [k for k in info["features"] if k.startswith("observation.images")] == ["observation.images.wrist"]


def test_unknown_camera_and_no_episodes(tmp_path):
    src, _ = make_dataset(tmp_path / "src", lengths=(4,))
    with pytest.raises(ExportError, match="unknown camera.*nope.*exterior_1, wrist"):
        export_lerobot(src, str(tmp_path / "out"), cameras=["nope"], progress=False)
    write_dataset(str(tmp_path / "empty"), [], video_codec="h264")
    with pytest.raises(ExportError, match="no episodes"):
        export_lerobot(str(tmp_path / "empty"), str(tmp_path / "out2"), progress=False)


def test_mixed_fps_and_existing_output(tmp_path):
    eps = [make_episode(0, 5), make_episode(1, 5, fps=15)]
    write_dataset(str(tmp_path / "src"), eps, video_codec="h264")
    with pytest.raises(ExportError, match="different fps"):
        export_lerobot(str(tmp_path / "src"), str(tmp_path / "out"), progress=False)
    src, _ = make_dataset(tmp_path / "src2", lengths=(4,))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    # --overwrite replaces an earlier export, never another folder, the dataset or a folder holding it
    for overwrite in (False, True):
        with pytest.raises(ExportError, match="not an export of this format"):
            export_lerobot(src, str(tmp_path / "busy"), overwrite=overwrite, progress=False)
    for out in (src, str(tmp_path)):
        with pytest.raises(ExportError, match="overlap the dataset"):
            export_lerobot(src, out, overwrite=True, progress=False)
    assert (tmp_path / "busy" / "file").read_text() == "x" and os.path.exists(f"{src}/wamdata.json")
    export_lerobot(src, str(tmp_path / "out3"), progress=False)
    with pytest.raises(ExportError, match="already holds a finished lerobot export"):
        export_lerobot(src, str(tmp_path / "out3"), progress=False)
    (tmp_path / "out3" / "stale").write_text("x")
    export_lerobot(src, str(tmp_path / "out3"), overwrite=True, progress=False)
    assert (tmp_path / "out3" / "meta" / "info.json").exists() and not (tmp_path / "out3" / "stale").exists()


def test_source_stream_copied_clips(tmp_path):
    """Datasets whose videos were stream-copied from source files export with exact frame times too."""
    from wamdata.media import VideoFileFrames

    eps = []
    for i, T in enumerate((6, 9, 5)):
        ep = make_episode(i, T, cameras=())
        frames = textured_frames(T, 48, 64, seed=i)
        path = tmp_path / f"src{i}.mp4"
        path.write_bytes(video.encode_video(frames, FPS, "h264")[0])
        ep.cameras["wrist"] = Camera("wrist", VideoFileFrames(str(path)))
        eps.append((ep, frames))
    write_dataset(str(tmp_path / "src"), [e for e, _ in eps], video_codec="copy")
    out = Path(export_lerobot(str(tmp_path / "src"), str(tmp_path / "out"), progress=False))
    path = out / "videos/observation.images.wrist/chunk-000/file-000.mp4"
    assert _frame_times(path) == [k / FPS for k in range(20)]
    decoded = video.PyAVDecoder().decode(str(path))
    for row, (ep, frames) in zip(_episodes(out), eps):
        start = round(row["videos/observation.images.wrist/from_timestamp"] * FPS)
        assert psnr(decoded[start:start + ep.num_steps], frames) > 30


def test_cli_export(tmp_path, capsys):
    from wamdata.cli import main

    src, _ = make_dataset(tmp_path / "src", lengths=(5, 4))
    assert main(["export", src, "--format", "lerobot", "--output", str(tmp_path / "out"),
                 "--cameras", "wrist", "--quiet"]) == 0
    info = json.loads((tmp_path / "out/meta/info.json").read_text())
    assert info["total_episodes"] == 2 and "observation.images.exterior_1" not in info["features"]
    assert main(["export", src, "--output", str(tmp_path / "out2"), "--cameras", "nope", "--quiet"]) == 2
    assert "unknown camera" in capsys.readouterr().err


def test_partial_features_nan_values_and_repeated_cameras(tmp_path, caplog):
    """A feature some episodes lack is left out up front (named in a warning), not an error halfway;
    NaN in an extra feature is left out of the stats, which stay strict JSON; a camera named twice
    is exported once."""
    eps = [make_episode(i, T) for i, T in enumerate((6, 5, 7))]
    eps[1].add("extra.force", np.arange(5, dtype=np.float64))          # only episode 1 has it
    for e in eps:
        e.add("extra.torque", np.where(np.arange(e.num_steps) == 2, np.nan, np.arange(e.num_steps, dtype=np.float64)))
    write_dataset(str(tmp_path / "src"), eps, video_codec="h264")
    with caplog.at_level("WARNING", logger="wamdata.export.lerobot"):
        out = Path(export_lerobot(str(tmp_path / "src"), str(tmp_path / "out"), cameras=["wrist", "wrist"],
                                  progress=False))
    assert "extra.force is missing in 2 of 3 episodes" in caplog.text
    info = json.loads((out / "meta/info.json").read_text())
    assert "extra.force" not in info["features"] and "extra.torque" in info["features"]
    assert [k for k in info["features"] if k.startswith("observation.images")] == ["observation.images.wrist"]
    text = (out / "meta/stats.json").read_text()
    stats = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in stats.json"))
    finite = np.concatenate([np.delete(np.arange(T, dtype=np.float64), 2) for T in (6, 5, 7)])
    assert stats["extra.torque"]["mean"][0] == pytest.approx(finite.mean())
    assert stats["extra.torque"]["max"][0] == 6.0
    rows = _episodes(out)
    assert [r["videos/observation.images.wrist/to_timestamp"] for r in rows] == pytest.approx([0.6, 1.1, 1.8])


def test_export_of_a_view(tmp_path):
    src, eps = make_dataset(tmp_path / "src", lengths=(5, 6, 7))
    view = tmp_path / "view.yaml"
    view.write_text(f"datasets:\n  - path: {src}\n    filter: \"num_steps >= 6\"\n")
    out = Path(export_lerobot(str(view), str(tmp_path / "out"), progress=False))
    info = json.loads((out / "meta/info.json").read_text())
    assert info["total_episodes"] == 2 and info["total_frames"] == 13
    assert [r["wamdata/episode_id"] for r in _episodes(out)] == [eps[1].episode_id, eps[2].episode_id]
