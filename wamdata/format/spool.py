"""An item's encoded episodes, held until the whole item has encoded, in bounded memory.

An item is all-or-nothing (:func:`wamdata.format.writer.write_unit` writes none of its episodes
unless all of them encode), and one item may hold hundreds of episodes: every clip of an hour-long
egocentric video is one item. Holding their encoded bytes grew a worker's memory with the video's
length (an hour of 1080p60 cut into 899 clips: 296 MB peak against 188 MB for 20 s). The spool
keeps the member bytes in memory up to ``max_memory`` and in an anonymous temporary file beyond it,
and hands each episode back with its members when it is written, one at a time.
"""

from __future__ import annotations

import tempfile
from collections import deque
from typing import Iterator

SPOOL_MEMORY = 32 << 20


class EncodedSpool:
    def __init__(self, max_memory: int | None = None):
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY if max_memory is None else max_memory)
        self._held: deque = deque()   # (episode, encoded episode without member bytes, [(name, offset, size)])

    def put(self, episode, enc) -> None:
        spans = []
        for name, data in enc.members:
            spans.append((name, self._file.tell(), len(data)))
            self._file.write(data)
        enc.members = []
        self._held.append((episode, enc, spans))

    def metas(self) -> Iterator[dict]:
        return (enc.meta for _, enc, _ in self._held)

    def drain(self) -> Iterator[tuple]:
        """``(episode, encoded episode)`` in the order put, each with its member bytes back only while
        the caller holds it."""
        while self._held:
            episode, enc, spans = self._held.popleft()
            members = []
            for name, offset, size in spans:
                self._file.seek(offset)
                members.append((name, self._file.read(size)))
            self._file.seek(0, 2)
            enc.members = members
            yield episode, enc
            enc.members = []

    def close(self) -> None:
        self._held.clear()
        self._file.close()

    def __enter__(self) -> "EncodedSpool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
