"""Native libraries whose load order matters in one process.

Some wheels ship C++ built against other libstdc++ versions; which copy of a symbol an extension binds
depends on what is loaded first. The functions here load such a library in the way that keeps it working.
"""

from __future__ import annotations

import os
import sys


def load_datasketches():
    """Import DataSketches with every symbol bound at load time (RTLD_NOW).

    decord loads its libdecord.so RTLD_GLOBAL, and that library exports a statically linked, old-ABI
    ``std::random_device::_M_init``. An extension that binds the symbol lazily once decord is loaded
    takes decord's and pairs it with libstdc++'s ``_M_getval``: DataSketches' KLL compaction then fails
    with "random_device could not be read". Bound at load, before decord, it keeps libstdc++'s; the
    decord backend calls this before importing decord, and stats on first use.
    """
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_NOW)
    try:
        import datasketches
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("wamdata stats needs Apache DataSketches: pip install 'datasketches>=5.0'") from e
    finally:
        sys.setdlopenflags(flags)
    return datasketches
