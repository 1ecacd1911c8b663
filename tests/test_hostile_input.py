"""Hostile input is contained: fuzzed TFRecord, tar and parquet bytes raise only the readers' own
errors (never a crash, a hang or a huge allocation), forged sizes fail before allocating, tar members
are read as data (never extracted by name), and ids derived from source metadata cannot escape the
output folder. The fuzz runs a bounded number of examples in the default suite."""

from __future__ import annotations

import io
import struct
from pathlib import Path
import tarfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters import tfrecord_io as tfr
from tests.fixtures.loader_data import make_dataset
from wamdata.errors import FormatError
from wamdata.format import layout
from wamdata.format.reader import StoredEpisode, _samples

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _record(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return (length + struct.pack("<I", tfr.masked_crc32c(length)) + payload
            + struct.pack("<I", tfr.masked_crc32c(payload)))


def _example(features: dict[str, bytes]) -> bytes:
    """A serialized tf.train.Example with one BytesList per key (hand-written wire format)."""
    def ld(num, data):
        n, out = len(data), bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                break
        return bytes([num << 3 | 2]) + bytes(out) + data
    entries = b"".join(ld(1, ld(1, k.encode()) + ld(2, ld(1, ld(1, v)))) for k, v in features.items())
    return ld(1, entries)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzzed_example_bytes_raise_only_value_errors(data):
    try:
        out = tfr.parse_example(data)
    except (ValueError, IndexError):   # what rlds.read turns into a SourceError naming the record
        return
    assert isinstance(out, dict)


@FUZZ
@given(st.data())
def test_mutated_tfrecord_files_fail_as_record_errors(data):
    good = _record(_example({"steps/observation/state": b"\x00" * 8, "name": b"abc"})) * 2
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 6))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    buf = bytes(buf[:cut])
    f = io.BytesIO(buf)
    spans = tfr.scan_records(f, len(buf))
    outcomes = []
    for span in spans:
        if span.error:   # named at scan time (what rlds records as the failure's reason)
            assert isinstance(span.error, str) and span.error
            outcomes.append("named")
            continue
        try:
            out = tfr.parse_example(tfr.read_record(f, span.offset, span.index, len(buf)))
        except (tfr.RecordError, ValueError, IndexError) as e:
            assert str(e)
            outcomes.append("refused")
        else:
            assert isinstance(out, dict)
            outcomes.append("parsed")
    assert len(outcomes) == len(spans)
    if buf == good:   # mutations that changed nothing: both records come back
        assert outcomes == ["parsed", "parsed"]


def test_forged_record_length_fails_before_allocating():
    """A header (with a valid CRC) declaring 1 TB: refused from the file size, nothing read."""
    length = struct.pack("<Q", 1 << 40)
    forged = length + struct.pack("<I", tfr.masked_crc32c(length)) + b"x" * 64
    f = io.BytesIO(forged)
    with pytest.raises(tfr.RecordError, match="declares 1099511627776 bytes, past the end"):
        tfr.read_record(f, 0, 0, len(forged))
    assert tfr.scan_records(f, len(forged))[0].error.startswith("truncated shard")


@pytest.fixture(scope="module")
def shard_bytes(tmp_path_factory):
    path = make_dataset(tmp_path_factory.mktemp("hostile") / "ds", n=2, steps=4, shard_size_mb=1, stats=False,
                        cameras=("front",), size=(16, 16))
    import wamdata

    ds = wamdata.open_dataset(path)
    with open(f"{path}/{ds.shards[0]}", "rb") as f:
        return f.read()


def _read_all(data: bytes) -> int:
    """Episodes read from a shard's bytes, every steps column parsed."""
    n = 0
    for key, members in _samples(io.BytesIO(data), "fuzzed.tar"):
        ep = StoredEpisode(key, members, f"fuzzed.tar#{key}")
        for name in ep.steps.column_names:   # parses the parquet member too
            ep.array(name)
        n += 1
    return n


@FUZZ
@given(st.data())
def test_mutated_shards_raise_only_format_errors(shard_bytes, data):
    buf = bytearray(shard_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    buf = bytes(buf[:data.draw(st.integers(0, len(buf)))])
    try:
        n = _read_all(buf)
    except FormatError as e:
        assert str(e)   # a reason, never a bare error
    else:   # a flipped byte in a member name may split a sample in two, so only unmutated input is exact
        if buf == shard_bytes:
            assert n == _read_all(shard_bytes) > 0


@FUZZ
@given(st.binary(max_size=600))
def test_random_parquet_members_raise_format_errors(blob):
    members = {"json": b'{"episode_id": "x", "features": {}, "num_steps": 1, "cameras": {}}',
               "steps.parquet": b"PAR1" + blob + b"PAR1"}
    with pytest.raises(FormatError):
        StoredEpisode("x", members, "fuzzed.tar#x").steps


def test_tar_members_are_read_as_data_never_extracted(tmp_path):
    """Member names like ../../escape or /etc/passwd are grouped as sample keys and read into memory;
    nothing is written anywhere."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("../../escape.json", b'{"episode_id": "e"}'), ("/etc/passwd.json", b'{"episode_id": "p"}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    before = set(tmp_path.parent.parent.rglob("escape*"))
    samples = list(_samples(io.BytesIO(buf.getvalue()), "hostile.tar"))
    # keys split at the first dot as webdataset does; the payloads are in memory, nothing on disk
    assert [sorted(m.values()) for _, m in samples] == [[b'{"episode_id": "e"}'], [b'{"episode_id": "p"}']]
    assert set(tmp_path.parent.parent.rglob("escape*")) == before


@pytest.mark.parametrize("episode_id", ["../../../etc/passwd", "/abs/path", "a\x00b", "x" * 5000, "ép/../..",
                                        "..", "con.json", "a.b.c"])
def test_episode_keys_stay_inside_the_shard_namespace(episode_id):
    key = layout.episode_key(episode_id)
    assert key == layout.episode_key(episode_id)          # deterministic
    assert "/" not in key and "." not in key and "\x00" not in key
    assert 0 < len(key) <= 160
    member = layout.META_MEMBER.format(key=key)
    assert member.split(".", 1)[0] == key                  # webdataset sees exactly one sample key


def test_similar_hostile_ids_keep_distinct_keys():
    ids = ["../a", "/a", "a", "a\x00", "a/"]
    assert len({layout.episode_key(i) for i in ids}) == len(ids)


def test_manifests_are_read_with_a_safe_loader(tmp_path):
    from wamdata.errors import ConfigError
    from wamdata.loader.manifest import load_manifest

    evil = tmp_path / "evil.yaml"
    evil.write_text("datasets: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError):
        load_manifest(str(evil))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("damage", ["renamed key", "shape not a list", "negative size", "features a list"])
def test_damaged_feature_declarations_are_format_errors(shard_bytes, damage):
    """A flipped byte in a metadata member (a key renamed, a size garbled) is a FormatError naming the
    member, never a TypeError from deep inside (CI's fuzz found a renamed ``name`` key)."""
    import json

    key, members = next(_samples(io.BytesIO(shard_bytes), "s.tar"))
    meta = json.loads(members["json"])
    decl = meta["features"]["state.eef_pos"]
    if damage == "renamed key":
        decl[" ame"] = decl.pop("name")
    elif damage == "shape not a list":
        decl["shape"] = 3
    elif damage == "negative size":
        decl["shape"] = [-3]
    else:
        meta["features"] = list(meta["features"])
    ep = StoredEpisode(key, {**members, "json": json.dumps(meta).encode()}, f"s.tar#{key}")
    with pytest.raises(FormatError, match=rf"s\.tar#{key}: metadata member {key}\.json"):
        ep.array("state.eef_pos")


def test_array_is_bounded_by_its_declared_shape(shard_bytes):
    """A steps member whose column length disagrees with the feature's declared shape is a
    FormatError naming the member, not a reshape crash or a silent misread."""
    samples = list(_samples(io.BytesIO(shard_bytes), "s.tar"))
    key, members = samples[0]
    import json

    meta = json.loads(members["json"])
    meta["features"]["state.eef_pos"]["shape"] = [5]
    members = {**members, "json": json.dumps(meta).encode()}
    with pytest.raises(FormatError, match="state.eef_pos"):
        StoredEpisode(key, members, f"s.tar#{key}").array("state.eef_pos")
    assert np.isfinite(StoredEpisode(key, samples[0][1], "ok").array("state.eef_pos")).all()


def _forged_hdf5(path, key: str, rows: int = 10**12, width: int = 14) -> None:
    """An HDF5 file whose header declares a dataset of ``rows`` x ``width`` float64 (~100 TB) while
    the file itself is a few kB: chunked with no chunk written, reads would allocate it all."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset(key, shape=(rows, width), dtype="f8", chunks=(1024, width))


def test_forged_hdf5_shapes_fail_fast_naming_item_and_key(tmp_path):
    import os

    from converters.aloha import Aloha
    from converters.droid import DroidRaw
    from tests.fixtures.droid import write_droid_tree
    from wamdata.errors import SourceError

    _forged_hdf5(tmp_path / "episode_0.hdf5", "observations/qpos")
    assert os.path.getsize(tmp_path / "episode_0.hdf5") < 100_000
    conv = Aloha()
    with pytest.raises(SourceError, match=r"/observations/qpos: declares shape \(1000000000000, 14\) of float64"):
        conv.read(next(conv.discover(str(tmp_path))))

    write_droid_tree(str(tmp_path / "droid"), episodes=1)
    conv = DroidRaw()
    item = next(it for it in conv.discover(str(tmp_path / "droid")) if "/success/" in it.path)
    conv.read(item)   # a good episode, until its header is forged
    h5 = next(Path(item.path).rglob("trajectory.h5"))
    import h5py

    with h5py.File(h5, "a") as f:
        del f["action/joint_position"]
        f.create_dataset("action/joint_position", shape=(10**12, 7), dtype="f8", chunks=(1024, 7))
    with pytest.raises(SourceError, match=r"trajectory.h5:/action/joint_position: declares shape"):
        conv.read(item)


def test_camera_names_from_source_metadata_are_made_safe(tmp_path):
    """A source camera named like a path becomes a safe member name; the writer refuses unsafe ones."""
    from converters.aloha import Aloha
    from tests.fixtures.aloha import write_aloha
    from wamdata.errors import SchemaError
    from wamdata.format.writer import write_dataset
    from wamdata.schema import validate

    write_aloha(str(tmp_path / "src"), episodes=1, cameras=("cam_high", "..evil.cam"))
    conv = Aloha()
    ep = validate(conv.read(next(conv.discover(str(tmp_path / "src")))))
    assert sorted(ep.cameras) == ["evil_cam", "exterior_1"]
    ep.cameras["../escape"] = ep.cameras.pop("evil_cam")
    with pytest.raises(SchemaError, match="camera names are 1-64 of"):
        validate(ep)
    with pytest.raises(FormatError, match="camera names are 1-64 of"):
        write_dataset(str(tmp_path / "out"), [ep])


def test_forged_robomimic_and_zarr_headers_fail_fast_naming_item_and_key(tmp_path):
    import json
    import os

    import h5py

    from converters.robomimic import Robomimic
    from converters.zarr_replay import ZarrReplay
    from tests.fixtures.robomimic import write_robomimic
    from tests.fixtures.zarr_replay import write_umi
    from wamdata.errors import SourceError

    path = str(tmp_path / "rm" / "demo.hdf5")
    write_robomimic(path, demos=2)
    with h5py.File(path, "a") as f:
        del f["data/demo_1/obs/agentview_image"]
        f.create_dataset("data/demo_1/obs/agentview_image", shape=(12, 10**6, 10**6, 3), dtype="u1",
                         chunks=(1, 64, 64, 3))
    conv = Robomimic()
    good, forged = list(conv.discover(path))
    conv.read(good)
    with pytest.raises(SourceError, match=r"data/demo_1/obs/agentview_image: declares shape \(12, 1000000, "):
        conv.read(forged)

    w = write_umi(str(tmp_path / "umi"), zipped=False)
    zarray = os.path.join(w["path"], "data", "camera0_rgb", ".zarray")
    meta = json.load(open(zarray))
    meta["shape"][1:3] = [10**6, 10**6]
    json.dump(meta, open(zarray, "w"))
    conv = ZarrReplay(preset="umi")
    item = next(conv.discover(str(tmp_path / "umi")))
    with pytest.raises(SourceError, match=r"data/camera0_rgb\[0:12\]: declares shape \(12, 1000000, 1000000, 3\)"):
        conv.read(item)

    ends = os.path.join(w["path"], "meta", "episode_ends", ".zarray")
    meta = json.load(open(ends))
    meta["shape"] = [10**12]
    json.dump(meta, open(ends, "w"))
    (item,) = conv.discover(str(tmp_path / "umi"))   # the store is one failed item, named
    with pytest.raises(SourceError, match=r"meta/episode_ends: declares shape \(1000000000000,\)"):
        conv.read(item)


def test_lerobot_parquet_is_bounded_by_its_footer_before_decoding(tmp_path, monkeypatch):
    """The footer's uncompressed row-group size is checked against the read limit before pyarrow
    decodes a page (run-length-encoded pages decode to far more than the file's size)."""
    import wamdata.sources
    from converters.lerobot import LeRobot
    from tests.fixtures.lerobot import write_v21
    from wamdata.errors import SourceError

    write_v21(tmp_path / "ds")
    conv = LeRobot()
    item = next(conv.discover(str(tmp_path / "ds")))
    conv.read(item)
    monkeypatch.setattr(wamdata.sources, "MAX_READ_BYTES", 256)
    with pytest.raises(SourceError, match=r"episode_000000.parquet: lerobot: parquet row groups \(uncompressed\): declares"):
        conv.read(item)


class _Touch:
    """A pickle that creates a file when unpickled: proof of whether the converter ran it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_umi_dataset_plan_is_never_unpickled_without_trust_pickle(tmp_path, ray_session):
    import pickle

    from tests.fixtures.zarr_replay import write_umi
    from wamdata.cli import main
    from wamdata.format.reader import Dataset

    session = tmp_path / "session"
    write_umi(str(session), lengths=(6, 5))
    marker = tmp_path / "code_ran"
    with open(session / "dataset_plan.pkl", "wb") as f:
        pickle.dump([{"cameras": [{"video_path": "demos/d0/raw_video.mp4", "video_start_end": (3, 9)}],
                      "episode_timestamps": np.arange(6) / 59.94, "evil": _Touch(marker)},
                     {"cameras": [{"video_path": "demos/d1/raw_video.mp4", "video_start_end": (0, 5)}],
                      "episode_timestamps": np.arange(5) / 59.94}], f)

    def plans(*flags):
        out = tmp_path / f"out{len(flags)}"
        assert main(["convert", "--source", "zarr_replay", "--input", str(session), "--output", str(out),
                     "--option", "preset=umi", "--workers", "1", "--quiet", *flags]) == 0
        ds = Dataset(str(out))
        return [ds.episode(k).meta["metadata"]["umi_plan"] for k in sorted(ds.episodes.column("episode_id").to_pylist())]

    untrusted = plans()
    assert not marker.exists()
    assert all(p["read"] is False and "--trust-pickle" in p["reason"] for p in untrusted)

    trusted = plans("--trust-pickle")
    assert marker.exists()   # trusted: unpickled, and whatever the file names runs
    assert [p["cameras"] for p in trusted] == [
        [{"video_path": "demos/d0/raw_video.mp4", "video_start_end": [3, 9]}],
        [{"video_path": "demos/d1/raw_video.mp4", "video_start_end": [0, 5]}]]
    assert trusted[1]["read"] is True and trusted[1]["timestamps"] == [0.0, pytest.approx(4 / 59.94)]


def test_pickle_coded_zarr_arrays_are_refused_unless_trusted(tmp_path):
    import json
    import os

    from converters.zarr_replay import ZarrReplay
    from tests.fixtures.zarr_replay import write_umi
    from wamdata.errors import SourceError

    w = write_umi(str(tmp_path), zipped=False, cameras=1)
    zarray = os.path.join(w["path"], "data", "timestamp", ".zarray")
    meta = json.load(open(zarray))
    meta["filters"] = [{"id": "pickle", "protocol": 5}]
    json.dump(meta, open(zarray, "w"))
    item = next(ZarrReplay(preset="umi").discover(str(tmp_path)))
    with pytest.raises(SourceError, match=r"data/timestamp: stored with numcodecs' pickle codec.*--trust-pickle"):
        ZarrReplay(preset="umi").read(item)
