"""The output failing under a job, and two jobs on one output. A full disk or a read-only output
stops the job with an error saying so; no partial shard is ever visible, what was committed stays
consistent, and the same command resumes once the output is writable. A second job on an output
being written refuses, naming the holder; the lock of a dead process is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

import wamdata
from pipelines.executors import RayExecutor
from tests.fixtures.synthetic import SOURCE, write_npz_tree
from wamdata.convert import ConvertConfig, convert
from wamdata.errors import ConfigError, OutputError
from wamdata.format import layout
from wamdata.format.index import DatasetIndex


def _cfg(src, out, **kw):
    return ConvertConfig(source=SOURCE, input=str(src), output=str(out), quiet=True, unit_size=1, **kw)


@pytest.fixture
def small_fs(tmp_path):
    """A 256 kB tmpfs the test can fill, remount read-only and grow (needs root, as on CI)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _remount(mnt, opts):
    subprocess.run(["mount", "-o", f"remount,{opts}", str(mnt)], check=True)


def _consistent(out):
    """Every shard file is committed (has its done marker) and every committed shard is whole."""
    idx = DatasetIndex(*layout.open_fs(str(out)))
    committed = sorted(p.rsplit("/", 1)[-1] for p in idx.committed_shards())
    on_disk = sorted(p for p in os.listdir(out / "shards") if p.endswith(".tar"))
    assert on_disk == committed
    for rel in idx.committed_shards():
        assert os.path.getsize(out / rel) > 0
    return idx.rows().num_rows


def test_disk_full_stops_the_job_cleanly_and_a_later_run_resumes(tmp_path, small_fs, ray_session):
    written = write_npz_tree(tmp_path / "src", n=12, T=40)   # ~560 kB of shards: more than fits
    out = small_fs / "ds"
    with pytest.raises(OutputError, match="No space left on device") as e:
        with RayExecutor(workers=2) as ex:
            convert(_cfg(tmp_path / "src", out, workers=2), ex)
    assert "run the same command again to resume" in str(e.value)
    landed = _consistent(out)
    assert 0 < landed < 12
    assert not (out / layout.LOCK_FILE).exists()
    _remount(small_fs, "size=20m")
    with RayExecutor(workers=2) as ex:
        report = convert(_cfg(tmp_path / "src", out, workers=2), ex)
    assert report.skipped == landed and report.converted == 12 - landed and report.failures_total == 0
    ids = wamdata.open_dataset(str(out)).episodes.column("episode_id").to_pylist()
    assert sorted(ids) == sorted(written)


def test_read_only_output_is_a_clear_error_and_resumes_when_writable(tmp_path, small_fs):
    write_npz_tree(tmp_path / "src", n=4, T=8)
    out = small_fs / "ds"
    assert convert(_cfg(tmp_path / "src", out, limit=2)).converted == 2
    _remount(small_fs, "ro")
    with pytest.raises(OutputError, match="Read-only file system"):
        convert(_cfg(tmp_path / "src", out))
    assert len(wamdata.open_dataset(str(out)).episodes) == 2    # readers still see the committed dataset
    _remount(small_fs, "rw")
    report = convert(_cfg(tmp_path / "src", out))
    assert report.converted == 2 and report.skipped == 2


def test_a_second_job_on_the_same_output_refuses_naming_the_holder(tmp_path):
    write_npz_tree(tmp_path / "src", n=3, T=8)
    out = tmp_path / "ds"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / layout.LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                                        "job": "wamdata convert --source droid", "since": "x"}))
        with pytest.raises(ConfigError, match=f"another job is writing this dataset: 'wamdata convert --source droid', "
                                              f"pid {holder.pid}"):
            convert(_cfg(tmp_path / "src", out))
        assert not (out / "shards").exists(), "the refused job touched nothing"
    finally:
        holder.kill()
        holder.wait()
    # the holder is dead now: its lock is stale, taken over, and released at the end
    report = convert(_cfg(tmp_path / "src", out))
    assert report.converted == 3 and not (out / layout.LOCK_FILE).exists()


def test_two_real_jobs_started_together_never_interleave(tmp_path):
    """Two drivers race for one output: exactly one converts, the other refuses before writing."""
    write_npz_tree(tmp_path / "src", n=6, T=8)
    out = tmp_path / "ds"
    job = (f"import sys\nfrom wamdata.convert import ConvertConfig, convert\nfrom wamdata.errors import ConfigError\n"
           f"try:\n    r = convert(ConvertConfig(source={SOURCE!r}, input={str(tmp_path / 'src')!r}, "
           f"output={str(out)!r}, unit_size=1, quiet=True))\n    print('converted', r.converted)\n"
           f"except ConfigError as e:\n    print('refused', e)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    procs = [subprocess.Popen([sys.executable, "-c", job], stdout=subprocess.PIPE, text=True, env=env, cwd=root)
             for _ in range(2)]
    outs = sorted(p.communicate(timeout=300)[0].strip().splitlines()[-1] for p in procs)
    ids = wamdata.open_dataset(str(out)).episodes.column("episode_id").to_pylist()
    assert len(ids) == len(set(ids)) == 6
    if outs[0].startswith("converted") and outs[1].startswith("converted"):
        # the second started after the first had finished: it found everything done
        assert sorted(outs) == ["converted 0", "converted 6"]
    else:
        assert outs[0] == "converted 6" and outs[1].startswith("refused") and "another job is writing" in outs[1]
