"""``--source ego4d``: point narrations (windowed) and Goal-Step steps -> clips, on 2 Ray workers."""

import json
import shutil

import numpy as np
import pytest

import wamdata
from converters.ego4d import Ego4D
from tests.fixtures.egocentric import EGO4D_VIDEOS, make_ego4d, read_index
from tests.toolkit_flow import check_toolkit_flow
from wamdata.convert import ConvertConfig, convert
from wamdata.errors import ConfigError, SourceError

UID1, UID2 = sorted(EGO4D_VIDEOS)


@pytest.fixture(scope="module")
def ego(tmp_path_factory):
    root = tmp_path_factory.mktemp("ego4d")
    return root, make_ego4d(str(root))


def _decode(ep):
    return [read_index(f) for f in ep.cameras["ego"].frames.iter_frames()]


def test_narrations_on_ray_windows_language_and_toolkit(ego, tmp_path, ray_session):
    from pipelines.executors import RayExecutor

    root, fx = ego
    cfg = ConvertConfig(source="ego4d", input=str(root / "v2"), output=str(tmp_path / "ds"),
                        options={"size": "32x24", "fps": "5"}, quiet=True)
    with RayExecutor(workers=2) as ex:
        report = convert(cfg, ex)
    points = {uid: fx["narrations"][uid]["narration_pass_1"]["narrations"] for uid in EGO4D_VIDEOS}
    assert report.failed == 0 and report.converted == sum(len(p) for p in points.values())
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert not any(n.startswith("action.") for n in ds.features)
    for uid, pts in points.items():
        rate = fx["meta"]["videos"][sorted(EGO4D_VIDEOS).index(uid)]["video_metadata"]["fps"]
        for i, n in enumerate(pts):
            ep = ds.episode(f"ego4d_{uid}_pass1_{i}")
            m = ep.meta
            assert m["tasks"] == [n["narration_text"]] and m["fps"] == 5
            span = [s for s in m["metadata"]["spans"] if s["id"] == f"pass1_{i}"][0]
            assert span["window_s"] == pytest.approx(2.5)                 # the fixture's median gap
            shown = [read_index(f) for f in ep.frames("ego")]
            assert shown == ep.array("extra.source_frame").tolist()
            # the clip covers t +- 1.25 s (within one output frame), and the summary is language too
            assert abs(shown[0] / rate - max(0.0, n["timestamp_sec"] - 1.25)) <= 0.2
            assert abs(shown[-1] / rate - min(ep.meta["metadata"]["clip"]["end_s"], n["timestamp_sec"] + 1.25)) <= 0.2
            texts = [s["text"] for s in m["language"]]
            assert n["narration_text"] in texts and any(t.startswith("#summary") for t in texts)
            assert m["metadata"]["ego4d"]["video_metadata"]["num_frames"] > 0
    check_toolkit_flow(tmp_path / "ds", tmp_path)


def test_goalstep_steps_are_clips_goal_is_the_task(ego):
    root, fx = ego
    conv = Ego4D(annotations=fx["goalstep"], size="32x24", fps="10")
    items = list(conv.discover(str(root / "v2")))
    assert [it.id for it in items] == [f"ego4d_{UID1}"]
    eps = conv.read(items[0])
    assert [ep.episode_id for ep in eps] == [f"ego4d_{UID1}_step0", f"ego4d_{UID1}_step1"]
    crack, whisk = eps
    assert crack.tasks == ["crack eggs into bowl", "make an omelet"]
    assert [(s.start_s, s.end_s, s.text) for s in crack.language] == \
        [(0.0, 6.0, "crack eggs into bowl"), (0.5, 2.0, "pick up an egg")]
    assert crack.num_steps == 61 and crack.metadata["goal"]["goal_category"] == "COOKING:MAKE_OMELET"
    shown = _decode(whisk)
    assert shown[0] == 9 * 30 and shown[-1] == 16 * 30
    fixed = Ego4D(annotations=fx["goalstep"], clip="fixed:10").read(items[0])
    assert [ep.tasks for ep in fixed] == [["make an omelet"]] * 2
    assert [s.text for s in fixed[0].language] == ["crack eggs into bowl", "pick up an egg", "whisk the eggs"]


def test_narration_options_and_bad_input(ego, tmp_path):
    root, fx = ego
    conv = Ego4D(narrations=fx["narration"], narration_pass="2", narration_window="1.0", clip="segments")
    item = next(it for it in conv.discover(str(root / "v2")) if it.id == f"ego4d_{UID1}")
    eps = conv.read(item)
    assert [ep.tasks[0] for ep in eps] == ["#C C lifts item 0 #unsure", "#C C lifts item 1 #unsure"]
    assert eps[0].metadata["clip"]["start_s"] == pytest.approx(0.7) and eps[0].num_steps == 11
    with pytest.raises(ConfigError, match="narration_pass is 1, 2 or both"):
        Ego4D(narration_pass="3")

    src = tmp_path / "src"
    shutil.copytree(root / "v2", src)
    (src / "full_scale" / f"{UID2}.mp4").unlink()
    narr = json.loads(open(fx["narration"]).read())
    narr[UID1]["narration_pass_1"]["narrations"].append({"timestamp_sec": 99.0, "narration_text": "late"})
    (src / "annotations" / "narration.json").write_text(json.dumps(narr))
    items = {it.id: it for it in Ego4D().discover(str(src))}
    with pytest.raises(SourceError, match=f"video {UID2}.mp4 not found under --input"):
        Ego4D().read(items[f"ego4d_{UID2}"])
    with pytest.raises(SourceError, match=r"span 'pass1_7' \[97.750, 99.000\] s is outside the video \(20.000 s"):
        Ego4D().read(items[f"ego4d_{UID1}"])
    assert np.isfinite(eps[0].steps["extra.source_time_s"]).all()
