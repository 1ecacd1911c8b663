"""Streaming training windows to trainers: WamStream (numpy), ``.torch()``, ``.dataloader()``,
``.ray_dataset()``. See :mod:`wamdata.loader.stream` for how work is split and resumed."""

from wamdata.loader.config import LoaderConfig
from wamdata.loader.manifest import DatasetSpec, Manifest, load_manifest
from wamdata.loader.stream import WamStream

__all__ = ["WamStream", "LoaderConfig", "Manifest", "DatasetSpec", "load_manifest"]
