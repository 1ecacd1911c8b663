"""Finding and opening a converter's HDF5 input; an unreadable file becomes the item's SourceError."""

from __future__ import annotations

import os
from contextlib import contextmanager

from wamdata.errors import SourceError


@contextmanager
def open_h5(item, source: str):
    """``h5py.File(item.path, "r")`` as a context; a file h5py cannot open fails the item, naming it."""
    import h5py

    try:
        f = h5py.File(item.path, "r")
    except OSError as e:
        raise SourceError(item, f"{source}: not a readable HDF5 file ({e}); episode skipped") from None
    with f:
        yield f


def find_h5(root: str) -> tuple[str, list[str]]:
    """(folder ids are relative to, sorted ``*.hdf5`` / ``*.h5`` paths): ``root`` itself when it is a
    file, else every such file under it."""
    if os.path.isfile(root):
        return os.path.dirname(root), [root]
    return root, sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names
                        if n.endswith((".hdf5", ".h5")))
