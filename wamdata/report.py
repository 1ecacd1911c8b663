"""`wamdata info`: what a dataset holds, from its index and wamdata.json (no shard is read)."""

from __future__ import annotations

from collections import Counter

from wamdata.format.reader import Dataset


def dataset_summary(path: str) -> dict:
    ds = Dataset(path)
    idx = ds.episodes.to_pydict()
    counts = ds.info["counts"]
    by_source = Counter()
    hours_by_source = Counter()
    for src, dur in zip(idx["source"], idx["duration_s"]):
        by_source[src] += 1
        hours_by_source[src] += dur / 3600
    success = [s for s in idx["success"] if s is not None]
    return {
        "path": path,
        "format_version": ds.info["format_version"],
        "episodes": counts["episodes"],
        "steps": counts["steps"],
        "hours": counts["hours"],
        "bytes": counts["bytes"],
        "shards": counts["shards"],
        "failures": counts["failures"],
        "sources": {s: {"episodes": by_source[s], "hours": hours_by_source[s]} for s in sorted(by_source)},
        "families": dict(Counter(idx["family"])),
        "embodiments": dict(Counter(idx["embodiment"])),
        "action_spaces": dict(Counter(idx["action_space"])),
        "success_rate": (sum(success) / len(success)) if success else None,
        "tasks": len(set(idx["task"]) - {""}),
        "cameras": ds.info["cameras"],
        "features": {n: {k: f[k] for k in ("dtype", "shape", "unit", "frame", "encoding", "derived")}
                     for n, f in ds.info["features"].items()},
    }


def format_summary(s: dict) -> str:
    lines = [
        f"{s['path']}  (wamdata format v{s['format_version']})",
        f"  episodes {s['episodes']}   steps {s['steps']}   hours {s['hours']:.3f}   "
        f"{s['bytes'] / 1e6:.1f} MB in {s['shards']} shards   failures {s['failures']}",
    ]
    if s["success_rate"] is not None:
        lines.append(f"  success rate {s['success_rate']:.1%}   distinct tasks {s['tasks']}")
    lines.append("  sources:")
    for name, v in s["sources"].items():
        lines.append(f"    {name:<20} {v['episodes']:>7} episodes {v['hours']:>9.3f} h")
    lines.append("  families: " + ", ".join(f"{k} ({v})" for k, v in s["families"].items()))
    lines.append("  embodiments: " + ", ".join(f"{k} ({v})" for k, v in s["embodiments"].items()))
    lines.append("  action spaces: " + ", ".join(f"{k} ({v})" for k, v in s["action_spaces"].items()))
    lines.append("  cameras:")
    for name, c in s["cameras"].items():
        lines.append(f"    {name:<14} {c['width']}x{c['height']} @ {c['fps']:g} fps  {c['codec']}")
    lines.append("  features:")
    extras = [n for n in s["features"] if n.startswith("extra.")]
    for name, f in s["features"].items():
        if name in extras:
            continue
        shape = "x".join(map(str, f["shape"])) or "scalar"
        extra = ", ".join(x for x in (f["unit"], f["frame"], f["encoding"], "derived" if f["derived"] else None) if x)
        lines.append(f"    {name:<24} {f['dtype']:<8} {shape:<8} {extra}")
    if extras:
        groups = sorted({n.split(".")[1] for n in extras})
        lines.append(f"    extra.* (source fields kept as recorded): {len(extras)} columns in "
                     f"{', '.join(groups)}  (`wamdata info --json` lists them)")
    return "\n".join(lines)
