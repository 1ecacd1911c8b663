"""Where things live in a dataset (format v1): every path template in one place.

These templates are also recorded in ``wamdata.json`` so a reader never has to guess them.
"""

from __future__ import annotations

import hashlib
import re

import fsspec

FORMAT_NAME = "wamdata"
FORMAT_VERSION = 1

INFO_FILE = "wamdata.json"
INDEX_FILE = "episodes.parquet"
FAILURES_FILE = "failures.jsonl"
STATS_FILE = "stats.json"
LOCK_FILE = "_writer.lock"   # held by the one job writing the dataset (wamdata.format.lock)
SHARD_DIR = "shards"
SHARD_TEMPLATE = "shards/shard-{index:06d}.tar"
SHARD_PATTERN = re.compile(r"^shard-(\d{6})\.tar$")
# Shards being written live here under unit-specific names until the driver commits them.
TMP_DIR = "shards/_tmp"

# Tar members of one sample (webdataset convention: key, first dot, extension).
META_MEMBER = "{key}.json"
STEPS_MEMBER = "{key}.steps.parquet"
VIDEO_MEMBER = "{key}.{camera}.mp4"

TEMPLATES = {
    "shard": SHARD_TEMPLATE,
    "meta": META_MEMBER,
    "steps": STEPS_MEMBER,
    "video": VIDEO_MEMBER,
}

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def episode_key(episode_id: str) -> str:
    """Tar key of an episode: webdataset splits a member name at the first dot and treats '/' as a
    folder, so keys keep only [A-Za-z0-9_-]. A short hash of the full id keeps keys unique when two
    ids differ only in the characters replaced."""
    readable = _KEY_UNSAFE.sub("_", episode_id).strip("_")[:150]
    digest = hashlib.sha1(episode_id.encode("utf-8")).hexdigest()[:8]
    return f"{readable}-{digest}"


def shard_path(index: int) -> str:
    return SHARD_TEMPLATE.format(index=index)


def open_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, root path) for a local path or any fsspec URL (s3://, gs://, memory://, ...)."""
    fs, root = fsspec.core.url_to_fs(url)
    return fs, root.rstrip("/")


def read_parquet(fs: fsspec.AbstractFileSystem, path: str, columns: list[str] | None = None):
    """A whole (small) parquet file as a pyarrow Table.

    Through ``ParquetFile(...).read()``, not ``pq.read_table``: the latter's dataset path pre-buffers
    on Arrow's I/O threads, and with a Python file object (any fsspec file) pyarrow 26 can then abort
    the interpreter at exit ("terminate called without an active exception"; apache/arrow#34314).
    """
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).read(columns=columns)


def join(root: str, rel: str) -> str:
    return f"{root}/{rel}" if root else rel


def stable_fraction(text: str) -> float:
    """A number in [0, 1) that depends only on ``text``: splits by episode id are stable everywhere."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2**64
