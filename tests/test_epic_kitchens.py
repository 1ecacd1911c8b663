"""``--source epic_kitchens``: the real EPIC-KITCHENS-100 annotation CSVs parse and map to their spans;
fixture videos (frames carrying their index) convert on 2 Ray workers to clips aligned with the
annotations within one output frame."""

import csv
import logging
import os
import shutil
from fractions import Fraction

import numpy as np
import pytest

import wamdata
from converters.clip_decode import VideoInfo
from converters.clips import ClipOptions, plan_clips
from converters.epic_kitchens import EpicKitchens, epic_frame_rate, read_annotations, read_video_info
from tests.fixtures.egocentric import EPIC_COLUMNS, make_epic, read_index
from tests.toolkit_flow import check_toolkit_flow
from wamdata.convert import ConvertConfig, convert
from wamdata.errors import ConfigError, SourceError

REAL = "/work/shared/data/epic_kitchens_100"
VALIDATION = os.path.join(REAL, "EPIC_100_validation.csv")
VIDEO_INFO = os.path.join(REAL, "EPIC_100_video_info.csv")
needs_real = pytest.mark.skipif(not os.path.isfile(VALIDATION), reason="shared EPIC-KITCHENS-100 CSVs not present")


@needs_real
def test_every_real_validation_row_parses_and_maps_to_its_span():
    spans, errors = read_annotations([VALIDATION])
    assert errors == {}
    assert sum(len(v) for v in spans.values()) == 9668 and len(spans) == 138
    info = read_video_info(VIDEO_INFO)
    opts = ClipOptions(fps=10.0)
    for vid, vspans in spans.items():
        rate = Fraction(info[vid]["fps"]).limit_denominator(1001)
        video = VideoInfo(vid, rate, int(round(info[vid]["duration_s"] * rate)), 1920, 1080, "h264")
        plans = {p.own.meta["narration_id"]: p for p in plan_clips(vid, vspans, video, opts, "epic_kitchens")}
        for sp in vspans:
            p = plans[sp.meta["narration_id"]]
            assert abs(p.frames[0] / rate - sp.start_s) <= 0.5 / rate + 1e-9     # the nearest native frame
            assert sp.end_s - 1 / opts.fps - 1 / rate <= p.frames[-1] / rate <= sp.end_s + 1 / rate


@needs_real
def test_real_frame_numbers_count_at_60_fps_unless_the_video_is_50():
    info = read_video_info(VIDEO_INFO)
    with open(VALIDATION, newline="") as f:
        assert csv.DictReader(f).fieldnames == EPIC_COLUMNS
    spans, _ = read_annotations([VALIDATION])
    rates = set()
    for vid, vspans in spans.items():
        native = info[vid]["fps"]
        rate = epic_frame_rate(native)
        rates.add((round(native, 2), rate))
        for sp in vspans:
            assert abs(sp.meta["start_frame"] - sp.start_s * rate) <= 1, sp.meta
            assert abs(sp.meta["stop_frame"] - sp.end_s * rate) <= 1, sp.meta
            if abs(native - rate) > 1:   # the native rate would be off by far more than rounding
                assert abs(sp.meta["stop_frame"] - sp.end_s * native) > 1 or sp.end_s < 30
    assert {r for _, r in rates} == {60} and {n for n, _ in rates} >= {59.94, 29.97, 90.0}
    assert epic_frame_rate(50.0) == 50


@pytest.fixture(scope="module")
def epic(tmp_path_factory):
    root = tmp_path_factory.mktemp("epic")
    return root, make_epic(str(root))


def _convert(root, out, **options):
    from pipelines.executors import RayExecutor

    cfg = ConvertConfig(source="epic_kitchens", input=str(root / "videos"), output=str(out), options=options,
                        max_failures=5, quiet=True)
    with RayExecutor(workers=2) as ex:
        return convert(cfg, ex)


def test_epic_segments_on_ray_align_with_the_annotations(epic, tmp_path, ray_session):
    root, fx = epic
    report = _convert(root, tmp_path / "ds", annotations=fx["annotations"], video_info=fx["video_info"],
                      pad="0.5", fps="10", size="32x24")
    assert report.failed == 0 and report.converted == len(fx["rows"])
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert not any(n.startswith("action.") for n in ds.features)
    natives = {"P01_01": 60000 / 1001, "P02_03": 50.0}
    for row in fx["rows"]:
        ep = ds.episode("epic_" + row["narration_id"])
        meta, native = ep.meta, natives[row["video_id"]]
        frames = ep.frames("ego")
        assert frames.shape[1:] == (24, 32, 3) and meta["fps"] == 10 and meta["action_space"] == "none"
        shown = np.array([read_index(f) for f in frames])
        np.testing.assert_array_equal(shown, ep.array("extra.source_frame"))
        start = max(0.0, meta["metadata"]["segment"]["start_s"] - 0.5)
        stop = min(meta["metadata"]["segment"]["stop_s"] + 0.5, (round(70 * native) - 1) / native)
        assert abs(shown[0] / native - start) <= 1 / 10                      # within one output frame
        assert abs(shown[-1] / native - stop) <= 1 / 10
        assert np.all(np.diff(shown) > 0)
        np.testing.assert_allclose(ep.array("extra.source_time_s"), shown / native)
        assert meta["tasks"] == [row["narration"]]
        own = [s for s in meta["language"] if s["text"] == row["narration"]][0]
        assert own["start_s"] == pytest.approx(meta["metadata"]["segment"]["start_s"] - start)
        seg = meta["metadata"]["segment"]
        assert (seg["verb_class"], seg["noun_class"], seg["all_nouns"]) == \
            (int(row["verb_class"]), int(row["noun_class"]), eval(row["all_nouns"]))
        assert meta["metadata"]["video_id"] == row["video_id"] and meta["metadata"]["participant_id"] == row["participant_id"]
        assert row["narration_id"] in meta["metadata"]["narration_ids"]
        assert set(meta["metadata"]["quality"]) >= {"blur_mean", "luma_mean", "static", "scene_cuts"}
    # the two overlapping first segments see each other as language
    first = ds.episode("epic_P01_01_0").meta
    assert [s["text"] for s in first["language"]] == ["take plate", "put down plate"]
    check_toolkit_flow(tmp_path / "ds", tmp_path)


def test_fixed_windows_keep_segments_as_language(epic, tmp_path):
    root, fx = epic
    conv = EpicKitchens(annotations=fx["annotations"], clip="fixed:10", size="32x24")
    items = {it.id: it for it in conv.discover(str(root / "videos"))}
    eps = conv.read(items["epic_P02_03"])
    assert [ep.episode_id for ep in eps] == ["epic_P02_03_00000", "epic_P02_03_00001"]
    assert [s.text for s in eps[0].language] == ["pick up cup", "pour water into cup"]
    assert eps[0].tasks == [] and eps[1].num_steps == 20
    frames = list(eps[1].cameras["ego"].frames.iter_frames())
    assert read_index(frames[0]) == 500


def test_bad_input_fails_only_its_items(epic, tmp_path, caplog):
    root, fx = epic
    src = tmp_path / "src"
    shutil.copytree(root / "videos", src / "videos")
    (src / "videos" / "P09_09.MP4").write_bytes(b"not annotated")
    rows = list(csv.DictReader(open(fx["annotations"])))
    rows.append({**rows[0], "narration_id": "P07_01_0", "video_id": "P07_01", "participant_id": "P07"})
    rows.append({**rows[-2], "narration_id": "P02_03_9", "start_timestamp": "00:00:11.00",
                 "stop_timestamp": "00:00:40.00"})
    ann = src / "ann.csv"
    with open(ann, "w", newline="") as f:
        w = csv.DictWriter(f, EPIC_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    with caplog.at_level(logging.WARNING):
        report = _convert(src, tmp_path / "ds", annotations=str(ann), size="32x24")
    assert "1 videos" in caplog.text and "P09_09" in caplog.text
    failed = {f["item"]: f["reason"] for f in report.failures}
    assert set(failed) == {"epic_P07_01", "epic_P02_03"}
    assert "video P07_01 not found under --input (1 annotation rows name it, e.g. P07_01_0)" in failed["epic_P07_01"]
    assert "span 'P02_03_9' [11.000, 40.000] s is outside the video (12.000 s" in failed["epic_P02_03"]
    assert report.converted == 4     # P01_01's clips

    rows[0] = {**rows[0], "stop_timestamp": "0:0:1"}
    with open(ann, "w", newline="") as f:
        w = csv.DictWriter(f, EPIC_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    conv = EpicKitchens(annotations=str(ann))
    item = next(it for it in conv.discover(str(src / "videos")) if it.id == "epic_P01_01")
    with pytest.raises(SourceError, match=r"ann.csv: line 2: column stop_timestamp: not HH:MM:SS.ss"):
        conv.read(item)
    with pytest.raises(ConfigError, match="annotations=EPIC_100_<split>.csv is required"):
        list(EpicKitchens().discover(str(src)))
