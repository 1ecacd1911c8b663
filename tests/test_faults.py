"""Faults with a real Ray: a worker SIGKILLed mid-task, source files vanishing or truncated between
discovery and reading. Nothing is lost or duplicated: every source item ends exactly once, as an
episode or as a failure naming it, and a re-run resumes."""

from __future__ import annotations

import json

import wamdata
from pipelines.executors import RayExecutor
from tests.fixtures.faults import KILL_ONCE, VANISHING
from tests.fixtures.synthetic import write_npz_tree
from wamdata.convert import ConvertConfig, convert


def _run(source, src, out, **kw):
    cfg = ConvertConfig(source=source, input=str(src), output=str(out), workers=2, quiet=True, unit_size=1, **kw)
    with RayExecutor(workers=2) as ex:
        return convert(cfg, ex)


def _ids(path):
    return wamdata.open_dataset(str(path)).episodes.column("episode_id").to_pylist()


def test_worker_sigkilled_mid_task_is_retried_and_every_item_lands_once(tmp_path, ray_session):
    written = write_npz_tree(tmp_path / "src", n=5, T=8)
    marker = tmp_path / "killed.pid"
    report = _run(KILL_ONCE, tmp_path / "src", tmp_path / "ds",
                  options={"kill_item": "synthetic/ep0002.npz", "marker": str(marker)})
    assert marker.exists(), "the worker really was killed"
    assert report.converted == 5 and report.failed == 0 and report.ok
    ids = _ids(tmp_path / "ds")
    assert sorted(ids) == sorted(written) and len(ids) == len(set(ids))
    assert wamdata.open_dataset(str(tmp_path / "ds")).failures() == []


def test_files_vanishing_or_truncated_after_discovery_fail_named_and_resume(tmp_path, ray_session):
    written = write_npz_tree(tmp_path / "src", n=5, T=8)
    keep = (tmp_path / "src" / "ep0001.npz").read_bytes()
    options = {"vanish": "ep0001.npz", "truncate": "ep0003.npz", "marker": str(tmp_path / "once")}
    report = _run(VANISHING, tmp_path / "src", tmp_path / "ds", options=options)
    assert report.converted == 3 and report.failed == 2
    failures = {f["item"]: f for f in map(json.loads, (tmp_path / "ds" / "failures.jsonl").read_text().splitlines())}
    assert sorted(failures) == ["synthetic/ep0001.npz", "synthetic/ep0003.npz"]
    assert all(f["path"].endswith(f["item"].split("/")[1]) for f in failures.values())
    assert sorted(_ids(tmp_path / "ds")) == sorted(set(written) - set(failures))
    # the source comes back; a re-run with --retry-failed reads only the two failed items
    (tmp_path / "src" / "ep0001.npz").write_bytes(keep)
    write_npz_tree(tmp_path / "fresh", n=5, T=8)
    (tmp_path / "src" / "ep0003.npz").write_bytes((tmp_path / "fresh" / "ep0003.npz").read_bytes())
    again = _run(VANISHING, tmp_path / "src", tmp_path / "ds", retry_failed=True, options=options)
    assert again.converted == 2 and again.skipped == 3 and again.failures_total == 0
    ids = _ids(tmp_path / "ds")
    assert sorted(ids) == sorted(written) and len(ids) == len(set(ids))
