"""Reading a dataset: the index, whole shards sequentially, or one episode by its byte range.

``Dataset(path)`` accepts a local path or an fsspec URL. The loader streams with
:meth:`Dataset.iter_shard` (one sequential read per shard); random access (:meth:`Dataset.episode`)
reads just the episode's byte range recorded in the index.
"""

from __future__ import annotations

import io
import json
import tarfile
from functools import cached_property
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wamdata.errors import FormatError
from wamdata.format import layout, video
from wamdata.schema import TIMESTAMP, Feature


def _split_member(name: str) -> tuple[str, str]:
    key, _, ext = name.partition(".")
    return key, ext


class StoredEpisode:
    """One episode as stored: metadata, steps table and encoded videos (decoded on demand)."""

    def __init__(self, key: str, members: dict[str, bytes], where: str):
        self.key = key
        self.where = where  # "shard#key", for error messages
        self._members = members
        try:
            self.meta: dict = json.loads(members["json"])
            self.episode_id: str = self.meta["episode_id"]
        except KeyError as e:
            raise FormatError(f"{where}: sample has no metadata member {key}.json or no {e} in it") from None
        except (ValueError, TypeError) as e:   # UnicodeDecodeError is a ValueError
            raise FormatError(f"{where}: metadata member {key}.json is not a JSON object ({e})") from None

    @cached_property
    def features(self) -> dict[str, Feature]:
        # the metadata member is data read from a shard: a damaged key or value is a FormatError naming
        # the member, never a TypeError from the dataclass
        try:
            features = {n: Feature.from_json(f) for n, f in self.meta["features"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FormatError(f"{self.where}: metadata member {self.key}.json has malformed features ({e})") from None
        for name, f in features.items():
            if not all(isinstance(d, int) and d >= 0 for d in f.shape):
                raise FormatError(f"{self.where}: metadata member {self.key}.json declares {name!r} with shape "
                                  f"{list(f.shape)}, not a list of sizes")
        return features

    def crc32(self) -> int:
        """The checksum the index records for this sample (member payloads in tar order)."""
        from wamdata.format.writer import members_crc32

        return members_crc32(self._members.values())

    @cached_property
    def steps(self) -> pa.Table:
        try:
            return pq.ParquetFile(pa.BufferReader(self._members["steps.parquet"])).read()
        except KeyError:
            raise FormatError(f"{self.where}: sample has no steps member {self.key}.steps.parquet") from None
        except (pa.ArrowException, OSError, ValueError) as e:   # a damaged column name fails to decode as UTF-8
            raise FormatError(f"{self.where}: unreadable steps member {self.key}.steps.parquet ({e})") from None

    @property
    def num_steps(self) -> int:
        try:
            return int(self.meta["num_steps"])
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{self.where}: metadata member {self.key}.json has no valid num_steps ({e})") from None

    @property
    def cameras(self) -> list[str]:
        try:
            return sorted(self.meta["cameras"])
        except (KeyError, TypeError) as e:
            raise FormatError(f"{self.where}: metadata member {self.key}.json has no valid cameras ({e})") from None

    def array(self, name: str) -> np.ndarray:
        """A steps column as numpy (T, *shape)."""
        if name not in self.steps.column_names:
            raise FormatError(f"{self.where}: no step column {name!r}; has {', '.join(self.steps.column_names)}")
        col = self.steps.column(name).combine_chunks()
        if name == TIMESTAMP or pa.types.is_primitive(col.type) and not pa.types.is_fixed_size_list(col.type):
            return col.to_numpy(zero_copy_only=False)
        if name not in self.features:
            raise FormatError(f"{self.where}: step column {name!r} is not declared in {self.key}.json")
        if not (pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type)):
            raise FormatError(f"{self.where}: step column {name!r} is stored as {col.type}, not a list of values")
        shape = self.features[name].shape
        flat = col.flatten().to_numpy(zero_copy_only=False)
        if flat.size != len(col) * int(np.prod(shape)):
            raise FormatError(f"{self.where}: step column {name!r} holds {flat.size} values for {len(col)} steps, "
                              f"its declared shape {list(shape)} needs {len(col) * int(np.prod(shape))}")
        return flat.reshape(len(col), *shape)

    def video_bytes(self, camera: str) -> bytes:
        try:
            return self._members[f"{camera}.mp4"]
        except KeyError:
            raise FormatError(f"{self.where}: no camera {camera!r}; has {', '.join(self.cameras) or 'none'}") from None

    def frames(self, camera: str, start: int = 0, stop: int | None = None, decoder=None) -> np.ndarray:
        """Frames [start, stop) of a camera as uint8 (n, H, W, 3); frame i belongs to step i."""
        decoder = decoder or video.get_decoder()
        return decoder.decode(self.video_bytes(camera), start, stop)

    def iter_frames(self, camera: str, start: int = 0, stop: int | None = None, decoder=None):
        decoder = decoder or video.get_decoder()
        return decoder.iter_frames(self.video_bytes(camera), start, stop)


def _samples(fileobj, where: str, only: tuple[str, ...] | None = None) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Group consecutive tar members by key (webdataset's convention). With ``only`` (member
    extensions such as ``("json", "steps.parquet")``) the tar is walked in seekable mode and other
    members (the videos) are skipped without being read."""
    key, members = None, {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r|" if only is None else "r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                k, ext = _split_member(m.name)
                if k != key and key is not None:
                    yield key, members
                    members = {}
                key = k
                if only is None or ext in only:
                    members[ext] = tar.extractfile(m).read()
    except tarfile.TarError as e:
        raise FormatError(f"{where}: unreadable tar ({e})") from e
    if key is not None:
        yield key, members


def split_sample(data: bytes, where: str) -> list[tuple[str, bytes]]:
    """The (name, payload) members of one sample's tar bytes (its byte range in a shard, as the index
    records it), in tar order. A damaged tar header makes the parse stop early (tarfile reads it as
    the archive's end) or fail: callers compare the names with the ones recorded."""
    out = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for m in tar:
                if m.isfile():
                    out.append((m.name, tar.extractfile(m).read()))
    except tarfile.TarError as e:
        raise FormatError(f"{where}: unreadable tar header ({e})") from e
    return out


class Dataset:
    """A wamdata dataset opened for reading."""

    def __init__(self, path: str):
        self.url = path
        self.fs, self.root = layout.open_fs(path)
        info_path = self._path(layout.INFO_FILE)
        if not self.fs.exists(info_path):
            raise FormatError(f"{info_path}: not a wamdata dataset (no {layout.INFO_FILE}); "
                              f"create one with `wamdata convert`")
        try:
            self.info: dict = json.loads(self.fs.cat_file(info_path))
        except (ValueError, UnicodeDecodeError) as e:
            raise FormatError(f"{info_path}: not valid JSON ({e})") from e
        version = self.info.get("format_version")
        if version != layout.FORMAT_VERSION:
            raise FormatError(f"{info_path}: format version {version}; this wamdata reads version "
                              f"{layout.FORMAT_VERSION}. Install a wamdata that reads it, or re-convert.")

    def _path(self, rel: str) -> str:
        return layout.join(self.root, rel)

    @cached_property
    def episodes(self) -> pa.Table:
        path = self._path(layout.INDEX_FILE)
        try:
            return layout.read_parquet(self.fs, path)
        except FileNotFoundError as e:
            raise FormatError(f"{path}: missing: the index of every episode (a conversion that never "
                              f"finished? re-run the same `wamdata convert` to resume)") from e
        except (pa.ArrowException, OSError) as e:
            raise FormatError(f"{path}: unreadable index ({e})") from e

    @cached_property
    def features(self) -> dict[str, Feature]:
        return {n: Feature.from_json(f) for n, f in self.info["features"].items()}

    @property
    def cameras(self) -> dict[str, dict]:
        return self.info["cameras"]

    @property
    def shards(self) -> list[str]:
        return [s["path"] for s in self.info["shards"]]

    def __len__(self) -> int:
        return self.episodes.num_rows

    @cached_property
    def _row_of(self) -> dict[str, int]:
        return {eid: i for i, eid in enumerate(self.episodes.column("episode_id").to_pylist())}

    def failures(self) -> list[dict]:
        path = self._path(layout.FAILURES_FILE)
        if not self.fs.exists(path):
            return []
        return [json.loads(line) for line in self.fs.cat_file(path).decode().splitlines() if line]

    def _open_shard(self, path: str, **kw):
        try:
            return self.fs.open(path, "rb", **kw)
        except FileNotFoundError:
            raise FormatError(f"{path}: shard listed in the index is missing (run `wamdata validate`)") from None

    def iter_shard(self, shard: str, only: tuple[str, ...] | None = None) -> Iterator[StoredEpisode]:
        """Every episode of one shard, in order, from a single sequential read. ``only=("json",
        "steps.parquet")`` reads metadata and steps and seeks over the videos (stats, curation)."""
        path = self._path(shard)
        with self._open_shard(path, block_size=8 * 1024 * 1024) as f:
            for key, members in _samples(f, path, only):
                yield StoredEpisode(key, members, f"{path}#{key}")

    def iter_episodes(self) -> Iterator[StoredEpisode]:
        for shard in self.shards:
            yield from self.iter_shard(shard)

    def episode(self, episode_id: str) -> StoredEpisode:
        """One episode by id, reading only its byte range of its shard."""
        if episode_id not in self._row_of:
            raise FormatError(f"{self.url}: no episode {episode_id!r} (the dataset has {len(self)})")
        row = self.episodes.slice(self._row_of[episode_id], 1).to_pylist()[0]
        path = self._path(row["shard"])
        with self._open_shard(path) as f:
            f.seek(row["offset"])
            data = f.read(row["size"])
        samples = list(_samples(io.BytesIO(data), path))
        if len(samples) != 1 or samples[0][0] != row["key"]:
            raise FormatError(f"{path}: bytes {row['offset']}+{row['size']} do not hold episode {episode_id!r}; "
                              f"the index does not match the shard (run `wamdata validate`)")
        key, members = samples[0]
        return StoredEpisode(key, members, f"{path}#{key}")
