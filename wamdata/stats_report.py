"""The `wamdata stats` report: what a dataset holds and how its features are distributed.

:func:`summarize` gathers plain data (JSON-able) from the index, ``wamdata.json``, ``failures.jsonl`` and
the statistics of :mod:`wamdata.stats`; :func:`format_report` renders it as fixed-width text tables.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from wamdata.errors import ConfigError
from wamdata.sources import human_bytes

BY_KEYS = ("source", "embodiment", "family", "task")
IDLE_FEATURE = "extra.idle"
TOP_TASKS = 10
MAX_DIMS = 32  # per feature in the text report; --json has them all


def selected_index(dataset_path: str):
    """What a dataset or a view selects: ``(dataset, index rows as lists, kept step ranges by episode id,
    steps and seconds each episode contributes)`` — a view's kept steps of its kept episodes."""
    import wamdata
    from wamdata.loader.manifest import is_manifest_path, kept_steps_mask, view_selection

    if is_manifest_path(dataset_path):
        spec, rows = view_selection(dataset_path)
        ds, idx, ranges = wamdata.open_dataset(spec.path), rows.to_pydict(), spec.ranges
    else:
        ds = wamdata.open_dataset(dataset_path)
        idx, ranges = ds.episodes.to_pydict(), {}
    stored = np.asarray(idx["num_steps"], np.int64)
    steps = np.array([int(kept_steps_mask(ranges[e], n).sum()) if e in ranges else n
                      for e, n in zip(idx["episode_id"], stored.tolist())], np.int64)
    secs = np.asarray(idx["duration_s"], np.float64) * steps / np.maximum(stored, 1)
    return ds, idx, ranges, steps, secs


def summarize(dataset_path: str, stats: dict, by: str = "embodiment") -> dict:
    """Everything the report shows, as plain data (``stats`` is the content of ``stats.json``)."""
    if by not in BY_KEYS:
        raise ConfigError(f"--by {by!r}: unknown key; known: {', '.join(BY_KEYS)}")
    ds, idx, _, steps, secs = selected_index(dataset_path)
    n = len(idx["episode_id"])
    counts = ds.info.get("counts", {})

    groups: dict[str, dict] = defaultdict(lambda: {"episodes": 0, "steps": 0, "hours": 0.0, "_succ": []})
    for i in range(n):
        g = groups[str(idx[by][i]) or "(none)"]
        g["episodes"] += 1
        g["steps"] += int(steps[i])
        g["hours"] += float(secs[i]) / 3600
        if idx["success"][i] is not None:
            g["_succ"].append(bool(idx["success"][i]))
    breakdown = {}
    for key in sorted(groups, key=lambda k: (-groups[k]["episodes"], k)):
        g = groups[key]
        succ = g.pop("_succ")
        breakdown[key] = {**g, "success_rate": _rate(succ)}

    tasks = Counter(t for t in idx["task"] if t)
    with_language = sum(1 for ts in idx.get("tasks", idx["task"]) if ts)
    lang = stats.get("counters", {}).get("language", {})
    if lang:  # the stats pass saw language segments too, not only task strings
        with_language = max(with_language, int(lang.get("with", 0)))
    cam_episodes = Counter(c for cams in idx["cameras"] for c in (cams or []))
    cameras = {name: {**{k: c.get(k) for k in ("width", "height", "fps", "codec")},
                      "episodes": cam_episodes.get(name, 0)}
               for name, c in sorted(ds.info.get("cameras", {}).items())}
    try:
        failures = len(ds.failures())
    except Exception:  # noqa: BLE001 - an unreadable failures file is reported, not fatal here
        failures = counts.get("failures")
    success = [bool(s) for s in idx["success"] if s is not None]

    return {
        "path": dataset_path,
        "episodes": n,
        "steps": int(steps.sum()),
        "hours": float(secs.sum()) / 3600,
        "bytes": counts["bytes"] if "bytes" in counts else _shard_bytes(ds),   # sizes only when not recorded
        "shards": len(ds.shards),
        "by": by,
        "breakdown": breakdown,
        "success_rate": _rate(success),
        "success_known": len(success),
        "top_tasks": dict(tasks.most_common(TOP_TASKS)),
        "distinct_tasks": len(tasks),
        "language_coverage": (with_language / n) if n else None,
        "episode_length": _distribution(steps, secs),
        "cameras": cameras,
        "action_spaces": dict(Counter(idx["action_space"]).most_common()),
        "failures": failures,
        "idle_fraction": _idle_fraction(stats),
        "feature_names": {name: list(f.names) if f.names else None for name, f in ds.features.items()},
        "stats": stats,
    }


def _rate(values: list[bool]) -> float | None:
    return (sum(values) / len(values)) if values else None


def _shard_bytes(ds) -> int:
    from wamdata.format import layout

    return sum(ds.fs.size(layout.join(ds.root, s)) for s in ds.shards)


def _distribution(steps: np.ndarray, secs: np.ndarray) -> dict:
    if len(steps) == 0:
        return {}
    return {"steps": {"min": int(steps.min()), "median": float(np.median(steps)), "max": int(steps.max())},
            "seconds": {"min": float(secs.min()), "median": float(np.median(secs)), "max": float(secs.max())}}


def _idle_fraction(stats: dict) -> float | None:
    flag = stats.get("flags", {}).get("all", {}).get(IDLE_FEATURE)
    if flag is not None:
        return flag["fraction"]
    numeric = stats.get("all", {}).get(IDLE_FEATURE)
    if numeric is not None and numeric["mean"]:
        return numeric["mean"][0]
    return None


# ----------------------------------------------------------------------------------------------------
# text


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def _g(v) -> str:
    return f"{'—':>11}" if v is None else f"{v:>11.4g}"


def dim_label(name: str, j: int, shape: list, names) -> str:
    if not shape:
        return name
    if names and j < len(names):
        return f"{name}[{names[j]}]"
    if len(shape) > 1:
        return f"{name}[{','.join(map(str, np.unravel_index(j, shape)))}]"
    return f"{name}[{j}]"


def format_report(s: dict) -> str:
    """The report as fixed-width text."""
    out = [f"{s['path']}",
           f"  episodes {s['episodes']}   steps {s['steps']}   hours {s['hours']:.3f}   "
           f"{human_bytes(s['bytes'])} in {s['shards']} shards   failures {s['failures']}",
           f"  success rate {_pct(s['success_rate'])} (of {s['success_known']} labelled)   "
           f"language coverage {_pct(s['language_coverage'])}   idle fraction {_pct(s['idle_fraction'])}"]
    el = s["episode_length"]
    if el:
        st, sec = el["steps"], el["seconds"]
        out.append(f"  episode length: steps min {st['min']} / median {st['median']:g} / max {st['max']}   "
                   f"seconds min {sec['min']:.1f} / median {sec['median']:.1f} / max {sec['max']:.1f}")

    out += ["", f"  by {s['by']}:",
            f"    {'':<28} {'episodes':>9} {'steps':>11} {'hours':>9} {'success':>8}"]
    for key, g in s["breakdown"].items():
        out.append(f"    {key[:28]:<28} {g['episodes']:>9} {g['steps']:>11} {g['hours']:>9.3f} "
                   f"{_pct(g['success_rate']):>8}")

    out += ["", f"  top tasks ({s['distinct_tasks']} distinct):"]
    out += [f"    {count:>7}  {task[:90]}" for task, count in s["top_tasks"].items()] or ["    (none)"]

    out += ["", "  cameras:"]
    for name, c in s["cameras"].items():
        fps = f"{c['fps']:g}" if c.get("fps") else "?"
        out.append(f"    {name:<16} {c.get('width')}x{c.get('height')} @ {fps} fps  {c.get('codec') or ''}  "
                   f"in {c['episodes']} episodes")
    if not s["cameras"]:
        out.append("    (none)")
    out += ["", "  action spaces: " + (", ".join(f"{k} ({v})" for k, v in s["action_spaces"].items()) or "none")]

    stats = s["stats"]
    out += ["", f"  features (all embodiments; per-embodiment values in stats.json, "
                f"quantiles within {stats.get('sketch', {}).get('normalized_rank_error', 0):.2%} rank error):"]
    keys = ("mean", "std", "min", "max", "q01", "q99")
    rows = []   # (label, values) of a dimension, or (note, None)
    for name, f in stats.get("all", {}).items():
        dims = len(f["mean"])
        for j in range(min(dims, MAX_DIMS)):
            rows.append((dim_label(name, j, f.get("shape", []), s["feature_names"].get(name)), [f[k][j] for k in keys]))
        if dims > MAX_DIMS:
            rows.append((f"{name} ... {dims - MAX_DIMS} more dimensions (see --json)", None))
    width = max([len("feature[dim]")] + [len(label) for label, v in rows if v is not None])   # names never cut
    out.append(f"    {'feature[dim]':<{width}} " + " ".join(f"{k:>11}" for k in keys))
    for label, values in rows:
        out.append(f"    {label:<{width}} " + " ".join(_g(v) for v in values) if values is not None else f"    {label}")
    return "\n".join(out)
