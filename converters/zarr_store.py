"""Read-only access to a diffusion-policy ReplayBuffer store for ``converters.zarr_replay``.

The layout (real-stanford/diffusion_policy ``diffusion_policy/common/replay_buffer.py``): a zarr v2
group with ``data/<key>`` arrays sharing the step axis and ``meta/episode_ends`` (int64, cumulative,
exclusive ends), either as a directory or as a zip archive (``*.zarr.zip``, written by
``ReplayBuffer.save_to_store(zarr.ZipStore(...))``). A zip is opened in place through
``zarr.storage.ZipStore(mode="r")``: nothing is copied or extracted.

Array names are listed from the store's own listing (zip central directory / folder), never from
zarr's group members, because zarr parses every member's metadata there and one array whose codec
is not registered would hide all the others. Each array is then opened alone, so an unregistered
compressor or filter is reported with its key and codec id.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from wamdata.errors import SourceError
from wamdata.sources import check_read_size


# numcodecs codecs whose decode unpickles (object arrays written with object_codec=Pickle())
PICKLE_CODECS = {"pickle"}


def is_store(path: str) -> bool:
    """A ReplayBuffer store: a zip archive or a folder holding a zarr v2 group (``.zgroup``)."""
    if os.path.isfile(path):
        return zipfile.is_zipfile(path)
    return os.path.isfile(os.path.join(path, ".zgroup"))


def register_image_codecs() -> None:
    """Register imagecodecs' numcodecs codecs (``imagecodecs_jpegxl`` for UMI's ``camera*_rgb``:
    the id UMI's own ``JpegXl`` codec writes). Idempotent; ids already registered are kept."""
    import imagecodecs.numcodecs

    imagecodecs.numcodecs.register_codecs(force=False, verbose=False)


class ReplayStore:
    """One store opened read-only. Use as a context manager (a zip store holds its archive open)."""

    def __init__(self, path: str, trust_pickle: bool = False):
        import zarr

        register_image_codecs()
        self.path, self.trust_pickle = path, trust_pickle
        self.zipped = os.path.isfile(path)
        try:
            if self.zipped:
                self._zip = zipfile.ZipFile(path)
                self._names = set(self._zip.namelist())
                self.store = zarr.storage.ZipStore(path, mode="r")
            else:
                self._zip = None
                self.store = zarr.storage.LocalStore(path, read_only=True)
            self.root = zarr.open_group(self.store, mode="r", zarr_format=2)
        except (OSError, zipfile.BadZipFile, ValueError, KeyError) as e:
            self.close()
            raise SourceError(path, f"zarr_replay: not a readable zarr v2 store ({type(e).__name__}: {e})") from None

    def close(self) -> None:
        if getattr(self, "_zip", None) is not None:
            self._zip.close()
        if getattr(self, "store", None) is not None:
            self.store.close()

    def __enter__(self) -> "ReplayStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _exists(self, rel: str) -> bool:
        return rel in self._names if self.zipped else os.path.isfile(os.path.join(self.path, rel))

    def _read_json(self, rel: str) -> dict:
        if self.zipped:
            return json.loads(self._zip.read(rel))
        with open(os.path.join(self.path, rel), "rb") as f:
            return json.load(f)

    def data_keys(self) -> list[str]:
        """Names of the arrays under ``data/``, sorted, from the store listing."""
        if self.zipped:
            names = {n[len("data/"):-len("/.zarray")] for n in self._names
                     if n.startswith("data/") and n.endswith("/.zarray")}
        else:
            folder = os.path.join(self.path, "data")
            names = {n for n in (os.listdir(folder) if os.path.isdir(folder) else [])
                     if os.path.isfile(os.path.join(folder, n, ".zarray"))}
        return sorted(n for n in names if "/" not in n)

    def array(self, rel: str):
        """The zarr array at ``rel`` (``data/<key>``, ``meta/episode_ends``); SourceError naming the
        key when it is missing, and the key and codec id when its codec is not registered."""
        from numcodecs.registry import codec_registry

        if not self._exists(rel + "/.zarray"):
            raise SourceError(self.path, f"zarr_replay: {rel}: no such array in the store")
        meta = self._read_json(rel + "/.zarray")
        codecs = [meta.get("compressor")] + list(meta.get("filters") or [])
        missing = sorted({c["id"] for c in codecs if c and c.get("id") not in codec_registry})
        if missing:
            raise SourceError(self.path, f"zarr_replay: {rel}: codec {', '.join(map(repr, missing))} is not "
                                         "registered with numcodecs (install the package that provides it)")
        if not self.trust_pickle and any(c and c.get("id") in PICKLE_CODECS for c in codecs):
            raise SourceError(self.path, f"zarr_replay: {rel}: stored with numcodecs' pickle codec, which runs code "
                                         "named by the data when decoded; not read (pass --trust-pickle if you "
                                         "trust where the store came from)")
        try:
            return self.root[rel]
        except Exception as e:  # noqa: BLE001 - zarr raises many kinds for a bad .zarray; name the key
            raise SourceError(self.path, f"zarr_replay: {rel}: unreadable array metadata ({type(e).__name__}: {e})") from None

    def episode_ends(self) -> np.ndarray:
        ends = self.array("meta/episode_ends")
        check_read_size(self.path, "zarr_replay: meta/episode_ends", ends.shape, ends.dtype)
        return np.asarray(ends[:], np.int64)


def to_uint8(block: np.ndarray) -> np.ndarray:
    """Image values to uint8: integers and uint8 as stored; floats on the 0-255 scale (Push-T's
    float32 ``img``) rounded to the nearest integer and clipped to [0, 255] (exact when integral)."""
    if block.dtype == np.uint8:
        return block
    return np.clip(np.rint(block), 0, 255).astype(np.uint8)


@dataclass
class ZarrFrames:
    """Frames ``start:stop`` of an image array (T, H, W, 3), read lazily in blocks aligned to the
    array's chunks along the step axis (each chunk decoded once, at most ~one chunk in memory).

    ``store`` is the store the converter read the episode from, kept open for the frames (opening a
    zip store parses its whole central directory); without it (e.g. after pickling) the frames open
    their own."""

    path: str
    key: str
    start: int
    stop: int
    height: int
    width: int
    chunk: int
    store: ReplayStore | None = field(default=None, repr=False, compare=False)
    video_path: str | None = None
    codec: str | None = None
    trust_pickle: bool = False

    @property
    def num_frames(self) -> int:
        return self.stop - self.start

    def __getstate__(self) -> dict:
        return {**self.__dict__, "store": None}

    def iter_frames(self) -> Iterator[np.ndarray]:
        chunk = max(self.chunk, 1)
        step = chunk * max(1, 16 // chunk)   # whole chunks, at least 16 frames (UMI's are one frame)
        store = self.store or ReplayStore(self.path, self.trust_pickle)
        try:
            arr = store.array(self.key)
            i = self.start
            while i < self.stop:
                j = min((i // step + 1) * step, self.stop)
                yield from to_uint8(arr[i:j])
                i = j
        finally:
            if store is not self.store:
                store.close()
