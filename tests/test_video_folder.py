"""``--source video``: a folder of videos with optional captions, converted on 2 Ray workers, through
the toolkit and streamed mixed with a teleop dataset."""

import json
from fractions import Fraction

import numpy as np
import pytest

import wamdata
from converters.video_folder import VideoFolder, parse_cues, read_captions
from tests.fixtures.egocentric import NTSC, index_video, read_index
from tests.fixtures.loader_data import make_dataset
from tests.toolkit_flow import check_toolkit_flow
from wamdata.convert import ConvertConfig, convert
from wamdata.errors import SourceError

SRT = "1\n00:00:01,000 --> 00:00:02,500\nhello <i>there</i>\n\n2\n00:00:05,250 --> 00:00:09,000\nsecond\ncue\n"
VTT = "WEBVTT\n\n00:01.000 --> 00:02.500 align:start\nhello there\n\n01:00:05.250 --> 01:00:09.000\nlate cue\n"


def test_srt_vtt_and_whisper_json_captions(tmp_path):
    assert parse_cues(SRT) == [(1.0, 2.5, "hello there"), (5.25, 9.0, "second cue")]
    assert parse_cues(VTT) == [(1.0, 2.5, "hello there"), (3605.25, 3609.0, "late cue")]
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"text": "x", "segments": [{"id": 0, "start": 0.5, "end": 1.5, "text": " hi ",
                                                        "avg_logprob": -0.2}]}))
    (s,) = read_captions("item", str(p))
    assert (s.start_s, s.end_s, s.text, s.meta["avg_logprob"]) == (0.5, 1.5, "hi", -0.2)
    p.write_text(json.dumps([{"start": 1, "text": "no end"}]))
    with pytest.raises(SourceError, match=r"a.json: segments\[0\]: needs start, end and text"):
        read_captions("item", str(p))


def _folder(root):
    index_video(str(root / "kitchen" / "a.mp4"), 9.0, NTSC, "h264")
    (root / "kitchen" / "a.srt").write_text(SRT)
    index_video(str(root / "b.MOV"), 5.0, Fraction(50), "mpeg4")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")


def _convert(tmp_path, out="ds", **options):
    from pipelines.executors import RayExecutor

    cfg = ConvertConfig(source="video", input=str(tmp_path / "src"), output=str(tmp_path / out),
                        options=options, max_failures=1, quiet=True)
    with RayExecutor(workers=2) as ex:
        return convert(cfg, ex)


def test_video_folder_clips_on_ray_through_the_toolkit(tmp_path, ray_session):
    _folder(tmp_path / "src")
    report = _convert(tmp_path, clip="fixed:4", size="32x24", fps="10")
    assert report.items == 3 and report.failed == 1
    (failure,) = report.failures
    assert failure["item"] == "video_broken" and "broken.mp4: not a readable video" in failure["reason"]
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    rows = {r["episode_id"]: r for r in ds.episodes.to_pylist()}
    assert sorted(rows) == ["video_b_00000", "video_b_00001", "video_kitchen_a_00000", "video_kitchen_a_00001",
                            "video_kitchen_a_00002"]
    assert [rows[f"video_kitchen_a_0000{i}"]["num_steps"] for i in range(3)] == [40, 40, 10]
    assert not any(n.startswith("action.") for n in ds.features)
    for eid, row in rows.items():
        ep = ds.episode(eid)
        assert row["family"] == "egocentric_video" and row["action_space"] == "none" and row["fps"] == 10
        frames = ep.frames("ego")
        assert frames.shape[1:] == (24, 32, 3)
        assert [read_index(f) for f in frames] == ep.array("extra.source_frame").tolist()
        np.testing.assert_allclose(ep.array("timestamp"), np.arange(len(frames)) / 10)
    second = ds.episode("video_kitchen_a_00001").meta       # [4, 8) s of a.mp4 holds the second cue
    ((lang),) = second["language"]
    assert lang["text"] == "second cue" and (lang["start_s"], lang["end_s"]) == pytest.approx((1.25, 3.9))
    assert second["tasks"] == [] and second["metadata"]["clip"]["start_s"] == 4.0
    check_toolkit_flow(tmp_path / "ds", tmp_path)


def test_egocentric_clips_stream_mixed_with_teleop(tmp_path, ray_session):
    index_video(str(tmp_path / "src" / "a.mp4"), 6.0, NTSC, "h264")
    _convert(tmp_path, clip="fixed:3", size="32x24")
    teleop = make_dataset(tmp_path / "teleop", n=2, steps=20, cameras=("front",))
    from wamdata.stats import compute_stats
    from wamdata.loader import WamStream

    compute_stats(str(tmp_path / "ds"))
    manifest = tmp_path / "mix.yaml"
    manifest.write_text(f"datasets:\n  - {{name: teleop, path: '{teleop}', weight: 0.5}}\n"
                        f"  - {{name: ego, path: '{tmp_path / 'ds'}', weight: 0.5}}\n")
    stream = WamStream(str(manifest), cameras=["front", "ego"], history=1, future=[2], action_horizon=4,
                       image_size=(24, 32), shuffle_buffer=1, normalize=None, fps=10)
    seen = {"teleop": 0, "ego": 0}
    for s in stream:
        seen[s["dataset"]] += 1
        if s["dataset"] == "ego":
            assert np.asarray(s["actions_is_pad"]).all()
            assert np.asarray(s["camera_mask"]).tolist() == [False, True]
            fut = np.asarray(s["future_frames"]["ego"])
            if not np.asarray(s["future_is_pad"]).all():
                assert fut.shape == (1, 24, 32, 3) and fut.any()    # future frames are the targets
        else:
            assert not np.asarray(s["actions_is_pad"]).all()
    assert seen["ego"] > 0 and seen["teleop"] > 0   # a weighted mixture: both sources drawn


def test_ego_motion_through_the_job_is_a_declared_pseudo_action(tmp_path, ray_session):
    index_video(str(tmp_path / "src" / "a.mp4"), 3.0, Fraction(30), "h264")
    _convert(tmp_path, clip="fixed:10", ego_motion="true")
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    feat = ds.features["action.ego_motion"]
    assert feat.derived and feat.shape == (6,) and feat.unit == "unit_direction+rad_axis_angle"
    (row,) = ds.episodes.to_pylist()
    assert row["action_space"] == "ego_motion" and row["num_steps"] == 30


def test_segments_without_captions_fail_their_item(tmp_path):
    index_video(str(tmp_path / "v" / "a.mp4"), 1.0, Fraction(30), "h264")
    conv = VideoFolder(clip="segments")
    with pytest.raises(SourceError, match="a.mp4: video: clip=segments but the video has no captions"):
        conv.read(next(conv.discover(str(tmp_path / "v"))))
