"""The converter interface: Converter, SourceItem, SourceError and the registry.

A converter is the only place that knows a source format. It is small and pure::

    @register("droid")
    class DroidRaw(Converter):
        family = "teleop"
        @dataclass
        class Options:                      # typed `--option key=value` fields
            annotations: str | None = None
        def discover(self, root): ...       # cheap, deterministic (sorted) SourceItems
        def read(self, item): ...           # one item -> one Episode (or a list of them)

Converters plug in with ``@register`` and are found through the ``wamdata.converters`` entry-point
group, so the core never imports a converter by name.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Iterator

from wamdata.errors import ConfigError, SourceError
from wamdata.schema import Episode

__all__ = ["Converter", "SourceItem", "SourceError", "register", "get_converter", "converter_names", "check_read_size"]

ENTRY_POINT_GROUP = "wamdata.converters"

_REGISTRY: dict[str, type["Converter"]] = {}
_BROKEN: dict[str, str] = {}  # entry points that failed to load -> why (one broken plugin hides no other)


@dataclass(frozen=True)
class SourceItem:
    """One unit of source input: ``id`` is unique, deterministic and stable across runs (it is what a
    resumed job skips); ``path`` is the file or folder to read; ``index`` selects a record inside it."""

    id: str
    path: str
    index: int | None = None
    info: dict = field(default_factory=dict, compare=False, hash=False)


class Converter:
    """Base class of every source converter. Subclasses set ``name`` (via @register), ``family`` and
    optionally an ``Options`` dataclass whose typed fields are the converter's ``--option``s."""

    name: str = ""
    family: str = ""
    # Bumped when what the converter writes changes (a feature's name, unit or shape): a job resumed
    # across the change would mix two declarations of one feature in one dataset, so it is refused.
    revision: int = 1

    @dataclass
    class Options:
        pass

    def __init__(self, **options: Any):
        self.options = parse_options(self.Options, options, self.name)

    def discover(self, root: str) -> Iterator[SourceItem]:
        raise NotImplementedError

    def read(self, item: SourceItem) -> Episode | list[Episode]:
        raise NotImplementedError

    @classmethod
    def describe_options(cls) -> list[tuple[str, str, Any]]:
        """(name, type, default) of each option, for ``wamdata sources``."""
        hints = typing.get_type_hints(cls.Options)
        out = []
        for f in dataclasses.fields(cls.Options):
            default = f.default if f.default is not dataclasses.MISSING else None
            out.append((f.name, _type_name(hints[f.name]), default))
        return out


@functools.lru_cache(maxsize=256)
def source_fs(path: str):
    """(fsspec filesystem, path) of a converter's input: a local path or an fsspec URL. A plain path
    is never parsed as a URL chain (fsspec reads "a::b" as one) and comes back absolute."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    if "://" not in path:
        return LocalFileSystem(), os.path.abspath(path)
    fs, path = fsspec.core.url_to_fs(path)
    return fs, path.rstrip("/")


def is_local(fs) -> bool:
    """Whether an fsspec filesystem is the local one (its paths are plain paths)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def url_of(fs, path: str) -> str:
    """A path fsspec can open again on a worker: local paths stay plain, remote ones keep their protocol."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


# The most one array read of a source may allocate. Headers declare shapes before any data is read,
# and a forged or corrupt one (an HDF5 dataset of 10^12 rows, a zarr .zarray asking for terabytes)
# would otherwise be allocated — or, with lazy fill values, faulted in — before anything fails.
# Read when checked (not bound as a default), so a deployment with larger arrays can raise it.
MAX_READ_BYTES = 8 << 30


def check_read_size(item, key: str, shape, dtype, limit: int | None = None) -> None:
    """Refuse, naming the item and key, to read an array whose declared size exceeds ``limit``
    (default :data:`MAX_READ_BYTES`). Call it with the header's shape and dtype before reading a
    whole array (``ds[()]``), or with the slice's shape before reading a slice."""
    import numpy as np

    limit = MAX_READ_BYTES if limit is None else limit
    nbytes = int(np.prod([int(s) for s in shape], dtype=object)) * np.dtype(dtype).itemsize
    if nbytes > limit:
        raise SourceError(item, f"{key}: declares shape {tuple(int(s) for s in shape)} of {np.dtype(dtype)} "
                                f"({human_bytes(nbytes)}), more than the {human_bytes(limit)} one read may take: a corrupt "
                                "or forged header")


def json_value(value):
    """A source's attribute or metadata value as JSON-able Python: bytes decoded (UTF-8, bad bytes
    replaced), numpy scalars as Python numbers, arrays and tuples as lists (string arrays as lists of
    str); anything else JSON cannot hold as its ``str``."""
    import numpy as np

    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [json_value(v) for v in value.tolist()] if value.dtype.kind in "OSU" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def human_bytes(n: int | None) -> str:
    """A byte count for people: ``8 GiB``, ``31.7 KiB``, ``512 B`` (``?`` when unknown)."""
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp, key: str, converter: str):
    if not isinstance(value, str):
        return value
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    target = args[0] if args else tp
    if value.lower() in ("none", "null") and type(None) in typing.get_args(tp):
        return None
    try:
        if target is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if target in (int, float):
            return target(value)
    except ValueError:
        raise ConfigError(f"{converter}: option {key}={value!r} is not a valid {_type_name(target)}") from None
    return value


def parse_options(options_cls, given: dict[str, Any], converter: str):
    """Typed options from ``key=value`` strings; an unknown key lists the known ones."""
    hints = typing.get_type_hints(options_cls)
    known = {f.name for f in dataclasses.fields(options_cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(
            f"{converter}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known)) or 'none'}"
        )
    return options_cls(**{k: _coerce(v, hints[k], k, converter) for k, v in given.items()})


def register(name: str):
    """Class decorator: make a Converter available as ``--source NAME``."""

    def wrap(cls: type[Converter]) -> type[Converter]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ConfigError(f"converter {name!r} registered twice ({_REGISTRY[name]} and {cls})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _load_entry_points() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY or ep.name in _BROKEN:
            continue
        try:
            cls = ep.load()
        except Exception as e:  # noqa: BLE001 - a plugin's import error must not hide the others
            _BROKEN[ep.name] = f"{ep.value}: {type(e).__name__}: {e}"
            continue
        _REGISTRY.setdefault(ep.name, cls)


def converter_names() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def get_converter(name: str) -> type[Converter]:
    """A converter by registered name, or by ``package.module:Class`` for one not installed as a plugin."""
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot load converter {name!r}: {e}") from e
        if not (isinstance(cls, type) and issubclass(cls, Converter)):
            raise ConfigError(f"{name!r} is not a converter class (a subclass of wamdata.sources.Converter)")
        return cls
    if name not in _REGISTRY:
        _load_entry_points()
    if name in _BROKEN:
        raise ConfigError(f"converter {name!r} is installed but fails to load ({_BROKEN[name]})")
    if name not in _REGISTRY:
        raise ConfigError(f"unknown source {name!r}; known: {', '.join(converter_names())}")
    return _REGISTRY[name]
