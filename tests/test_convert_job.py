"""The conversion job end to end: Ray fan-out, equivalence of 1 and 2 workers, resume, failures."""

import json
import os

import numpy as np
import pytest

import wamdata
from pipelines.executors import RayExecutor
from tests.fixtures.frames import psnr
from tests.fixtures.synthetic import SOURCE, write_npz_tree
from wamdata.convert import ConvertConfig, convert


def _run(src, out, workers=2, **kw):
    cfg = ConvertConfig(source=SOURCE, input=str(src), output=str(out), workers=workers, quiet=True, **kw)
    with RayExecutor(workers=workers) as ex:
        return convert(cfg, ex)


def _dump(path):
    ds = wamdata.open_dataset(str(path))
    out = {}
    for row in ds.episodes.to_pylist():
        ep = ds.episode(row["episode_id"])
        out[row["episode_id"]] = {n: ep.array(n) for n in ep.steps.column_names} | {"frames": ep.frames("front")}
    return out


def test_values_roundtrip_and_frames_match(tmp_path, ray_session):
    src = write_npz_tree(tmp_path / "src", n=4, T=15)
    report = _run(tmp_path / "src", tmp_path / "ds")
    assert report.converted == 4 and report.failed == 0 and report.ok
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert ds.info["counts"]["episodes"] == 4 and ds.info["counts"]["steps"] == 60
    for eid, arrays in src.items():
        ep = ds.episode(eid)
        np.testing.assert_array_equal(ep.array("timestamp"), arrays["timestamp"])
        np.testing.assert_array_equal(ep.array("state.eef_pos"), arrays["eef_pos"])
        np.testing.assert_array_equal(ep.array("state.eef_rot"), arrays["eef_rot"])
        np.testing.assert_array_equal(ep.array("action.joint_pos"), arrays["action"])
        frames = ep.frames("front")
        assert frames.shape == arrays["frames"].shape
        assert psnr(frames, arrays["frames"]) > 35
        assert ep.meta["tasks"] == [str(arrays["task"])]
    assert ds.features["action.joint_pos"].names == tuple(f"j{k}" for k in range(7))
    assert ds.features["state.eef_rot"].unit == "quat_xyzw"


def test_one_and_two_workers_give_the_same_dataset(tmp_path, ray_session):
    write_npz_tree(tmp_path / "src", n=6, T=10)
    _run(tmp_path / "src", tmp_path / "w1", workers=1)
    _run(tmp_path / "src", tmp_path / "w2", workers=2)
    a, b = _dump(tmp_path / "w1"), _dump(tmp_path / "w2")
    assert sorted(a) == sorted(b) and len(a) == 6
    for eid in a:
        for k in a[eid]:
            if k == "frames":
                # x264 output can differ by a few bits between worker processes (see README), never more
                assert psnr(a[eid][k], b[eid][k]) > 45
            else:
                np.testing.assert_array_equal(a[eid][k], b[eid][k])
    ia = wamdata.open_dataset(str(tmp_path / "w1")).episodes
    ib = wamdata.open_dataset(str(tmp_path / "w2")).episodes
    assert sorted(ia.column("episode_id").to_pylist()) == sorted(ib.column("episode_id").to_pylist())
    assert sum(ia.column("num_steps").to_pylist()) == sum(ib.column("num_steps").to_pylist()) == 60


def _overlap_probe(i):
    import time

    start = time.time()
    time.sleep(0.4)
    return i, start, time.time()


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_bound_the_tasks_in_flight_on_a_shared_ray(ray_session, workers):
    """The session's Ray has 2 CPUs; `workers` still caps how many units run at once."""
    with RayExecutor(workers=workers) as ex:
        assert ex.parallelism == workers
        spans = list(ex.map_unordered(_overlap_probe, [(i,) for i in range(5)], on_error=None))
    assert sorted(i for i, _, _ in spans) == list(range(5))
    most = max(sum(1 for _, s, e in spans if s <= t < e) for _, t, _ in spans)
    assert most <= workers


def test_failures_recorded_job_completes_and_exit_policy(tmp_path, ray_session):
    write_npz_tree(tmp_path / "src", n=5, T=10, corrupt=(1, 3))
    report = _run(tmp_path / "src", tmp_path / "ds")
    assert report.converted == 3 and report.failed == 2
    assert not report.ok  # default --max-failures 0
    lines = [json.loads(x) for x in (tmp_path / "ds" / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["item"] for f in lines) == ["synthetic/ep0001.npz", "synthetic/ep0003.npz"]
    assert all(f["path"].endswith(".npz") and "unreadable npz" in f["reason"] for f in lines)
    # every source item is an episode or a failure
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert len(ds) + len(ds.failures()) == 5
    report2 = _run(tmp_path / "src", tmp_path / "ds2", max_failures=2)
    assert report2.ok


def test_resume_adds_nothing_and_continues_where_it_stopped(tmp_path, ray_session):
    write_npz_tree(tmp_path / "src", n=6, T=10)
    first = _run(tmp_path / "src", tmp_path / "ds", limit=4)
    assert first.converted == 4
    again = _run(tmp_path / "src", tmp_path / "ds", limit=4)
    assert again.converted == 0 and again.skipped == 4
    rest = _run(tmp_path / "src", tmp_path / "ds")
    assert rest.converted == 2 and rest.skipped == 4
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    ids = ds.episodes.column("episode_id").to_pylist()
    assert len(ids) == len(set(ids)) == 6
    assert ds.info["counts"]["shards"] == len(os.listdir(tmp_path / "ds" / "shards"))


def test_interrupted_shard_is_never_visible_and_is_discarded(tmp_path, ray_session):
    write_npz_tree(tmp_path / "src", n=4, T=10)
    _run(tmp_path / "src", tmp_path / "ds", limit=2)
    shards = tmp_path / "ds" / "shards"
    # a worker killed mid-write leaves a temporary part; a driver killed mid-commit leaves a renamed
    # shard without its done marker. Neither is listed, and the next run removes both.
    (shards / "_tmp").mkdir(exist_ok=True)
    (shards / "_tmp" / "u000000.part-000.tar").write_bytes(b"partial")
    (shards / "shard-000099.tar").write_bytes(b"half a shard")
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert "shards/shard-000099.tar" not in ds.shards
    report = _run(tmp_path / "src", tmp_path / "ds")
    assert report.converted == 2
    assert not (shards / "shard-000099.tar").exists() and not (shards / "_tmp").exists()
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert len(ds) == 4
    assert sorted(os.listdir(shards)) == sorted(p.split("/")[-1] for p in ds.shards)


def test_a_job_killed_mid_run_resumes_to_the_same_dataset(tmp_path, ray_session):
    """SIGKILL the job while it writes and commits shards (wherever it is), then run it again: every
    episode exactly once, nothing unlisted left in shards/, and the dataset validates."""
    import signal
    import subprocess
    import sys
    import time

    from wamdata.format.check import check_dataset

    n = 24
    write_npz_tree(tmp_path / "src", n=n, T=12)
    out = tmp_path / "ds"
    job = (f"from wamdata.convert import ConvertConfig, convert\n"
           f"convert(ConvertConfig(source={SOURCE!r}, input={str(tmp_path / 'src')!r}, output={str(out)!r}, "
           f"unit_size=1, quiet=True))")
    proc = subprocess.Popen([sys.executable, "-c", job], env=dict(os.environ))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        parts = list((out / "_index").glob("*.parquet")) if (out / "_index").exists() else []
        if len(parts) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the job finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    report = _run(tmp_path / "src", out)
    assert 0 < report.converted < n and report.skipped == n - report.converted
    ds = wamdata.open_dataset(str(out))
    ids = ds.episodes.column("episode_id").to_pylist()
    assert len(ids) == len(set(ids)) == n
    assert sorted(os.listdir(out / "shards")) == sorted(p.split("/")[-1] for p in ds.shards)
    assert check_dataset(str(out)).ok


def test_overwrite_starts_afresh(tmp_path, ray_session):
    write_npz_tree(tmp_path / "src", n=3, T=10)
    _run(tmp_path / "src", tmp_path / "ds")
    report = _run(tmp_path / "src", tmp_path / "ds", overwrite=True)
    assert report.converted == 3 and report.skipped == 0
    assert len(wamdata.open_dataset(str(tmp_path / "ds"))) == 3


def test_stream_copy_keeps_the_source_bitstream(tmp_path, ray_session):
    write_npz_tree(tmp_path / "src", n=2, T=12, mp4=True)
    _run(tmp_path / "src", tmp_path / "ds", video_codec="copy")
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    ep = ds.episode("synthetic/ep0000.npz")
    assert ep.meta["cameras"]["front"]["stream_copied"] is True
    from wamdata.format.video import PyAVDecoder

    src = PyAVDecoder().decode(str(tmp_path / "src" / "ep0000.mp4"))
    np.testing.assert_array_equal(ep.frames("front"), src)
    # frame i is stamped at i / fps, so timestamp-based readers find the same frames
    import io

    import av

    with av.open(io.BytesIO(ep.video_bytes("front"))) as c:
        times = [float(f.pts * f.time_base) for f in c.decode(c.streams.video[0])]
    np.testing.assert_allclose(times, np.arange(12) / 10.0, atol=1e-6)


def test_resolution_resizes_frames(tmp_path, ray_session):
    write_npz_tree(tmp_path / "src", n=1, T=8)
    _run(tmp_path / "src", tmp_path / "ds", resolution=(32, 24))
    ep = wamdata.open_dataset(str(tmp_path / "ds")).episode("synthetic/ep0000.npz")
    assert ep.frames("front").shape == (8, 24, 32, 3)
    assert ep.meta["cameras"]["front"]["source_size"] == [64, 48]


def test_fast_decode_encodes_without_cabac_and_deblocking(tmp_path, ray_session):
    """--fast-decode is x264's tune=fastdecode: the stream says so (x264 writes its settings into an
    SEI message), the camera's metadata records it, the frames keep their quality, and resuming
    with the other setting is refused (one dataset, one encoding)."""
    from wamdata.errors import ConfigError, FormatError
    from wamdata.format.video import encode_video

    src = write_npz_tree(tmp_path / "src", n=2, T=10)
    report = _run(tmp_path / "src", tmp_path / "ds", fast_decode=True)
    assert report.converted == 2
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    ep = ds.episode("synthetic/ep0000.npz")
    data = ep.video_bytes("front")
    assert b"cabac=0" in data and b"deblock=0" in data
    assert ep.meta["cameras"]["front"]["fast_decode"] is True and ep.meta["cameras"]["front"]["codec"] == "h264"
    assert psnr(ep.frames("front"), src["synthetic/ep0000.npz"]["frames"]) > 35
    plain, _, _ = encode_video(src["synthetic/ep0000.npz"]["frames"], 10.0)
    assert b"cabac=1" in plain and b"deblock=1" in plain
    with pytest.raises(ConfigError, match="same options, video settings"):
        _run(tmp_path / "src", tmp_path / "ds")
    with pytest.raises(ConfigError, match="--fast-decode applies to h264"):
        _run(tmp_path / "src", tmp_path / "ds2", fast_decode=True, video_codec="av1")
    with pytest.raises(FormatError, match="h264 only"):
        encode_video(src["synthetic/ep0000.npz"]["frames"], 10.0, "av1", fast_decode=True)
    # a dataset begun before the setting existed resumes (its settings lack the key: the default)
    assert _run(tmp_path / "src", tmp_path / "old", limit=1).converted == 1
    path = tmp_path / "old" / "_index" / "settings.json"
    known = json.loads(path.read_text())
    del known[SOURCE]["video"]["fast_decode"]
    path.write_text(json.dumps(known))
    assert _run(tmp_path / "src", tmp_path / "old").converted == 1


def test_resume_across_a_converter_revision_is_refused_up_front(tmp_path, monkeypatch):
    """A converter whose output changed (its revision bumped) must not finish a dataset begun by the
    old one: the two declarations of a feature would only clash at the end. Settings written before
    revisions were recorded count as revision 1."""
    from wamdata.errors import ConfigError
    from wamdata.sources import get_converter

    write_npz_tree(tmp_path / "src", n=3, T=6)

    def run(**kw):
        return convert(ConvertConfig(source=SOURCE, input=str(tmp_path / "src"), output=str(tmp_path / "ds"),
                                     quiet=True, **kw))

    assert run(limit=1).converted == 1
    path = tmp_path / "ds" / "_index" / "settings.json"
    known = json.loads(path.read_text())
    assert known[SOURCE]["converter_revision"] == 1
    del known[SOURCE]["converter_revision"]
    path.write_text(json.dumps(known))
    assert run(limit=2).converted == 1          # no revision recorded: revision 1, resumes
    monkeypatch.setattr(get_converter(SOURCE), "revision", 2)
    with pytest.raises(ConfigError, match="converter revision"):
        run()
    assert run(overwrite=True).converted == 3


@pytest.mark.parametrize("codec", ["av1"])
def test_av1_encode_decodes_with_both_backends(tmp_path, ray_session, codec):
    src = write_npz_tree(tmp_path / "src", n=1, T=8)
    _run(tmp_path / "src", tmp_path / "ds", video_codec=codec)
    ep = wamdata.open_dataset(str(tmp_path / "ds")).episode("synthetic/ep0000.npz")
    assert ep.meta["cameras"]["front"]["codec"] == "av1"
    from wamdata.format.video import get_decoder

    for backend in ("pyav", "decord"):  # decord cannot read AV1 and falls back to PyAV
        frames = ep.frames("front", decoder=get_decoder(backend))
        assert psnr(frames, src["synthetic/ep0000.npz"]["frames"]) > 30


def test_mistakes_stop_before_anything_is_written_or_deleted(tmp_path):
    """Usage mistakes are errors up front, never a dataset deleted, a source tree overwritten or an
    empty 'success'."""
    from wamdata.errors import ConfigError, FormatError

    src = tmp_path / "src"
    write_npz_tree(src, n=2, T=6)
    before = sorted(os.listdir(src))

    def run(**kw):
        args = dict(source=SOURCE, input=str(src), output=str(tmp_path / "ds"), quiet=True) | kw
        return convert(ConvertConfig(**args))

    for kw, match in [
        (dict(output=str(src), overwrite=True), "overlap"),                 # the input itself
        (dict(output=str(tmp_path), overwrite=True), "overlap"),            # a folder above it
        (dict(input=str(tmp_path / "nope")), "nope: no such file or folder"),
        (dict(resolution=(0, -5)), "--resolution"),
        (dict(workers=0), "--workers"),
        (dict(source="wamdata.schema:np"), "not a converter class"),
    ]:
        with pytest.raises(ConfigError, match=match):
            run(**kw)
    assert sorted(os.listdir(src)) == before and not (tmp_path / "ds").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .* items found"):
        run(input=str(tmp_path / "empty"))
    # --overwrite deletes a dataset, not any folder; a wrong --source leaves the dataset alone
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(FormatError, match="not a wamdata dataset"):
        run(output=str(notes), overwrite=True)
    with pytest.raises(ConfigError, match="not a wamdata dataset"):
        run(output=str(notes))
    assert (notes / "todo.txt").read_text() == "keep me"
    assert run().converted == 2
    with pytest.raises(ConfigError, match="unknown source"):
        run(source="npz_tre", overwrite=True)
    assert wamdata.open_dataset(str(tmp_path / "ds")).info["counts"]["episodes"] == 2
    # resuming with other video settings would mix two resolutions in one dataset
    with pytest.raises(ConfigError, match="same options, video settings"):
        run(resolution=(32, 24))
    assert run(resolution=(32, 24), overwrite=True).converted == 2


def _source_values(arrays: dict, key: str) -> np.ndarray:
    x = np.concatenate([a[key] for a in arrays.values()])
    return x.reshape(len(x), -1)


def _check_entry(entry: dict, x: np.ndarray) -> None:
    """A stats.json entry against numpy: exact moments, quantiles within the KLL rank error."""
    assert entry["count"] == len(x)
    np.testing.assert_allclose(entry["mean"], x.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(entry["std"], x.std(axis=0), rtol=1e-9, atol=1e-12)
    assert entry["min"] == x.min(axis=0).tolist() and entry["max"] == x.max(axis=0).tolist()
    srt = np.sort(x, axis=0)
    for key, q in (("q01", 0.01), ("q50", 0.5), ("q99", 0.99)):
        below = (srt < np.asarray(entry[key])).mean(axis=0)
        at_or_below = (srt <= np.asarray(entry[key])).mean(axis=0)
        assert np.all((below - 0.005 <= q) & (q <= at_or_below + 0.005)), (key, below, at_or_below)


def test_conversion_writes_stats_the_stream_normalises_with(tmp_path, ray_session):
    """`convert` then `WamStream(out)` with the default normalize="stats": no `wamdata stats` between."""
    from wamdata.loader import WamStream
    from wamdata.stats import load_stats

    src = write_npz_tree(tmp_path / "src", n=6, T=15)
    _run(tmp_path / "src", tmp_path / "ds", workers=2, unit_size=2)
    out = str(tmp_path / "ds")
    stats = load_stats(out)
    assert stats["episodes"] == 6 and stats["steps"] == 90
    assert sorted(stats["by_embodiment"]) == ["testbot"]
    for name, key in (("state.eef_pos", "eef_pos"), ("state.gripper", "gripper"), ("action.joint_pos", "action")):
        _check_entry(stats["all"][name], _source_values(src, key))
    assert len(os.listdir(tmp_path / "ds" / "shards")) == 3      # one partial per shard, merged
    assert sorted(p for p in os.listdir(tmp_path / "ds" / "_index") if p.endswith(".stats.json")) == [
        f"shard-{i:06d}.stats.json" for i in range(3)]
    sample = next(iter(WamStream(out, cameras=[], shuffle_buffer=1)))
    assert np.isfinite(sample["state"]).all() and np.abs(sample["state"]).max() < 10   # normalised


def test_resumed_conversion_gives_the_stats_of_a_one_shot_run(tmp_path, ray_session):
    """Stats of a job stopped after some shards and resumed (a killed driver's orphan summary left
    behind, one shard's summary lost) equal a one-shot run's: every shard counted once."""
    from wamdata.stats import load_stats

    write_npz_tree(tmp_path / "src", n=7, T=12)
    _run(tmp_path / "src", tmp_path / "once", unit_size=2)
    _run(tmp_path / "src", tmp_path / "ds", limit=3, unit_size=2)
    parts = tmp_path / "ds" / "_index"
    (parts / "shard-000099.stats.json").write_bytes(b"{}")     # summary written, marker never was
    (parts / "shard-000000.stats.json").unlink()              # e.g. a shard written by an older wamdata
    _run(tmp_path / "src", tmp_path / "ds", unit_size=2)
    assert not (parts / "shard-000099.stats.json").exists()
    once, resumed = load_stats(str(tmp_path / "once")), load_stats(str(tmp_path / "ds"))
    assert resumed["episodes"] == once["episodes"] == 7 and resumed["steps"] == once["steps"] == 84
    assert resumed["counters"] == once["counters"] and resumed["flags"] == once["flags"]
    assert resumed["all"].keys() == once["all"].keys()
    for name, a in once["all"].items():
        b = resumed["all"][name]
        assert a["count"] == b["count"] and a["min"] == b["min"] and a["max"] == b["max"]
        np.testing.assert_allclose(b["mean"], a["mean"], rtol=1e-12)
        np.testing.assert_allclose(b["std"], a["std"], rtol=1e-9)
        for q in ("q01", "q50", "q99"):   # fewer values than the sketch's k: quantiles exact in both
            assert b[q] == a[q]


def test_conversion_without_stats_removes_a_stale_stats_json(tmp_path, ray_session):
    write_npz_tree(tmp_path / "src", n=4, T=10)
    _run(tmp_path / "src", tmp_path / "ds", limit=2, unit_size=2)
    assert (tmp_path / "ds" / "stats.json").exists()
    _run(tmp_path / "src", tmp_path / "ds", stats=False, unit_size=2)
    assert not (tmp_path / "ds" / "stats.json").exists()
    assert sorted(p for p in os.listdir(tmp_path / "ds" / "_index") if p.endswith(".stats.json")) == [
        "shard-000000.stats.json"]
