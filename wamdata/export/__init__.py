"""Export wamdata datasets to other ecosystems' formats.

- :func:`export_lerobot` writes the LeRobot v3.0 layout (``wamdata.export.lerobot``).

A dataset the target format cannot represent raises :class:`ExportError` before anything is written.
"""

from __future__ import annotations

from wamdata.errors import WamdataError


class ExportError(WamdataError):
    """The dataset cannot be represented in the target format (says which episode and what to do)."""


def export_lerobot(*args, **kwargs):
    """See :func:`wamdata.export.lerobot.export_lerobot`."""
    from wamdata.export.lerobot import export_lerobot as _export

    return _export(*args, **kwargs)


FORMATS = {"lerobot": export_lerobot}

__all__ = ["ExportError", "export_lerobot", "FORMATS"]
