"""Native libraries whose load order matters in one process.

Some wheels ship C++ built against other libstdc++ versions; which copy of a symbol an extension binds
depends on what is loaded first. The functions here load such a library before the one that would
shadow it.
"""

from __future__ import annotations


def load_datasketches():
    """Import DataSketches; call it before decord is imported.

    decord loads its libdecord.so RTLD_GLOBAL, and that library exports a statically linked, old-ABI
    ``std::random_device::_M_init``. Python loads extensions with every symbol bound at import
    (RTLD_NOW), so DataSketches imported after decord binds decord's ``_M_init`` beside libstdc++'s
    ``_M_getval`` and its KLL compaction fails with "random_device could not be read"; imported first,
    it keeps libstdc++'s. The decord backend calls this when a decoder is made, stats on first use.
    """
    try:
        import datasketches
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("wamdata stats needs Apache DataSketches: pip install 'datasketches>=5.0'") from e
    return datasketches
