"""Mixture manifests: which datasets, with what weight, which episodes, which split.

A manifest is YAML (read with ``yaml.safe_load``)::

    name: droid-plus-ego
    split: {train: 0.95, val: 0.05}     # fractions by a stable hash of episode_id (optional)
    datasets:
      - path: /data/wam/droid            # local path or fsspec URL; relative to the manifest file
        weight: 0.7
        filter: "success == True and num_steps >= 60"   # expression over index columns
      - path: s3://bucket/wam/ego4d
        weight: 0.3
        episodes: [ego4d/abc-0, ego4d/abc-1]            # a curated view: these ids only
        # episodes_file: views/hands.txt                 # ... or one id per line (or a parquet)
        keep_steps: {ego4d/abc-1: [[0, 120], [300, 450]]}  # ... and of these, only these steps

``keep_steps`` (written by ``wamdata curate --drop-idle``, or by hand) maps an episode id to the
[start, stop) ranges of its stored steps that are kept; an episode it does not name is kept whole. The
loader anchors windows only inside kept ranges and treats each range as the episode's bounds (history,
future and actions past them are padded); ``wamdata stats`` counts only kept steps.

Without split fractions in the manifest, ``split="train"`` selects rows whose index ``split`` column
equals ``"train"``. A plain dataset path is a manifest of one dataset with weight 1.
"""

from __future__ import annotations

import ast
import logging
import posixpath
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from wamdata.errors import ConfigError
from wamdata.format.layout import stable_fraction

log = logging.getLogger(__name__)

_DATASET_KEYS = {"path", "weight", "filter", "episodes", "episodes_file", "name", "keep_steps"}
_MANIFEST_KEYS = {"name", "datasets", "split", "description"}


@dataclass(frozen=True)
class DatasetSpec:
    path: str
    weight: float = 1.0
    filter: str | None = None
    episodes: tuple[str, ...] | None = None
    name: str | None = None
    keep_steps: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] | None = None

    @property
    def label(self) -> str:
        return self.name or self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def ranges(self) -> dict[str, tuple[tuple[int, int], ...]]:
        """Episode id -> its kept [start, stop) step ranges (episodes not named are kept whole)."""
        return dict(self.keep_steps or ())


@dataclass(frozen=True)
class Manifest:
    datasets: tuple[DatasetSpec, ...]
    split: tuple[tuple[str, float], ...] | None = None
    name: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict, compare=False)


def is_manifest_path(path: str) -> bool:
    return str(path).endswith((".yaml", ".yml"))


def load_manifest(path_or_manifest) -> Manifest:
    """A Manifest from a YAML path, a dict, a Manifest, or a dataset path (one dataset, weight 1)."""
    if isinstance(path_or_manifest, Manifest):
        return path_or_manifest
    if isinstance(path_or_manifest, dict):
        return _parse(path_or_manifest, "<dict>", base="")
    path = str(path_or_manifest)
    if not is_manifest_path(path):
        return Manifest(datasets=(DatasetSpec(path=path),), name=path, source=path)
    import fsspec
    import yaml

    try:
        with fsspec.open(path, "r") as f:
            doc = yaml.safe_load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: manifest not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    return _parse(doc, path, base=posixpath.dirname(path))


def _resolve(base: str, rel: str) -> str:
    if not base or "://" in rel or rel.startswith("/"):
        return rel
    if "://" in base:   # normalise the path part only ("s3://b/m/../d" -> "s3://b/d")
        scheme, _, rest = base.partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, rel))}"
    return posixpath.normpath(posixpath.join(base, rel))


def _parse(doc, where: str, base: str) -> Manifest:
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), list) or not doc["datasets"]:
        raise ConfigError(f"{where}: a manifest is a mapping with a non-empty 'datasets' list")
    unknown = set(doc) - _MANIFEST_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_MANIFEST_KEYS)}")
    specs = []
    for i, d in enumerate(doc["datasets"]):
        if isinstance(d, str):
            d = {"path": d}
        if not isinstance(d, dict) or "path" not in d:
            raise ConfigError(f"{where}: datasets[{i}] needs a 'path'")
        unknown = set(d) - _DATASET_KEYS
        if unknown:
            raise ConfigError(f"{where}: datasets[{i}]: unknown keys {sorted(unknown)}; known: {sorted(_DATASET_KEYS)}")
        weight = d.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise ConfigError(f"{where}: datasets[{i}]: weight must be a number > 0, got {weight!r}")
        episodes = d.get("episodes")
        if episodes is not None and not isinstance(episodes, list):
            raise ConfigError(f"{where}: datasets[{i}]: episodes is a list of ids, got {episodes!r}")
        if d.get("episodes_file"):
            episodes = list(episodes or []) + _read_ids(_resolve(base, d["episodes_file"]))
        if d.get("filter") is not None:
            try:
                compile_filter(str(d["filter"]))  # fail early, naming the manifest
            except ConfigError as e:
                raise ConfigError(f"{where}: datasets[{i}]: {e}") from e
        keep = _keep_steps(d.get("keep_steps"), f"{where}: datasets[{i}]: keep_steps")
        specs.append(DatasetSpec(path=_resolve(base, str(d["path"])), weight=weight, filter=d.get("filter"),
                                 episodes=tuple(str(e) for e in episodes) if episodes is not None else None,
                                 name=d.get("name"), keep_steps=keep))
    labels: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.label in labels:
            # a sample's `dataset` names where it came from (per-dataset metrics, denormalize)
            raise ConfigError(f"{where}: datasets[{labels[spec.label]}] and datasets[{i}] are both labelled "
                              f"{spec.label!r} ({specs[labels[spec.label]].path}, {spec.path}); give each a "
                              "distinct 'name'")
        labels[spec.label] = i
    split = doc.get("split")
    if split is not None:
        if not isinstance(split, dict) or not split:
            raise ConfigError(f"{where}: split is a mapping name -> fraction, e.g. {{train: 0.95, val: 0.05}}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in split.values()):
            raise ConfigError(f"{where}: split fractions are numbers, got {split}")
        # by name, so the intervals do not depend on the order the keys were written in
        fracs = tuple(sorted((str(k), float(v)) for k, v in split.items()))
        if any(v < 0 for _, v in fracs) or sum(v for _, v in fracs) > 1 + 1e-9:
            raise ConfigError(f"{where}: split fractions must be >= 0 and sum to at most 1, got {split}")
        split = fracs
    return Manifest(datasets=tuple(specs), split=split, name=str(doc.get("name", "")), source=where)


def _keep_steps(doc, where: str):
    """``{episode_id: [[start, stop], ...]}`` -> sorted, merged, validated ranges (None when absent)."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: a mapping episode id -> [[start, stop], ...], got {type(doc).__name__}")
    out = []
    for eid, ranges in sorted(doc.items(), key=lambda kv: str(kv[0])):
        ok = isinstance(ranges, list) and all(
            isinstance(r, (list, tuple)) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  for v in r) and 0 <= r[0] < r[1] for r in ranges)
        if not ok:
            raise ConfigError(f"{where}: {eid}: ranges are [start, stop] step pairs with 0 <= start < stop, "
                              f"got {ranges!r}")
        merged: list[list[int]] = []
        for a, b in sorted(tuple(r) for r in ranges):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        out.append((str(eid), tuple((a, b) for a, b in merged)))
    return tuple(out)


def kept_steps_mask(ranges, num_steps: int) -> np.ndarray:
    """A (num_steps,) bool mask of the stored steps inside ``ranges`` (None: every step)."""
    if ranges is None:
        return np.ones(num_steps, bool)
    mask = np.zeros(num_steps, bool)
    for a, b in ranges:
        mask[a:b] = True
    return mask


def view_selection(path: str) -> tuple[DatasetSpec, pa.Table]:
    """A view or manifest naming one dataset (or a plain dataset path): its spec and selected index
    rows (filter and episode ids applied; kept step ranges in ``spec.ranges``)."""
    import wamdata

    manifest = load_manifest(path)
    if len(manifest.datasets) != 1:
        raise ConfigError(f"{path}: the manifest names {len(manifest.datasets)} datasets; this command reads one "
                          "(a view of one dataset, as `wamdata curate --out` writes)")
    spec = manifest.datasets[0]
    return spec, select_rows(wamdata.open_dataset(spec.path).episodes, spec, None, None)


def _read_ids(path: str) -> list[str]:
    import fsspec

    try:
        if path.endswith(".parquet"):
            from wamdata.format import layout

            fs, p = layout.open_fs(path)
            return [str(x) for x in layout.read_parquet(fs, p, columns=["episode_id"])["episode_id"].to_pylist()]
        with fsspec.open(path, "r") as f:
            return [line.strip() for line in f if line.strip() and not line.strip().startswith("#")]
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: episodes_file not found") from e


# ---- filters: a small, safe expression language over index columns -> pyarrow compute -------------

_CMP = {ast.Eq: "__eq__", ast.NotEq: "__ne__", ast.Lt: "__lt__", ast.LtE: "__le__", ast.Gt: "__gt__",
        ast.GtE: "__ge__"}


def compile_filter(text: str) -> pc.Expression:
    """``"success == True and num_steps >= 60 and embodiment in ['franka', 'ur5']"`` -> an Arrow
    expression. Names are index columns; literals are numbers, strings, True/False/None (or
    true/false/null) and lists;
    operators are comparisons, ``in`` / ``not in``, ``is None`` / ``is not None`` (a missing value:
    a comparison with one is false), ``and`` / ``or`` / ``not``."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ConfigError(f"filter {text!r}: not an expression ({e.msg})") from e
    return _expr(tree.body, text)


def _literal(node, text):
    try:
        return ast.literal_eval(node)
    except ValueError as e:
        raise ConfigError(f"filter {text!r}: expected a literal, got {ast.unparse(node)!r}") from e


_WORDS = {"true": True, "false": False, "null": None}   # JSON/YAML spellings, as users write them


def _operand(node, text):
    if isinstance(node, ast.Name) and node.id in _WORDS:
        return pc.scalar(_WORDS[node.id])
    if isinstance(node, ast.Name):
        return pc.field(node.id)
    return pc.scalar(_literal(node, text))


def _expr(node, text) -> pc.Expression:
    if isinstance(node, ast.BoolOp):
        parts = [_expr(v, text) for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(node.op, ast.And) else (out | p)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return ~_expr(node.operand, text)
    if isinstance(node, ast.Compare):
        out, left = None, node.left
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(left, ast.Name):
                    raise ConfigError(f"filter {text!r}: 'in' needs a column on the left")
                values = _literal(right, text)
                if not isinstance(values, (list, tuple, set)):
                    raise ConfigError(f"filter {text!r}: 'in' needs a list, e.g. task in ['a', 'b']")
                e = pc.field(left.id).isin(list(values))
                e = ~e if isinstance(op, ast.NotIn) else e
            elif isinstance(op, (ast.Is, ast.IsNot)):
                if not (isinstance(left, ast.Name) and isinstance(right, ast.Constant) and right.value is None):
                    raise ConfigError(f"filter {text!r}: 'is' only as 'column is None' / 'column is not None'")
                e = pc.field(left.id).is_null() if isinstance(op, ast.Is) else pc.field(left.id).is_valid()
            elif type(op) in _CMP:
                a, b = _operand(left, text), _operand(right, text)
                e = getattr(a, _CMP[type(op)])(b)
            else:
                raise ConfigError(f"filter {text!r}: unsupported operator {type(op).__name__}")
            out = e if out is None else (out & e)
            left = right
        return out
    if isinstance(node, ast.Name):
        return pc.field(node.id) == pc.scalar(True)
    raise ConfigError(f"filter {text!r}: unsupported syntax {ast.unparse(node)!r} "
                      "(use comparisons, in, and, or, not over index columns)")


def select_rows(index: pa.Table, spec: DatasetSpec, split: str | None,
                fractions: tuple[tuple[str, float], ...] | None) -> pa.Table:
    """The index rows of one dataset the stream uses: filter, curated ids, split."""
    table = index
    if spec.filter:
        try:
            table = table.filter(compile_filter(spec.filter))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, KeyError) as e:
            raise ConfigError(f"{spec.path}: filter {spec.filter!r} failed on the index "
                              f"(columns: {', '.join(index.column_names)}): {str(e).splitlines()[0]}") from e
    if spec.episodes is not None:
        wanted = set(spec.episodes)
        table = table.filter(pc.is_in(table["episode_id"], pa.array(sorted(wanted), pa.string())))
        missing = wanted - set(index["episode_id"].to_pylist())
        if missing:
            # a curated view naming episodes the dataset does not have is probably stale or mistyped
            log.warning("%s: %d of the %d listed episodes are not in the dataset (e.g. %s)", spec.path,
                        len(missing), len(wanted), ", ".join(sorted(missing)[:3]))
    if split is not None:
        table = table.filter(pa.array(split_mask(table, split, fractions, spec.path)))
    return table


def split_mask(table: pa.Table, split: str, fractions, where: str) -> np.ndarray:
    if fractions is None:
        if "split" not in table.column_names:
            raise ConfigError(f"{where}: split {split!r} asked but the index has no split column and the "
                              "manifest no split fractions (add e.g. split: {train: 0.95, val: 0.05})")
        return np.asarray(pc.equal(table["split"], split).fill_null(False))
    names = [n for n, _ in fractions]
    if split not in names:
        raise ConfigError(f"{where}: unknown split {split!r}; the manifest defines {', '.join(names)}")
    lo = sum(f for n, f in fractions[: names.index(split)])
    hi = lo + dict(fractions)[split]
    u = np.array([stable_fraction(e) for e in table["episode_id"].to_pylist()])
    return (u >= lo) & (u < hi)
