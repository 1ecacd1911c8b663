"""Statistics: exact moments and bounded-rank-error quantiles against numpy on the full data, a pure and
associative merge, per-embodiment grouping, stats.json I/O, the Ray job, the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wamdata.errors import FormatError
from wamdata.format.writer import write_dataset
from wamdata.schema import Episode
from wamdata.stats import (
    QUANTILES,
    FeatureStats,
    StatsPartial,
    compute_stats,
    load_stats,
    merge,
    merge_all,
)

RANK_TOL = 0.005  # the bound: quantiles within 0.5% rank error
EMBODIMENTS = ("franka", "ur5")
TASKS = ("open the drawer", "stack the blocks", "wipe the table")


def make_episode(i: int, T: int, embodiment: str, rng: np.random.Generator) -> Episode:
    ep = Episode(f"synth/{i:03d}", "synth", "sim", embodiment, 10.0, {"timestamp": np.arange(T) / 10.0},
                 action_space="joint_pos", tasks=[TASKS[i % 3]] if i % 4 != 3 else [], success=i % 3 != 0)
    shift = 3.0 if embodiment == "ur5" else 0.0
    # Skewed, heavy-tailed and offset dimensions: a mean far from 0 checks the stable variance.
    joints = np.stack([rng.normal(1e4 + shift, 1e-2, T), rng.lognormal(0.0, 1.0, T), rng.standard_t(3, T),
                       rng.uniform(-np.pi, np.pi, T)], axis=1)
    ep.add("state.joint_pos", joints)
    ep.add("action.joint_pos", joints + rng.normal(0, 0.1, joints.shape))
    ep.add("state.gripper", rng.uniform(0, 1, (T, 1)))
    ep.add("extra.counter", rng.integers(0, 50, T).astype(np.int32))     # ties: a discrete distribution
    wrench = rng.normal(shift, 2.0, (T, 2, 3))
    wrench[rng.uniform(size=T) < 0.05, 0, 1] = np.nan                     # missing sensor values
    ep.add("extra.wrench", wrench)
    ep.add("extra.idle", rng.uniform(size=T) < 0.25)                      # bool: counted, not normalised
    ep.add("extra.label", np.array(["a"] * T))                            # strings: skipped
    return ep


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """12 episodes, 2 embodiments, 60k steps, several shards; plus the raw arrays for numpy."""
    rng = np.random.default_rng(7)
    episodes = [make_episode(i, 4000 + 137 * i, EMBODIMENTS[i % 2], rng) for i in range(12)]
    path = str(tmp_path_factory.mktemp("stats") / "ds")
    write_dataset(path, episodes, shard_size_mb=0.5)
    return path, episodes


def flat(episodes, name, embodiment=None):
    rows = [ep.steps[name] for ep in episodes if embodiment in (None, ep.embodiment)]
    x = np.concatenate(rows)
    return x.reshape(len(x), -1).astype(np.float64)


def check_feature(entry: dict, x: np.ndarray) -> None:
    """One stats.json feature entry against numpy on the full data (NaN excluded)."""
    assert entry["count"] == len(x)
    for j in range(x.shape[1]):
        col = np.sort(x[np.isfinite(x[:, j]), j])
        np.testing.assert_allclose(entry["mean"][j], col.mean(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(entry["std"][j], col.std(), rtol=1e-9, atol=1e-12)
        assert entry["min"][j] == col[0] and entry["max"][j] == col[-1]
        for key, q in QUANTILES.items():
            est = entry[key][j]
            lo = np.searchsorted(col, est, side="left") / len(col)   # fraction strictly below
            hi = np.searchsorted(col, est, side="right") / len(col)  # fraction at or below
            assert lo - RANK_TOL <= q <= hi + RANK_TOL, (key, j, q, lo, hi)


def test_stats_equal_numpy_on_full_data(dataset):
    path, episodes = dataset
    import wamdata

    assert len(wamdata.open_dataset(path).shards) >= 3
    stats = compute_stats(path)
    assert stats["format_version"] == 1
    assert stats["episodes"] == 12 and stats["steps"] == sum(ep.num_steps for ep in episodes) > 50_000
    names = {"state.joint_pos", "action.joint_pos", "state.gripper", "extra.counter", "extra.wrench"}
    assert set(stats["all"]) == names                    # bools and strings get no statistics
    for name in sorted(names):
        check_feature(stats["all"][name], flat(episodes, name))
    assert stats["all"]["extra.wrench"]["shape"] == [2, 3]
    missing = np.isnan(flat(episodes, "extra.wrench")).sum(axis=0)
    assert stats["all"]["extra.wrench"]["nonfinite"] == missing.tolist() and missing[1] > 0
    idle = np.concatenate([ep.steps["extra.idle"] for ep in episodes])
    assert stats["flags"]["all"]["extra.idle"]["fraction"] == pytest.approx(idle.mean())


def test_grouped_per_embodiment(dataset):
    path, episodes = dataset
    stats = compute_stats(path, write=False)
    assert sorted(stats["by_embodiment"]) == list(EMBODIMENTS)
    for emb in EMBODIMENTS:
        group = stats["by_embodiment"][emb]
        for name in ("state.joint_pos", "extra.wrench"):
            check_feature(group[name], flat(episodes, name, emb))
    # the groups really differ (ur5 is shifted) and "all" lies between them
    fr, ur = (stats["by_embodiment"][e]["extra.wrench"]["mean"][0] for e in EMBODIMENTS)
    assert ur - fr == pytest.approx(3.0, abs=0.1)
    assert fr < stats["all"]["extra.wrench"]["mean"][0] < ur


def test_stats_json_written_atomically_and_loaded(dataset, tmp_path):
    path, _ = dataset
    stats = compute_stats(path)
    assert load_stats(path) == json.loads(json.dumps(stats))
    import os

    assert not [f for f in os.listdir(path) if f.endswith(".tmp")]
    with pytest.raises(FormatError) as err:
        load_stats(str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "stats.json") in msg and f"wamdata stats {tmp_path}" in msg


def _partials(arrays, k=1000):
    """Partials over consecutive chunks of arrays (one feature, one embodiment)."""
    parts = []
    for chunk in arrays:
        p = StatsPartial(k)
        p.add_episode("e", {"state.x": chunk})
        parts.append(p)
    return parts


def test_merge_is_pure_associative_and_equals_whole():
    rng = np.random.default_rng(1)
    chunks = [rng.normal(1e3, 5.0, (n, 3)) for n in (7000, 1, 12000, 30000)]
    whole = FeatureStats.from_array(np.concatenate(chunks))
    a, b, c, d = (StatsPartial.from_state(p.to_state()) for p in _partials(chunks))  # serialisable
    before = json.dumps(a.to_json())
    left = merge(merge(merge(a, b), c), d)
    right = merge(a, merge(b, merge(c, d)))
    folded = merge_all([a, b, c, d])
    assert json.dumps(a.to_json()) == before                   # merge never mutates its inputs
    x = np.concatenate(chunks)
    for p in (left, right, folded):
        fs = p.groups["e"]["state.x"]
        assert p.episodes == 4 and p.steps == len(x) and fs.rows == len(x)
        np.testing.assert_allclose(fs.mean, whole.mean, rtol=1e-12)
        np.testing.assert_allclose(fs.std, whole.std, rtol=1e-9)
        np.testing.assert_allclose(fs.std, x.std(axis=0), rtol=1e-9)
        assert np.array_equal(fs.min, x.min(axis=0)) and np.array_equal(fs.max, x.max(axis=0))
        assert [s.n for s in fs.sketches] == [len(x)] * 3
        srt = np.sort(x, axis=0)
        for q in (0.01, 0.5, 0.99):
            rank = (srt <= fs.quantile(q)).mean(axis=0)
            assert np.all(np.abs(rank - q) <= RANK_TOL)


def test_merge_with_empty_and_nan_columns():
    x = np.array([[1.0, np.nan], [3.0, np.nan]])
    fs = FeatureStats.from_array(x)
    out = fs.to_json()
    assert out["mean"] == [2.0, None] and out["std"] == [1.0, None] and out["q50"][1] is None
    assert out["nonfinite"] == [0, 2]
    empty = FeatureStats.empty((2,))
    assert fs.merge(empty).to_json() == out and empty.merge(fs).to_json() == out
    assert merge_all([]).to_json()["all"] == {}


def test_ray_job_equals_in_process(dataset, ray_session):
    from pipelines.stats_job import compute_stats as job

    path, episodes = dataset
    local = job(path, workers=0, write=False)
    remote = job(path, workers=2)
    assert remote["episodes"] == local["episodes"] and remote["steps"] == local["steps"]
    for name, entry in local["all"].items():
        for key in ("count", "min", "max"):
            assert remote["all"][name][key] == entry[key]
        np.testing.assert_allclose(remote["all"][name]["mean"], entry["mean"], rtol=1e-12)
        np.testing.assert_allclose(remote["all"][name]["std"], entry["std"], rtol=1e-9)
    check_feature(remote["by_embodiment"]["ur5"]["state.joint_pos"], flat(episodes, "state.joint_pos", "ur5"))
    assert load_stats(path)["steps"] == local["steps"]


def test_report_and_cli(dataset, tmp_path, capsys):
    from wamdata.cli import main
    from wamdata.stats_report import format_report, summarize

    path, episodes = dataset
    s = summarize(path, compute_stats(path, write=False), by="task")
    assert s["episodes"] == 12 and s["steps"] == sum(ep.num_steps for ep in episodes)
    assert s["breakdown"]["(none)"]["episodes"] == 3 and s["distinct_tasks"] == 3
    assert s["language_coverage"] == pytest.approx(9 / 12)
    assert s["success_rate"] == pytest.approx(8 / 12)
    assert s["episode_length"]["steps"] == {"min": 4000, "median": 4000 + 137 * 5.5, "max": 4000 + 137 * 11}
    assert s["idle_fraction"] == pytest.approx(np.concatenate([ep.steps["extra.idle"] for ep in episodes]).mean())
    assert s["failures"] == 0 and s["bytes"] > 0 and s["action_spaces"] == {"joint_pos": 12}
    text = format_report(s)
    assert "state.joint_pos[3]" in text and "extra.wrench[1,2]" in text and "stack the blocks" in text

    out = tmp_path / "report.json"
    assert main(["stats", path, "--by", "embodiment", "--json", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "by embodiment" in printed and "ur5" in printed and "q99" in printed
    report = json.loads(out.read_text())
    assert report["breakdown"]["ur5"]["episodes"] == 6 and report["stats"] == load_stats(path)
    assert main(["stats", str(tmp_path / "missing")]) == 2


def test_partials_kept_at_write_time_equal_the_stats_read_back(dataset, tmp_path):
    """What the conversion job stores per shard (StatsPartial observing episodes in memory as the
    writer writes them, stored as JSON bytes beside the done marker) merges to the stats.json that
    `wamdata stats` reads back from the shards: NaN, ints, bools and strings handled alike."""
    from wamdata.format.index import DatasetIndex
    from wamdata.format.writer import VideoOptions, write_unit
    from wamdata.stats import conversion_stats, dump_state, load_state

    _, episodes = dataset
    idx = DatasetIndex.open(str(tmp_path / "ds"))
    for u in range(3):
        work = ((ep.episode_id, "", (lambda ep=ep: [ep])) for ep in episodes[u::3])
        result = write_unit(idx.fs, idx.root, f"u{u}", work, VideoOptions(), shard_size_mb=0.3, summary=StatsPartial)
        assert len(result.summaries) == len(result.shards) >= 2
        idx.commit(result)
    idx.finalize()
    parts = dict(idx.shard_summaries())
    assert all(b is not None for b in parts.values()) and len(parts) >= 6
    state = load_state(next(iter(parts.values())))
    assert dump_state(StatsPartial.from_state(state).to_state()) == dump_state(state)   # lossless round trip
    kept = conversion_stats(str(tmp_path / "ds"), idx.shard_summaries(), write=False)
    read = compute_stats(str(tmp_path / "ds"), write=False)
    assert kept["counters"] == read["counters"] and kept["flags"] == read["flags"]
    assert (kept["episodes"], kept["steps"]) == (read["episodes"], read["steps"])
    for group in ("all", *EMBODIMENTS):
        a = kept["all"] if group == "all" else kept["by_embodiment"][group]
        b = read["all"] if group == "all" else read["by_embodiment"][group]
        assert a.keys() == b.keys()
        for name in a:
            for key in ("count", "shape", "min", "max", "nonfinite"):
                assert a[name].get(key) == b[name].get(key), (group, name, key)
            np.testing.assert_allclose(a[name]["mean"], b[name]["mean"], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(a[name]["std"], b[name]["std"], rtol=1e-9, atol=1e-12)
    for name, entry in kept["all"].items():
        check_feature(entry, flat(episodes, name))


def test_image_like_extra_features_are_kept_but_not_summarised(tmp_path):
    """A per-step depth map (ManiSkill) stays in the data; stats cover the vectors, not its pixels."""
    rng = np.random.default_rng(0)
    ep = make_episode(0, 20, "franka", rng)
    ep.add("extra.depth", rng.integers(0, 3000, (20, 48, 64)).astype(np.int16))
    path = str(tmp_path / "ds")
    write_dataset(path, [ep])
    stats = compute_stats(path)
    assert "extra.depth" not in stats["all"] and "state.joint_pos" in stats["all"]
    from wamdata.format.reader import Dataset

    stored = Dataset(path).episode(ep.episode_id).array("extra.depth")
    np.testing.assert_array_equal(stored, ep.steps["extra.depth"])


@pytest.mark.parametrize("first", ["decord", "stats"])
def test_stats_and_the_decord_backend_share_a_process(tmp_path, first):
    """decord's RTLD_GLOBAL library exports an old-ABI std::random_device::_M_init that broke
    DataSketches' compaction ("random_device could not be read") in any process that had decoded with
    decord: a trainer on the decord backend computing stats, a benchmark timing both. A fresh
    interpreter per order, since symbol binding is per process."""
    import subprocess
    import sys
    import textwrap

    from tests.fixtures.loader_data import make_dataset

    path = make_dataset(tmp_path / "ds", n=1, steps=4, stats=False, cameras=("front",), size=(32, 32))
    decode = f"""
        import wamdata
        from wamdata.format.video import get_decoder
        ds = wamdata.open_dataset({str(path)!r})
        ep = ds.episode(ds.episodes.column("episode_id")[0].as_py())
        assert ep.frames("front", decoder=get_decoder("decord")).shape == (4, 32, 32, 3)
    """
    compact = """
        import numpy as np
        from wamdata.stats import FeatureStats
        x = np.random.default_rng(0).normal(size=(20000, 2))   # far past k: the sketches compact
        s = FeatureStats.from_array(x)
        assert np.allclose(s.quantile(0.5), np.median(x, axis=0), atol=0.05)
    """
    steps = [decode, compact] if first == "decord" else [compact, decode, compact]
    code = "\n".join(textwrap.dedent(s) for s in steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
