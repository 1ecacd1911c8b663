"""LeRobot export resume, with real interruptions: an episode whose steps member is unreadable fails
the export halfway (then is repaired), and a SIGKILL of an export running in a subprocess after its
first file roll-over. The re-run continues from the last complete file and its output equals, file for
file and byte for byte, an uninterrupted export; other settings or a folder without a resume record
are refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import wamdata
from tests.test_export_lerobot import make_dataset
from wamdata.errors import FormatError
from wamdata.export import ExportError, export_lerobot
from wamdata.format import video

LENGTHS = (8, 11, 9, 10, 12, 7, 9, 10, 8, 11)
# a few kB per file: two or three episodes of two 32x24 cameras per group of files
LIMITS = {"video_files_size_in_mb": 0.004, "data_files_size_in_mb": 0.05}
PROGRESS = ".wamdata-export/progress.json"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    make_dataset(root / "src", lengths=LENGTHS, size=(32, 24))
    clean = export_lerobot(str(root / "src"), str(root / "clean"), progress=False, **LIMITS)
    return root, Path(clean)


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".wamdata-export" not in p.parts}


def _assert_same_export(got: Path, want: Path) -> None:
    a, b = _files(got), _files(want)
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.startswith("data/")]) > 2, "the limits should give several files"
    for name in a:
        assert a[name] == b[name], name
    # what a user would check, said explicitly: rows, episodes, frame counts
    for part in ("data", "meta/episodes"):
        assert pq.read_table(got / part).equals(pq.read_table(want / part))
    info = json.loads((got / "meta/info.json").read_text())
    assert info["total_episodes"] == len(LENGTHS) and info["total_frames"] == sum(LENGTHS)
    frames = sum(video.probe(str(p))["frames"] for p in (got / "videos/observation.images.wrist").rglob("*.mp4"))
    assert frames == sum(LENGTHS)
    assert json.loads((got / PROGRESS).read_text())["complete"]


def _corrupt_steps(dataset: Path, episode_id: str) -> tuple[Path, bytes]:
    """Overwrite the steps member of one episode with zeros (the tar and the metadata stay readable);
    returns the shard and its original bytes."""
    ds = wamdata.open_dataset(str(dataset))
    row = next(r for r in ds.episodes.to_pylist() if r["episode_id"] == episode_id)
    shard = dataset / row["shard"]
    original = shard.read_bytes()
    with tarfile.open(shard) as tar:
        member = tar.getmember(f"{row['key']}.steps.parquet")
    with open(shard, "r+b") as f:
        f.seek(member.offset_data)
        f.write(b"\0" * member.size)
    return shard, original


def test_resume_after_an_unreadable_episode(source, tmp_path):
    root, clean = source
    src = tmp_path / "src"
    shutil.copytree(root / "src", src)
    ids = wamdata.open_dataset(str(src)).episodes.column("episode_id").to_pylist()
    shard, original = _corrupt_steps(src, ids[6])
    out = tmp_path / "out"
    with pytest.raises(FormatError, match=r"unreadable steps member .*\.steps\.parquet"):
        export_lerobot(str(src), str(out), progress=False, **LIMITS)
    rec = json.loads((out / PROGRESS).read_text())
    assert not rec["complete"] and 1 <= len(rec["done"]) and sum(g["episodes"] for g in rec["done"]) <= 6
    assert not (out / "meta/info.json").exists()
    first = out / "data/chunk-000/file-000.parquet"
    stamp = first.stat().st_mtime_ns
    with pytest.raises(ExportError, match="other settings"):
        export_lerobot(str(src), str(out), progress=False, video_files_size_in_mb=0.01)
    shard.write_bytes(original)   # repaired: the same settings resume
    export_lerobot(str(src), str(out), progress=False, **LIMITS)
    assert first.stat().st_mtime_ns == stamp, "a finished file is not written again"
    _assert_same_export(out, clean)
    with pytest.raises(ExportError, match="already holds a finished lerobot export"):
        export_lerobot(str(src), str(out), progress=False, **LIMITS)


def test_resume_after_sigkill(source, tmp_path):
    root, clean = source
    out = tmp_path / "out"
    code = ("import sys; from wamdata.export import export_lerobot; "
            f"export_lerobot(sys.argv[1], sys.argv[2], progress=False, **{LIMITS!r})")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root / "src"), str(out)], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / PROGRESS).exists() and json.loads((out / PROGRESS).read_text())["done"]:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the export ended before the first roll-over was seen"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    rec = json.loads((out / PROGRESS).read_text())
    assert not rec["complete"] and sum(g["episodes"] for g in rec["done"]) < len(LENGTHS)
    export_lerobot(str(root / "src"), str(out), progress=False, **LIMITS)
    _assert_same_export(out, clean)


def test_refuses_an_export_without_a_resume_record(source, tmp_path):
    root, _ = source
    old = tmp_path / "old"
    (old / "meta").mkdir(parents=True)
    (old / "meta/info.json").write_text("{}")
    with pytest.raises(ExportError, match="without a resume record"):
        export_lerobot(str(root / "src"), str(old), progress=False)
    assert os.listdir(old) == ["meta"]


def test_data_files_roll_over_without_cameras(tmp_path):
    src, eps = make_dataset(tmp_path / "src", lengths=LENGTHS, cameras=())
    out = Path(export_lerobot(src, str(tmp_path / "out"), data_files_size_in_mb=0.003, progress=False))
    info = json.loads((out / "meta/info.json").read_text())
    assert info["video_path"] is None and info["total_frames"] == sum(LENGTHS)
    files = sorted((out / "data/chunk-000").glob("*.parquet"))
    assert len(files) > 2 and all(f.stat().st_size for f in files)
    for row in pq.read_table(out / "meta/episodes").to_pylist():
        data = pq.read_table(files[row["data/file_index"]]).to_pydict()
        assert data["index"].count(row["dataset_from_index"]) == 1 and row["dataset_to_index"] - 1 in data["index"]
    assert len(json.loads((out / PROGRESS).read_text())["done"]) == len(files)
