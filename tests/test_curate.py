"""Curation: planted defects found by the right signal (and clean episodes left alone), filters and
views through the loader, stats and export, the CLI."""

import json
import math

import numpy as np
import pytest
import yaml

from tests.fixtures.defects import CLEAN, make_defects_dataset
from wamdata import curate
from wamdata.errors import ConfigError
from wamdata.loader.manifest import compile_filter, load_manifest
from wamdata.loader.plan import kept_anchors


@pytest.fixture(scope="module")
def signals(tmp_path_factory, ray_session):
    """The dataset, its signals computed by the real Ray job on 2 workers."""
    from pipelines.curate_job import compute_signals

    path = make_defects_dataset(tmp_path_factory.mktemp("defects") / "ds")
    table = compute_signals(path, workers=2)
    rows = {r["episode_id"]: r for r in table.to_pylist()}
    return path, rows


# (episode, signal column, test of a flagged value, test of a clean value)
PLANTED = [
    ("blurred", "blur", lambda v: v < 50, lambda v: v > 500),
    ("frozen", "repeated_frames", lambda v: v > 0.3, lambda v: v == 0),
    ("black", "black_frames", lambda v: v == 1.0, lambda v: v == 0),
    ("spike", "action_jumps", lambda v: v >= 1, lambda v: v == 0),
    ("spike", "action_jerk", lambda v: v >= 1, lambda v: v == 0),
    ("duplicate", "duplicate_of", lambda v: v == "clean-0", lambda v: v is None),
    ("gap", "ts_gaps", lambda v: v == 1, lambda v: v == 0),
    ("gap", "dropped_frames", lambda v: v == 4, lambda v: v == 0),
    ("chatter", "gripper_chatter_hz", lambda v: v >= 5, lambda v: v <= 1),
    ("garbled", "lang_garbled", lambda v: v is True, lambda v: v is False),
    ("silent", "lang_empty", lambda v: v is True, lambda v: v is False),
    ("idle", "idle_ranges", lambda v: v == [[11, 21]], lambda v: v == []),
    ("nan", "nonfinite", lambda v: v == 1, lambda v: v == 0),
    ("drift", "action_state_error", lambda v: v > 1, lambda v: v < 0.01),
]


@pytest.mark.parametrize("episode,column,flagged,clean", PLANTED, ids=[f"{p[0]}-{p[1]}" for p in PLANTED])
def test_planted_defect_found_and_clean_episodes_not_flagged(signals, episode, column, flagged, clean):
    _, rows = signals
    assert flagged(rows[episode][column]), (episode, column, rows[episode][column])
    for e in CLEAN:
        assert clean(rows[e][column]), (e, column, rows[e][column])


def test_clean_episodes_have_no_defect_at_all(signals):
    _, rows = signals
    for e in CLEAN:
        r = rows[e]
        assert r["blur"] > 500 and r["dark_frames"] == r["bright_frames"] == 0 and 0.3 < r["luma"] < 0.7
        assert r["state_jumps"] == r["ts_backwards"] == r["gripper_flips"] - 1 == 0
        assert r["ts_jitter"] < 1e-6 and r["idle_s"] == 0 and not r["lang_duplicate"]


def test_side_table_resumes_per_shard_and_documents_columns(signals):
    path, rows = signals
    settings = curate.SignalSettings()
    assert curate.pending_shards(path, settings) == []
    info = json.load(open(f"{path}/{curate.SIGNALS_INFO}"))
    assert info["episodes"] == len(rows) and set(curate.COLUMNS) <= set(info["columns"])
    # another setting recomputes everything; a lost part only its shard
    assert len(curate.pending_shards(path, curate.SignalSettings(jump_z=6.0))) == len(rows)
    import os

    parts = sorted(os.listdir(f"{path}/{curate.PARTS_DIR}"))
    os.remove(f"{path}/{curate.PARTS_DIR}/{parts[0]}")
    todo = curate.pending_shards(path, settings)
    assert len(todo) == 1
    again = curate.compute_signals(path, settings)          # in-process, only the missing shard
    assert {r["episode_id"]: r["blur"] for r in again.to_pylist()} == {e: r["blur"] for e, r in rows.items()}


def test_filters_over_index_and_signal_columns(signals):
    path, rows = signals
    view = curate.curate_view(path, ["success == true and blur > 80 and duration_s >= 2", "duplicate_of is None"])
    kept = {e for e, k in zip(view.index["episode_id"].to_pylist(), view.kept) if k}
    want = {e for e, r in rows.items() if r["blur"] > 80 and r["duplicate_of"] is None}
    success = dict(zip(view.index["episode_id"].to_pylist(), view.index["success"].to_pylist()))
    assert kept == {e for e in want if success[e]} and kept
    with pytest.raises(ConfigError, match="blurr"):
        curate.curate_view(path, ["blurr > 3"])
    with pytest.raises(ConfigError):
        compile_filter("__import__('os').system('true')")


def _windows(view_path, **kw):
    from wamdata.loader.stream import WamStream

    stream = WamStream(view_path, cameras=["front"], history=2, future=[2], action_horizon=4, shuffle_buffer=1,
                       normalize=None, **kw)
    return list(stream)


def test_view_roundtrips_through_the_loader_only_kept_windows(signals, tmp_path):
    path, rows = signals
    view = curate.curate_view(path, ["action_jumps == 0", "ts_gaps == 0"], drop_idle=True)
    out = curate.write_view(view, str(tmp_path / "view.yaml"))
    spec = load_manifest(out).datasets[0]
    assert spec.ranges == {"idle": ((0, 11), (21, 30))}
    kept = set(spec.episodes)
    assert "spike" not in kept and "gap" not in kept and "idle" in kept
    seen = [(s["episode_id"], s["t"]) for s in _windows(out)]
    want = [(e, t) for e in kept for t in range(30) if e != "idle" or t < 11 or t >= 21]
    assert sorted(seen) == sorted(want)
    # each kept range bounds its windows: nothing of the idle segment appears, padded instead
    for s in _windows(out):
        if s["episode_id"] == "idle" and s["t"] == 21:
            assert s["frames_is_pad"].tolist() == [True, False]
        if s["episode_id"] == "idle" and s["t"] == 10:
            assert s["future_is_pad"].tolist() == [True] and s["actions_is_pad"].tolist() == [False, True, True, True]


def test_kept_anchors_with_stride_and_resampling():
    t, lo, hi = kept_anchors(30, 10.0, None, 4, ((0, 11), (21, 30)))
    assert t.tolist() == [0, 4, 8, 24, 28] and lo.tolist() == [0, 0, 0, 21, 21] and hi.tolist() == [10] * 3 + [29] * 2
    t, lo, hi = kept_anchors(15, 10.0, 5.0, 1, ((0, 11), (21, 30)))   # resampled step k is stored step 2k
    assert t.tolist() == [0, 1, 2, 3, 4, 5, 11, 12, 13, 14]
    assert kept_anchors(7, 10.0, None, 3, None)[0].tolist() == [0, 3, 6]


def test_stats_of_a_view_equal_numpy_over_kept_steps(signals, tmp_path):
    import wamdata
    from pipelines.stats_job import compute_stats

    path, _ = signals
    view = curate.curate_view(path, ["blur > 80"], drop_idle=True)
    out = curate.write_view(view, str(tmp_path / "v.yaml"))
    before = open(f"{path}/stats.json").read()
    stats = compute_stats(out)
    assert open(f"{path}/stats.json").read() == before       # the dataset's own statistics untouched
    spec = load_manifest(out).datasets[0]
    ds = wamdata.open_dataset(path)
    vals = []
    for e in spec.episodes:
        a = ds.episode(e).array("state.eef_pos")
        if e in spec.ranges:
            a = np.concatenate([a[x:y] for x, y in spec.ranges[e]])
        vals.append(a)
    vals = np.concatenate(vals)
    got = stats["all"]["state.eef_pos"]
    assert got["count"] == len(vals) == stats["steps"]
    np.testing.assert_allclose(got["mean"], vals.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["std"], vals.std(0), rtol=1e-9)


def test_export_accepts_a_view(signals, tmp_path):
    from wamdata.export import export_lerobot

    path, _ = signals
    view = curate.curate_view(path, ["blur > 80 and black_frames == 0"])
    out = curate.write_view(view, str(tmp_path / "v.yaml"))
    dst = export_lerobot(out, str(tmp_path / "lr"), progress=False)
    info = json.load(open(f"{dst}/meta/info.json"))
    assert info["total_episodes"] == int(view.kept.sum()) == len(load_manifest(out).datasets[0].episodes)


def test_cli_dry_run_prints_kept_per_source_and_hours_lost(signals, tmp_path, capsys):
    from wamdata.cli import main

    path, rows = signals
    assert main(["curate", path, "--filter", "blur > 80", "--drop-idle", "--dry-run"]) == 0
    text = capsys.readouterr().out
    line = next(l for l in text.splitlines() if l.startswith("fixture"))
    kept = sum(1 for r in rows.values() if r["blur"] > 80)
    assert f"{kept} of {len(rows)}" in line
    lost_h = (len(rows) - kept) * 3.0 / 3600 + 1.0 / 3600      # dropped episodes + the 1 s idle segment
    assert math.isclose(float(line.split()[-1]), lost_h, abs_tol=1e-3)
    assert not (tmp_path / "v.yaml").exists()
    assert main(["curate", path, "--filter", "blur > 80", "--out", str(tmp_path / "v.yaml")]) == 0
    doc = yaml.safe_load(open(tmp_path / "v.yaml"))
    assert doc["datasets"][0]["path"].endswith("ds") and len(doc["datasets"][0]["episodes"]) == kept
    assert main(["curate", path, "--filter", "nope > 1", "--dry-run"]) == 2


def test_view_with_bad_ranges_is_refused(tmp_path):
    (tmp_path / "v.yaml").write_text("datasets:\n  - path: x\n    keep_steps: {a: [[5, 2]]}\n")
    with pytest.raises(ConfigError, match="keep_steps"):
        load_manifest(str(tmp_path / "v.yaml"))


def test_delta_joint_commands_are_checked_against_the_joints_they_move():
    """action.joint_delta_pos (ManiSkill's pd_joint_delta_pos) is integrated against state.joint_pos."""
    from wamdata.schema import feature_for
    from wamdata.signals import consistency_signal

    delta = 0.01 + np.random.default_rng(3).normal(0, 0.002, size=(40, 7))   # the arm sweeps one way
    joints = np.vstack([np.zeros((1, 7)), np.cumsum(delta, axis=0)])[:40]   # state t+1 = state t + action t
    feats = {"action.joint_delta_pos": feature_for("action.joint_delta_pos", delta),
             "state.joint_pos": feature_for("state.joint_pos", joints)}
    assert feats["action.joint_delta_pos"].encoding == "delta"
    assert consistency_signal({"action.joint_delta_pos": delta, "state.joint_pos": joints}, feats) < 1e-9
    off = consistency_signal({"action.joint_delta_pos": delta * 2, "state.joint_pos": joints}, feats)
    assert off > 0.9   # commanded twice the path the joints took: drift ~ the whole path
