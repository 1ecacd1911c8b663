"""wamdata: ingest, curate and stream training data for World Action Models."""

from wamdata.errors import ConfigError, FormatError, SchemaError, SourceError, WamdataError

__version__ = "0.1.0"


def open_dataset(path: str):
    """Open a wamdata dataset (a local path or an fsspec URL) for reading."""
    from wamdata.format.reader import Dataset

    return Dataset(path)


__all__ = ["open_dataset", "WamdataError", "SchemaError", "SourceError", "FormatError", "ConfigError"]
