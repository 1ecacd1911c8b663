"""The clip engine shared by the egocentric sources: frame selection, one-pass and seeking decode,
quality signals and ego-motion, on real encoded videos whose frames carry their own index."""

from fractions import Fraction

import numpy as np
import pytest

from converters.clip_decode import VideoInfo
from converters.clips import ClipOptions, Span, native_frames, plan_clips
from converters.video_folder import VideoFolder
from tests.fixtures.egocentric import NTSC, index_video, pan_video, read_index, write_video
from wamdata.errors import ConfigError, SourceError


def _decode(ep):
    return list(ep.cameras["ego"].frames.iter_frames())


@pytest.mark.parametrize("rate", [NTSC, Fraction(50), Fraction(30)])
def test_native_frames_exact_deep_into_a_long_video(rate):
    video = VideoInfo("x.mp4", rate, int(2 * 3600 * rate), 64, 48, "h264")
    start = 3599.3
    got = native_frames(start, start + 30, 10.0, video)
    want = [int(round((Fraction(start) + Fraction(k, 10)) * rate)) for k in range(301)]
    assert len(got) == 301 and got.tolist() == want


def test_plan_pads_sorts_clips_and_keeps_overlapping_spans():
    video = VideoInfo("x.mp4", Fraction(50), 500, 64, 48, "h264")
    spans = [Span(6.0, 7.0, "b"), Span(0.5, 2.0, "a"), Span(9.5, 10.0, "end")]
    plans = plan_clips("item", spans, video, ClipOptions(pad=1.0), "test")
    assert [p.own.text for p in plans] == ["a", "b", "end"]
    assert (plans[0].start_s, plans[0].end_s) == (0.0, 3.0)            # padding clipped at the start
    assert plans[2].end_s == pytest.approx(499 / 50)                     # ... and at the last frame
    assert len(plans[1].frames) == 31 and plans[1].frames[0] == 250
    fixed = plan_clips("item", spans, video, ClipOptions(clip="fixed:4"), "test")
    assert [(p.start_s, len(p.frames)) for p in fixed] == [(0.0, 40), (4.0, 40), (8.0, 20)]
    assert [s.text for s in fixed[1].spans] == ["b"] and [s.text for s in fixed[2].spans] == ["end"]


def test_span_outside_the_video_fails_naming_it():
    video = VideoInfo("x.mp4", Fraction(50), 500, 64, 48, "h264")
    with pytest.raises(SourceError, match=r"span 'late'.*outside the video \(10.000 s"):
        plan_clips("item", [Span(9.0, 10.5, "t", {"id": "late"})], video, ClipOptions(), "test")
    # ending within the last native frame is a rounding difference, clipped (EPIC has such rows)
    plan_clips("item", [Span(9.0, 10.01, "t")], video, ClipOptions(), "test")


@pytest.mark.parametrize("bad", [{"pad": "2.5"}, {"clip": "fixed:x"}, {"clip": "windows"}, {"size": "64"},
                                 {"fps": "0"}, {"decode": "fast"}])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        VideoFolder(**bad)


@pytest.mark.parametrize("codec,rate", [("h264", NTSC), ("mpeg4", Fraction(50))])
def test_one_pass_and_seeking_decode_show_the_planned_source_frames(tmp_path, codec, rate):
    index_video(str(tmp_path / "v" / "a.mp4"), 12.0, rate, codec)
    (tmp_path / "v" / "a.srt").write_text("1\n00:00:01,000 --> 00:00:04,000\nfirst\n\n"
                                          "2\n00:00:02,500 --> 00:00:03,000\ninside\n\n"
                                          "3\n00:00:08,000 --> 00:00:11,900\nlast\n")
    results = {}
    for decode in ("pass", "seek"):
        conv = VideoFolder(clip="segments", pad="1", decode=decode, fps="15", size="32x24")
        item = next(conv.discover(str(tmp_path / "v")))
        eps = conv.read(item)
        frames = [_decode(ep) for ep in eps]
        for ep, fr in zip(eps, frames):
            assert fr[0].shape == (24, 32, 3)
            assert [read_index(f) for f in fr] == ep.steps["extra.source_frame"].tolist()
        results[decode] = [np.stack(f) for f in frames]
        # clip 2 starts before clip 1 ends: the pass seeks back once, seek mode before every clip but the first
        assert eps[0].cameras["ego"].frames.cursor.seeks == (1 if decode == "pass" else 2)
    for a, b in zip(results["pass"], results["seek"]):
        np.testing.assert_array_equal(a, b)


def test_quality_flags_static_clips_and_scene_cuts(tmp_path):
    rng = np.random.default_rng(0)
    a = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 1), dtype=np.uint8), 4, 0), 4, 1).repeat(3, 2)
    b = np.full_like(a, 250)
    b[::8] = 20
    write_video(str(tmp_path / "v" / "frozen.mp4"), [a] * 30, Fraction(10))
    write_video(str(tmp_path / "v" / "cut.mp4"), [a] * 15 + [b] * 15, Fraction(10))
    conv = VideoFolder(clip="fixed:10", fps="10")
    q = {}
    for item in conv.discover(str(tmp_path / "v")):
        ep = conv.read(item)[0]
        _decode(ep)
        q[item.id] = ep.metadata["quality"]
    assert q["video_frozen"]["static"] and q["video_frozen"]["scene_cuts"] == 0
    assert not q["video_cut"]["static"] and q["video_cut"]["cut_steps"] == [15]
    assert q["video_cut"]["bright_mean"] > 0.3 and 0 < q["video_frozen"]["luma_mean"] < 1
    assert q["video_frozen"]["blur_min"] > 0 and len(q["video_frozen"]["dhash"]) == 16


@pytest.mark.parametrize("yaw", [1.5, -2.0])
def test_ego_motion_recovers_a_synthetic_pan(tmp_path, yaw):
    pan_video(str(tmp_path / "v" / "pan.mp4"), frames=10, yaw_deg=yaw)
    conv = VideoFolder(clip="fixed:10", fps="10", ego_motion="true")
    ep = conv.read(next(conv.discover(str(tmp_path / "v"))))[0]
    _decode(ep)
    motion, model = ep.steps["action.ego_motion"], ep.steps["extra.ego_motion_model"]
    assert model[:-1].tolist() == [2] * 9 and model[-1] == 0      # rotation only; the last step has no next frame
    np.testing.assert_allclose(np.rad2deg(motion[:-1, 4]), yaw, atol=0.15)   # +y = pan right (OpenCV axes)
    assert np.abs(np.rad2deg(motion[:-1, [3, 5]])).max() < 0.1
    assert not motion[-1].any()
    feat = ep.features["action.ego_motion"]
    assert feat.derived and feat.frame == "camera" and "unit direction" in feat.description
    assert ep.action_space == "ego_motion"
