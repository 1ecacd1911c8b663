"""The one error hierarchy of wamdata: every error a user can act on is a WamdataError.

Messages say what, where and what to do, e.g.
``droid: .../trajectory.h5: truncated HDF5 file; episode skipped``.
"""

from __future__ import annotations


class WamdataError(Exception):
    """Base class of every error wamdata raises on purpose."""


class SchemaError(WamdataError):
    """An Episode breaks the schema (wrong shape, NaN, non-monotonic time, ...)."""


class SourceError(WamdataError):
    """A source item cannot be read; the conversion job records it and goes on.

    ``where`` is the item (or a path) and ``reason`` says what is wrong with it.
    """

    def __init__(self, where, reason: str):
        self.where = getattr(where, "path", None) or str(where)
        self.item_id = getattr(where, "id", None)
        self.reason = reason
        super().__init__(f"{self.where}: {reason}")


class FormatError(WamdataError):
    """A dataset on disk is missing, incomplete or of an unsupported format version."""


class OutputError(WamdataError):
    """The dataset cannot be written (disk full, read-only, permission): the job stops, what was
    committed stays consistent, and the same command resumes once the output is writable again."""

    @classmethod
    def of(cls, path: str, err: OSError) -> "OutputError":
        return cls(f"{path}: cannot write the dataset: {err.strerror or err}. Nothing partial is visible and "
                   "what was committed stays in the index; make the output writable (free space, remount) "
                   "and run the same command again to resume")


class ConfigError(WamdataError):
    """Bad options, unknown names or inconsistent arguments."""
