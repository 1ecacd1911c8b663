"""Export wamdata datasets (or views / manifests of one dataset) to other ecosystems' formats.

- :func:`export_lerobot`: the LeRobot v3.0 layout (``wamdata.export.lerobot``);
- :func:`export_hf`: Hugging Face ``datasets`` parquet shards + dataset card (``wamdata.export.hf``);
- :func:`export_zarr`: the diffusion-policy ReplayBuffer zarr (``wamdata.export.zarr``).

A dataset the target format cannot represent raises :class:`ExportError` before anything is written.
Every export shows a progress bar (``progress=False`` / ``--quiet`` hides it) and resumes: see
:mod:`wamdata.export.source`.
"""

from __future__ import annotations

from wamdata.export.source import ExportError


def export_lerobot(*args, **kwargs):
    """See :func:`wamdata.export.lerobot.export_lerobot`."""
    from wamdata.export.lerobot import export_lerobot as _export

    return _export(*args, **kwargs)


def export_hf(*args, **kwargs):
    """See :func:`wamdata.export.hf.export_hf`."""
    from wamdata.export.hf import export_hf as _export

    return _export(*args, **kwargs)


def export_zarr(*args, **kwargs):
    """See :func:`wamdata.export.zarr.export_zarr`."""
    from wamdata.export.zarr import export_zarr as _export

    return _export(*args, **kwargs)


FORMATS = {"lerobot": export_lerobot, "hf": export_hf, "zarr": export_zarr}

__all__ = ["ExportError", "export_lerobot", "export_hf", "export_zarr", "FORMATS"]
