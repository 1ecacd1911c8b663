"""`wamdata validate --deep` and `--repair` on converted datasets: flipped bytes named by shard, episode
and member; old datasets without member checksums; damaged episodes converted again from their source
(untouched shards byte-identical, no duplicates); a source that is gone; a repair interrupted halfway."""

import hashlib
import json
import shutil
import tarfile
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wamdata
from pipelines.executors import RayExecutor
from tests.fixtures.frames import psnr
from tests.fixtures.synthetic import SOURCE, write_npz_tree
from tests.toolkit_flow import check_toolkit_flow
from wamdata.cli import main
from wamdata.convert import ConvertConfig, convert
from wamdata.format.check import check_dataset
from wamdata.format.checksum import crc32_combine
from wamdata.format.index import DatasetIndex
from wamdata.format.lock import WriterLock


def _convert(src, out, **kw):
    cfg = ConvertConfig(source=SOURCE, input=str(src), output=str(out), workers=2, quiet=True, unit_size=2, **kw)
    with RayExecutor(workers=2) as ex:
        report = convert(cfg, ex)
    assert report.ok
    return wamdata.open_dataset(str(out))


def _member_offset(shard_path, member: str, where: str = "data") -> int:
    """Offset in the shard of a byte in the middle of ``member``'s payload, or of its tar header."""
    with tarfile.open(shard_path) as tar:
        m = tar.getmember(member)
    return m.offset_data + m.size // 2 if where == "data" else m.offset + 148   # the header's checksum field


def _flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _rows(ds):
    return {r["episode_id"]: r for r in ds.episodes.to_pylist()}


def _fingerprint(path):
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def test_deep_names_the_shard_episode_and_member_of_each_flipped_byte(tmp_path, ray_session, capsys):
    write_npz_tree(tmp_path / "src", n=4, T=12)
    ds = _convert(tmp_path / "src", tmp_path / "ds")
    assert len(ds.shards) == 2
    rows = _rows(ds)
    assert all([m["member"] for m in r["member_crc32"]] == [f"{r['key']}.json", f"{r['key']}.steps.parquet",
                                                          f"{r['key']}.front.mp4"] for r in rows.values())
    assert main(["validate", "--deep", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "OK — 4 episodes, 48 frames decoded" in out and "deep: 12 members of 4 episodes in 2 shards" in out

    video, steps, header = (rows[f"synthetic/ep{i:04d}.npz"] for i in (0, 3, 1))
    targets = [(video, f"{video['key']}.front.mp4", "data"), (steps, f"{steps['key']}.steps.parquet", "data"),
               (header, f"{header['key']}.front.mp4", "header")]
    for row, member, where in targets:
        shard = tmp_path / "ds" / row["shard"]
        _flip(shard, _member_offset(shard, member, where))

    assert main(["validate", str(tmp_path / "ds")]) == 1   # the episode checksum sees it too, without members
    capsys.readouterr()
    assert main(["validate", "--deep", str(tmp_path / "ds")]) == 1
    out = capsys.readouterr().out
    for row, member, _ in targets:
        assert f"{tmp_path / 'ds' / row['shard']}: episode {row['episode_id']!r}, member {member}" in out
    assert "crc32" in out and "missing from the sample (its tar header" in out
    report = check_dataset(str(tmp_path / "ds"), deep=True)
    assert report.damaged == {video["episode_id"]: [f"{video['key']}.front.mp4"],
                              steps["episode_id"]: [f"{steps['key']}.steps.parquet"],
                              header["episode_id"]: [f"{header['key']}.front.mp4"]}
    assert len(report.problems) == 3 and {c for c, _ in report.problems} == {"checksum"}


def _strip_member_checksums(root):
    """What a dataset written before member checksums were recorded looks like: no such column."""
    for p in [root / "episodes.parquet", *sorted((root / "_index").glob("shard-*.parquet"))]:
        t = pq.read_table(p)
        pq.write_table(t.drop_columns(["member_crc32"]).replace_schema_metadata(t.schema.metadata), p)


def test_a_dataset_without_member_checksums_validates_and_deep_says_so(tmp_path, ray_session):
    write_npz_tree(tmp_path / "src", n=3, T=10)
    _convert(tmp_path / "src", tmp_path / "ds", limit=2)
    _strip_member_checksums(tmp_path / "ds")
    assert "member_crc32" not in wamdata.open_dataset(str(tmp_path / "ds")).episodes.column_names
    assert check_dataset(str(tmp_path / "ds")).ok
    report = check_dataset(str(tmp_path / "ds"), deep=True)
    assert report.ok and any("not recorded for 2 episode(s)" in n for n in report.notes)

    ds = _convert(tmp_path / "src", tmp_path / "ds")   # resumed by this wamdata: old and new rows in one index
    assert len(ds) == 3 and ds.episodes.column("member_crc32").null_count == 2
    report = check_dataset(str(tmp_path / "ds"), deep=True)
    assert report.ok and any("not recorded for 2 episode(s)" in n for n in report.notes)

    old = _rows(ds)["synthetic/ep0000.npz"]
    shard = tmp_path / "ds" / old["shard"]
    _flip(shard, _member_offset(shard, f"{old['key']}.steps.parquet"))
    report = check_dataset(str(tmp_path / "ds"), deep=True)
    assert report.damaged == {old["episode_id"]: []}
    assert "checksum mismatch over its members (member checksums not recorded" in report.problems[0][1]


def _arrays(ds, eid):
    ep = ds.episode(eid)
    return {n: ep.array(n) for n in ep.steps.column_names}, ep.frames("front")


def test_repair_converts_only_the_damaged_episodes_again(tmp_path, ray_session, capsys):
    write_npz_tree(tmp_path / "src", n=6, T=12)
    ds = _convert(tmp_path / "src", tmp_path / "ds")
    clean = _convert(tmp_path / "src", tmp_path / "clean")
    assert ds.shards == ["shards/shard-000000.tar", "shards/shard-000001.tar", "shards/shard-000002.tar"]
    rows = _rows(ds)
    by_shard = {s: sorted(e for e, r in rows.items() if r["shard"] == s) for s in ds.shards}
    one = by_shard["shards/shard-000001.tar"][0]           # its shard keeps the other episode
    both = by_shard["shards/shard-000002.tar"]              # its shard has nothing intact left
    for eid in [one, *both]:
        r = rows[eid]
        shard = tmp_path / "ds" / r["shard"]
        _flip(shard, _member_offset(shard, f"{r['key']}.front.mp4"))
    untouched = tmp_path / "ds" / "shards/shard-000000.tar"
    before = _fingerprint(untouched)

    assert main(["validate", "--deep", "--repair", "--workers", "2", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "repair: 3 episode(s) converted again from their source (3 retired), 0 item(s) failed" in out
    assert main(["validate", "--deep", str(tmp_path / "ds")]) == 0

    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert _fingerprint(untouched) == before
    assert not (tmp_path / "ds" / "shards/shard-000001.tar").exists()
    assert not (tmp_path / "ds" / "shards/shard-000002.tar").exists()
    ids = ds.episodes.column("episode_id").to_pylist()
    assert sorted(ids) == sorted(rows) and len(set(ids)) == 6 == ds.info["counts"]["episodes"]
    new = _rows(ds)
    assert new[by_shard["shards/shard-000000.tar"][0]]["shard"] == "shards/shard-000000.tar"
    kept = by_shard["shards/shard-000001.tar"][1]            # copied byte for byte into a new shard
    assert new[kept]["crc32"] == rows[kept]["crc32"] and new[kept]["shard"] == "shards/shard-000003.tar"
    for eid in [one, *both]:
        assert new[eid]["shard"] not in ds.shards[:1]
        (steps, frames), (want, want_frames) = _arrays(ds, eid), _arrays(clean, eid)
        assert steps.keys() == want.keys()
        for n in want:
            np.testing.assert_array_equal(steps[n], want[n])
        assert psnr(frames, want_frames) > 45
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert stats["episodes"] == 6 and stats["steps"] == 72
    assert ds.info["conversions"][-1]["repair"][0]["items"] == sorted([one, *both])
    assert not (tmp_path / "ds" / "_index" / "retired.json").exists()
    check_toolkit_flow(str(tmp_path / "ds"), tmp_path / "flow")


@pytest.mark.parametrize("gone", ["item", "input"])
def test_repair_reports_a_source_that_is_gone(tmp_path, ray_session, capsys, gone):
    write_npz_tree(tmp_path / "src", n=2, T=10)
    ds = _convert(tmp_path / "src", tmp_path / "ds")
    r = _rows(ds)["synthetic/ep0001.npz"]
    shard = tmp_path / "ds" / r["shard"]
    _flip(shard, _member_offset(shard, f"{r['key']}.steps.parquet"))
    if gone == "item":
        (tmp_path / "src" / "ep0001.npz").unlink()
    else:
        shutil.rmtree(tmp_path / "src")
    damaged = _fingerprint(shard)

    assert main(["validate", "--deep", "--repair", str(tmp_path / "ds")]) == 1
    out = capsys.readouterr().out
    reason = (f"source item no longer exists in {tmp_path / 'src'} ({SOURCE})" if gone == "item"
              else f"source {tmp_path / 'src'} ({SOURCE}) no longer exists")
    assert f"not repaired: episode synthetic/ep0001.npz (source item 'synthetic/ep0001.npz'): {reason}; " \
           "re-convert it by hand" in out
    assert _fingerprint(shard) == damaged and len(wamdata.open_dataset(str(tmp_path / "ds"))) == 2
    assert check_dataset(str(tmp_path / "ds"), deep=True).damaged.keys() == {"synthetic/ep0001.npz"}


def test_an_interrupted_repair_is_finished_by_the_next(tmp_path, ray_session, capsys):
    write_npz_tree(tmp_path / "src", n=4, T=10)
    ds = _convert(tmp_path / "src", tmp_path / "ds")
    ep0 = _rows(ds)["synthetic/ep0000.npz"]
    first = ep0["shard"]
    old_marker = tmp_path / "ds" / "_index" / first.replace("shards/", "").replace(".tar", ".parquet")
    saved_marker, saved_shard = old_marker.read_bytes(), (tmp_path / "ds" / first).read_bytes()
    # the repair's retirement runs, then the job stops before deleting the old shard and marker
    # (restored here as they were) and before converting the item again
    with WriterLock(str(tmp_path / "ds"), "test"):
        assert DatasetIndex.open(str(tmp_path / "ds")).retire({ep0["source_item"]}) == [ep0["episode_id"]]
    old_marker.write_bytes(saved_marker)
    (tmp_path / "ds" / first).write_bytes(saved_shard)

    with WriterLock(str(tmp_path / "ds"), "test"):   # opening finishes the retirement: no duplicate
        idx = DatasetIndex.open(str(tmp_path / "ds"))
        rows = idx.rows()
        assert rows.num_rows == 3 and ep0["episode_id"] not in rows.column("episode_id").to_pylist()
        assert not (tmp_path / "ds" / first).exists()
        idx.finalize()
    report = check_dataset(str(tmp_path / "ds"), deep=True)
    assert [c for c, _ in report.problems] == ["repair"] and "validate --deep --repair" in report.problems[0][1]

    assert main(["validate", "--deep", "--repair", str(tmp_path / "ds")]) == 0
    assert "repair: 1 episode(s) converted again" in capsys.readouterr().out
    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert sorted(ds.episodes.column("episode_id").to_pylist()) == [f"synthetic/ep{i:04d}.npz" for i in range(4)]
    assert check_dataset(str(tmp_path / "ds"), deep=True).ok


def test_signals_computed_before_a_repair_are_refused_until_recomputed(tmp_path, ray_session, capsys):
    """A repair moves episodes into new shards: the signal table computed before it is out of date
    (its rows for the repaired episodes describe damaged bytes), filters and the report say so, and
    the re-run computes only the new shards and removes the parts of the retired ones."""
    from wamdata.curate import PARTS_DIR, compute_signals, curate_view, load_signals, pending_shards
    from wamdata.errors import ConfigError, FormatError
    from wamdata.signals import SignalSettings

    write_npz_tree(tmp_path / "src", n=4, T=12)
    ds = _convert(tmp_path / "src", tmp_path / "ds")
    path = str(tmp_path / "ds")
    before = compute_signals(path)
    assert before.num_rows == 4 and len(curate_view(path, ["blur >= 0"]).index) == 4
    r = _rows(ds)["synthetic/ep0000.npz"]
    shard = tmp_path / "ds" / r["shard"]
    _flip(shard, _member_offset(shard, f"{r['key']}.front.mp4"))
    assert main(["validate", "--deep", "--repair", path]) == 0
    capsys.readouterr()

    with pytest.raises(FormatError, match="out of date: 1 shard.s. gone and 2 new"):
        load_signals(path)
    with pytest.raises(ConfigError, match="no signal columns: .*out of date"):
        curate_view(path, ["blur >= 0"])
    assert main(["stats", path, "--html", str(tmp_path / "report.html")]) == 0   # the report says why, no plots
    assert "quality signals are out of date" in (tmp_path / "report.html").read_text()
    original = ds.shards   # which of them holds ep0000 depends on the order Ray's tasks finished
    ds = wamdata.open_dataset(path)
    new = [s for s in ds.shards if s not in original]   # the untouched shard keeps its part
    assert r["shard"] not in ds.shards and len(ds.shards) == 3
    assert sorted(pending_shards(path, SignalSettings())) == sorted(new) == ["shards/shard-000002.tar",
                                                                             "shards/shard-000003.tar"]
    after = compute_signals(path)
    assert sorted(after["episode_id"].to_pylist()) == sorted(before["episode_id"].to_pylist())
    assert sorted(p.stem for p in (tmp_path / "ds" / PARTS_DIR).glob("*.parquet")) == \
        sorted(s.rsplit("/", 1)[-1][:-4] for s in ds.shards)   # the retired shard's part is gone
    assert load_signals(path).num_rows == 4 and curate_view(path, ["blur >= 0"]).kept.sum() == 4



@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000), st.integers(0, 70_000))
def test_member_checksums_combine_into_the_episode_checksum(a, b, zeros):
    """The writer derives the episode's CRC32 from its members' (no second pass): exactly zlib's."""
    b += bytes(zeros)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
