"""The CLI as a user meets it: convert (exit codes), sources, info, validate (catches damage)."""

import json
import os
import subprocess
import sys

from tests.fixtures.synthetic import SOURCE, write_npz_tree
from wamdata.cli import main


def _convert(src, out, *extra):
    return main(["convert", "--source", SOURCE, "--input", str(src), "--output", str(out), "--quiet", *extra])


def test_convert_info_validate(tmp_path, ray_session, capsys):
    write_npz_tree(tmp_path / "src", n=3, T=10)
    assert _convert(tmp_path / "src", tmp_path / "ds") == 0
    out = capsys.readouterr().out
    assert "converted 3 episodes" in out and "30 steps" in out
    assert main(["info", str(tmp_path / "ds"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 3 and info["steps"] == 30
    assert info["cameras"]["front"]["width"] == 64
    assert info["features"]["state.eef_rot"]["unit"] == "quat_xyzw"
    assert main(["validate", str(tmp_path / "ds")]) == 0
    assert "OK — 3 episodes, 30 frames decoded" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "ds" / "stats.json")   # ready for normalize="stats"
    assert _convert(tmp_path / "src", tmp_path / "bare", "--no-stats") == 0
    assert not os.path.exists(tmp_path / "bare" / "stats.json")
    assert not any(n.endswith(".stats.json") for n in os.listdir(tmp_path / "bare" / "_index"))


def test_read_commands_exit_cleanly_as_processes(tmp_path, ray_session):
    """`info` and `validate` in their own interpreter, as a user runs them: they must exit 0 every
    time (pyarrow's pre-buffered read_table over a Python file object aborted ~4 in 5 exits)."""
    from wamdata.convert import ConvertConfig, convert

    write_npz_tree(tmp_path / "src", n=2, T=8)
    convert(ConvertConfig(source=SOURCE, input=str(tmp_path / "src"), output=str(tmp_path / "ds"), quiet=True))
    for cmd in ("info", "info", "info", "validate"):
        proc = subprocess.run([sys.executable, "-m", "wamdata.cli", cmd, str(tmp_path / "ds")],
                              capture_output=True, text=True, env=dict(os.environ), timeout=300)
        assert proc.returncode == 0, (cmd, proc.returncode, proc.stderr[-2000:])


def test_exit_status_follows_max_failures(tmp_path, ray_session, capsys):
    write_npz_tree(tmp_path / "src", n=3, T=10, corrupt=(0,))
    assert _convert(tmp_path / "src", tmp_path / "a") == 1
    err = capsys.readouterr().err
    assert "1 failed items > --max-failures 0" in err
    assert _convert(tmp_path / "src", tmp_path / "b", "--max-failures", "1") == 0


def test_validate_names_the_damaged_shard(tmp_path, ray_session, capsys):
    write_npz_tree(tmp_path / "src", n=2, T=10)
    assert _convert(tmp_path / "src", tmp_path / "ds") == 0
    import wamdata

    row = wamdata.open_dataset(str(tmp_path / "ds")).episodes.to_pylist()[0]
    shard = tmp_path / "ds" / row["shard"]
    data = bytearray(shard.read_bytes())
    mid = row["offset"] + row["size"] // 2
    data[mid: mid + 64] = bytes(64)  # damage bytes inside the episode's sample
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "ds")]) == 1
    out = capsys.readouterr().out
    assert "shard-000000.tar" in out and "problem" in out


def test_unknown_source_and_option_are_clear_errors(tmp_path, capsys):
    assert main(["convert", "--source", "nope", "--input", ".", "--output", str(tmp_path / "x")]) == 2
    assert "unknown source 'nope'; known: " in capsys.readouterr().err
    assert main(["convert", "--source", "droid", "--input", ".", "--output", str(tmp_path / "y"),
                 "--option", "colour=blue"]) == 2
    assert "droid: unknown option(s) colour; known: " in capsys.readouterr().err


def test_sources_lists_converters_with_family(capsys):
    assert main(["sources"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line[0].isspace()}
    assert {"droid", "rlds", "aloha"} <= set(rows) and all("teleop" in rows[k] for k in ("droid", "rlds", "aloha"))
    # each converter's options with their types and defaults, as --option key=value takes them
    assert "annotations: str | None = None" in out and "max_trim: int = 3" in out
    assert "preset: str | None = None" in out and "jpeg_channels: str = 'as_stored'" in out


def test_shard_size_rolls_shards_through_the_cli(tmp_path, ray_session, capsys):
    write_npz_tree(tmp_path / "src", n=6, T=10)
    assert _convert(tmp_path / "src", tmp_path / "ds", "--shard-size-mb", "0.001") == 0
    import wamdata

    ds = wamdata.open_dataset(str(tmp_path / "ds"))
    assert len(ds) == 6 and len(ds.shards) > 1
    assert sum(1 for _ in ds.shards) == len(set(ds.episodes.column("shard").to_pylist()))


def test_usage_mistakes_are_errors_before_any_work(tmp_path, capsys):
    import shutil

    import pytest

    from wamdata.convert import ConvertConfig, convert

    write_npz_tree(tmp_path / "src", n=2, T=6)
    convert(ConvertConfig(source=SOURCE, input=str(tmp_path / "src"), output=str(tmp_path / "ds"), quiet=True))
    stats_written = (tmp_path / "ds" / "stats.json").stat().st_mtime_ns   # by the conversion
    for argv in (["convert", "--source", SOURCE, "--input", "x", "--output", "y", "--workers", "-1"],
                 ["stats", str(tmp_path / "ds"), "--workers", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and "must be an integer >= " in capsys.readouterr().err
    # a report path that cannot be written fails before the statistics pass, not after it
    assert main(["stats", str(tmp_path / "ds"), "--json", str(tmp_path / "no" / "r.json"), "--quiet"]) == 2
    assert "its folder does not exist" in capsys.readouterr().err
    assert (tmp_path / "ds" / "stats.json").stat().st_mtime_ns == stats_written   # no pass ran
    # a shard gone from a copied dataset: an error naming it, for stats and export alike
    shutil.copytree(tmp_path / "ds", tmp_path / "copy")
    os.remove(tmp_path / "copy" / "shards" / "shard-000000.tar")
    for argv in (["stats", str(tmp_path / "copy"), "--quiet"],
                 ["export", str(tmp_path / "copy"), "--output", str(tmp_path / "le"), "--quiet"]):
        assert main(argv) == 2, argv
        assert "shard-000000.tar: shard listed in the index is missing" in capsys.readouterr().err
