"""`wamdata stats DATASET_OR_MANIFEST --html FILE`: the statistics report as one self-contained HTML file.

Everything is embedded (plots as base64 PNG from matplotlib's Agg backend, sample frames as small JPEG
strips, one stylesheet inline), so the file opens offline and can be mailed or attached to a ticket.
Sections: a summary table (one row per dataset: the numbers ``wamdata info`` prints), hours and
episodes per source and per embodiment, then per dataset: episode-length histograms per source, a strip
of sample frames per source and camera (decoded through :func:`wamdata.format.video.get_decoder`),
per-dimension distributions of every ``state.*`` / ``action.*`` feature per embodiment (min..max,
q01..q99, mean +- std, median; labelled with the feature's dimension names), histograms of the quality
signals of ``curation/signals.parquet`` (``wamdata curate --signals``) and the conversion failures.

The input is what the statistics were computed on: a dataset, a view (one dataset, its kept episodes
and steps) or a manifest of several datasets, which :func:`dataset_parts` splits into one view per
dataset. Sizes stay bounded: a strip holds at most ``STRIP_FRAMES`` thumbnails ``THUMB_HEIGHT`` px
high, drawn from the first ``FRAME_SPAN`` kept steps of up to ``STRIP_FRAMES`` episodes; a feature plot
shows at most ``MAX_DIMS`` dimensions, and at most ``MAX_FAILURES`` failures are listed.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import tempfile
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator, Sequence

import numpy as np

from wamdata.errors import FormatError
from wamdata.loader.manifest import is_manifest_path, kept_steps_mask, load_manifest
from wamdata.sources import human_bytes
from wamdata.stats_report import dim_label, selected_index, summarize

log = logging.getLogger(__name__)

STRIP_FRAMES = 6
THUMB_HEIGHT = 96
FRAME_SPAN = 300      # a strip samples the first kept steps of an episode only: decoding stays bounded
JPEG_QUALITY = 80
MAX_DIMS = 64
MAX_FAILURES = 20
DPI = 72
PLOT_PREFIXES = ("state.", "action.")
_NOT_PLOTTED = {"duplicate_of", "state_hash", "idle_ranges", "frame_hashes"}   # ids, hashes and lists

__all__ = ["Part", "dataset_parts", "render_report", "write_report"]


@dataclass(frozen=True)
class Part:
    """One dataset of the report: ``path`` is what statistics and the report read (the dataset, or a
    view of it); ``dataset`` its folder; ``where`` how the report names it."""

    label: str
    path: str
    dataset: str
    where: str


@contextmanager
def dataset_parts(path: str) -> Iterator[list[Part]]:
    """The datasets of ``path``: a dataset or a view of one is one part; a manifest of several gives
    one view per dataset (written to a temporary folder that lives as long as the context)."""
    if not is_manifest_path(path):
        yield [Part(os.path.basename(str(path).rstrip("/")) or str(path), path, path, path)]
        return
    manifest = load_manifest(path)
    if len(manifest.datasets) == 1:
        spec = manifest.datasets[0]
        yield [Part(spec.label, path, spec.path, path)]
        return
    import yaml

    with tempfile.TemporaryDirectory(prefix="wamdata-report-") as tmp:
        parts = []
        for i, spec in enumerate(manifest.datasets):
            entry = {"path": spec.path if "://" in spec.path else os.path.abspath(spec.path), "name": spec.label}
            if spec.filter:
                entry["filter"] = spec.filter
            if spec.episodes is not None:
                entry["episodes"] = list(spec.episodes)
            if spec.keep_steps:
                entry["keep_steps"] = {e: [list(r) for r in rs] for e, rs in spec.keep_steps}
            view = os.path.join(tmp, f"dataset-{i}.yaml")
            with open(view, "w") as f:
                yaml.safe_dump({"datasets": [entry]}, f)
            parts.append(Part(spec.label, view, spec.path, f"{path}: {spec.label} ({spec.path})"))
        yield parts


# ---- data ---------------------------------------------------------------------------------------

def _hours(h: float) -> str:
    if h >= 1:
        return f"{h:,.1f} h"
    return f"{h * 60:.1f} min" if h * 60 >= 1 else f"{h * 3600:.1f} s"


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float, h: float, cols: int = 1):
    """A figure drawn by Agg (matplotlib's object API: no pyplot, no global backend or figure state)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    return fig, fig.subplots(1, cols, sharey=cols > 1)


def _bars(title: str, counts: dict[str, tuple[float, int]]) -> str:
    """Hours and episodes per key, side by side."""
    keys = sorted(counts, key=lambda k: -counts[k][0])
    most = max(counts[k][0] for k in keys)
    unit, scale = ("hours", 1) if most >= 1 else ("minutes", 60) if most * 60 >= 1 else ("seconds", 3600)
    fig, (a, b) = _figure(8, 0.8 + 0.3 * len(keys), cols=2)
    y = np.arange(len(keys))
    a.barh(y, [counts[k][0] * scale for k in keys], color="#4c78a8")
    b.barh(y, [counts[k][1] for k in keys], color="#f58518")
    a.set_yticks(y, keys)
    a.invert_yaxis()
    a.set_xlabel(unit)
    b.set_xlabel("episodes")
    fig.suptitle(title)
    return _png(fig)


def _length_hist(source: str, seconds: np.ndarray, steps: np.ndarray) -> str:
    fig, ax = _figure(4.2, 2.4)
    ax.hist(seconds, bins=min(30, max(5, len(seconds))), color="#4c78a8")
    ax.set_xlabel("episode length, s")
    ax.set_ylabel("episodes")
    ax.set_title(f"{source}: {len(seconds)} episodes, median {np.median(seconds):.1f} s "
                 f"({np.median(steps):g} steps)", fontsize=9)
    return _png(fig)


def _dims_plot(name: str, f: dict, names) -> str:
    """Per dimension (labelled by its name, else its index): min..max (thin), q01..q99 (thick),
    mean +- std (black), median (white tick)."""
    shape = f.get("shape", [])
    d = min(len(f["mean"]), MAX_DIMS)
    val = {k: np.array([np.nan if v is None else v for v in f[k][:d]], np.float64)
           for k in ("mean", "std", "min", "max", "q01", "q50", "q99")}
    fig, ax = _figure(6.5, 0.7 + 0.22 * d)
    y = np.arange(d)
    ax.hlines(y, val["min"], val["max"], color="#bbbbbb", lw=1)
    ax.hlines(y, val["q01"], val["q99"], color="#9ecae9", lw=6)
    ax.errorbar(val["mean"], y, xerr=val["std"], fmt="o", color="black", ms=3, capsize=2)
    ax.plot(val["q50"], y, "|", color="white", ms=6, mew=1.5)
    ax.set_yticks(y, [dim_label("", j, shape, names).strip("[]") or name for j in range(d)], fontsize=7)
    ax.invert_yaxis()
    ax.set_title(name, fontsize=9)
    return _png(fig)


def _signal_hist(name: str, values: np.ndarray) -> str:
    fig, ax = _figure(3.0, 1.9)
    if values.dtype == np.bool_:
        ax.bar(["false", "true"], [int((~values).sum()), int(values.sum())], color="#54a24b")
    else:
        ax.hist(values, bins=min(20, max(5, len(values))), color="#54a24b")
    ax.set_title(name, fontsize=9)
    ax.tick_params(labelsize=7)
    return _png(fig)


def _strip(frames: list[np.ndarray]) -> str:
    """Thumbnails side by side, 2 px apart, as one JPEG."""
    import cv2

    thumbs = [cv2.resize(fr, (max(1, round(fr.shape[1] * THUMB_HEIGHT / fr.shape[0])), THUMB_HEIGHT),
                         interpolation=cv2.INTER_AREA) for fr in frames]
    gap = np.full((THUMB_HEIGHT, 2, 3), 255, np.uint8)
    strip = np.concatenate([x for t in thumbs for x in (t, gap)][:-1], axis=1)
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(strip[..., ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), JPEG_QUALITY])
    if not ok:
        raise FormatError("cannot encode a frame strip as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _frame_strips(ds, idx: dict, ranges: dict, decoder) -> list[dict]:
    """One strip per (source, camera): up to STRIP_FRAMES frames from episodes spread over the source."""
    by: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, cams in enumerate(idx["cameras"]):
        for cam in cams or []:
            by[(idx["source"][i], cam)].append(i)
    out = []
    for (source, cam), rows in sorted(by.items()):
        picked = sorted(set(np.linspace(0, len(rows) - 1, min(STRIP_FRAMES, len(rows))).round().astype(int)))
        per = -(-STRIP_FRAMES // len(picked))
        frames, labels = [], []
        try:
            for r in (rows[p] for p in picked):
                eid, n = idx["episode_id"][r], int(idx["num_steps"][r])
                steps = np.flatnonzero(kept_steps_mask(ranges.get(eid), n))[:FRAME_SPAN]
                if len(steps) == 0:
                    continue
                want = sorted(set(steps[np.linspace(0, len(steps) - 1, min(per, len(steps))).round().astype(int)]))
                ep = ds.episode(eid)
                for t, fr in enumerate(ep.iter_frames(cam, 0, want[-1] + 1, decoder)):
                    if t in want:
                        frames.append(fr)
                        labels.append(f"{eid} @ {t}")
            frames, labels = frames[:STRIP_FRAMES], labels[:STRIP_FRAMES]
            if not frames:
                continue
            cam_info = ds.cameras.get(cam, {})
            out.append({"source": source, "camera": cam, "uri": _strip(frames), "labels": labels, "error": None,
                        "size": f"{cam_info.get('width')}x{cam_info.get('height')}"})
        except FormatError as e:   # a damaged video is reported in its strip's place, not fatal
            out.append({"source": source, "camera": cam, "uri": None, "labels": [], "error": str(e), "size": ""})
    return out


def _signals(part: Part, ds, ids: Sequence[str]) -> dict:
    """Histograms of the numeric / boolean signal columns over the selected episodes (or why none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from wamdata.curate import COLUMNS, load_signals

    try:
        table = load_signals(part.dataset, ds)
    except FormatError as e:   # none computed, or out of date: the report says which, never plots stale values
        return {"missing": str(e), "plots": []}
    table = table.filter(pc.is_in(table["episode_id"], pa.array(list(ids), pa.string())))
    plots, empty = [], []
    for name in (c for c in COLUMNS if c in table.column_names and c not in _NOT_PLOTTED):
        col = table[name]
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
            continue
        values = col.drop_null().to_numpy(zero_copy_only=False)
        if values.dtype != np.bool_:
            values = values[np.isfinite(values.astype(np.float64))]
        if len(values) == 0:
            empty.append(name)
            continue
        plots.append({"name": name, "uri": _signal_hist(name, values), "doc": COLUMNS[name]})
    return {"missing": None, "plots": plots, "empty": empty, "episodes": table.num_rows}


def _features(summary: dict, ds) -> list[dict]:
    """Per embodiment, the plotted features (state.* / action.*) and the names of the other ones."""
    out = []
    for emb, feats in summary["stats"].get("by_embodiment", {}).items():
        plots = []
        for name, f in feats.items():
            if not name.startswith(PLOT_PREFIXES) or not f["mean"]:
                continue
            decl = ds.features.get(name)
            about = ", ".join(x for x in (getattr(decl, "unit", None), getattr(decl, "frame", None),
                                          getattr(decl, "encoding", None)) if x)
            plots.append({"name": name, "uri": _dims_plot(name, f, summary["feature_names"].get(name)),
                          "about": about, "count": f["count"], "dims": len(f["mean"]),
                          "hidden": max(0, len(f["mean"]) - MAX_DIMS)})
        others = sorted(n for n in feats if not n.startswith(PLOT_PREFIXES))
        out.append({"embodiment": emb, "plots": plots, "others": others})
    return out


def _dataset_section(part: Part, stats: dict, decoder) -> dict:
    ds, idx, ranges, steps, secs = selected_index(part.path)   # a view: its kept steps, as in the summary
    by_source = summarize(part.path, stats, by="source")
    by_emb = summarize(part.path, stats, by="embodiment")
    lengths = []
    for source in by_source["breakdown"]:
        rows = [i for i, s in enumerate(idx["source"]) if (str(s) or "(none)") == source]
        lengths.append({"source": source, "uri": _length_hist(source, secs[rows], steps[rows])})
    failures = ds.failures()
    return {
        "label": part.label, "where": part.where, "summary": by_source, "by_embodiment": by_emb["breakdown"],
        "lengths": lengths, "strips": _frame_strips(ds, idx, ranges, decoder),
        "features": _features(by_source, ds), "signals": _signals(part, ds, idx["episode_id"]),
        "failures": failures[:MAX_FAILURES], "failures_total": len(failures),
        "cameras": by_source["cameras"],
    }


def render_report(parts: Sequence[tuple[Part, dict]], title: str, decoder: str = "pyav") -> str:
    """The report's HTML for ``(part, its statistics)`` pairs (statistics as ``wamdata stats`` returns)."""
    import jinja2

    from wamdata.format.video import get_decoder

    dec = get_decoder(decoder)
    sections = [_dataset_section(part, stats, dec) for part, stats in parts]
    many = len(sections) > 1
    hours_src, hours_emb = defaultdict(lambda: [0.0, 0]), defaultdict(lambda: [0.0, 0])
    for s in sections:
        for key, g in s["summary"]["breakdown"].items():
            acc = hours_src[f"{s['label']}/{key}" if many and key != s["label"] else key]
            acc[0], acc[1] = acc[0] + g["hours"], acc[1] + g["episodes"]
        for key, g in s["by_embodiment"].items():
            acc = hours_emb[key]
            acc[0], acc[1] = acc[0] + g["hours"], acc[1] + g["episodes"]
    total = {k: sum(s["summary"][k] for s in sections) for k in ("episodes", "steps", "hours", "bytes", "shards")}
    total["failures"] = sum(s["failures_total"] for s in sections)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(hours=_hours, size=human_bytes, pct=_pct)
    return env.from_string(_TEMPLATE).render(
        title=title, generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), sections=sections,
        total=total, many=many, by_source=_bars("per source", dict(hours_src)) if hours_src else None,
        by_embodiment=_bars("per embodiment", dict(hours_emb)) if hours_emb else None)


def write_report(out: str, parts: Sequence[tuple[Part, dict]], title: str, decoder: str = "pyav") -> str:
    """Render the report and write it to ``out`` (written to a temporary name, then renamed)."""
    html = render_report(parts, title, decoder)
    tmp = f"{out}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(html)
    os.replace(tmp, out)
    return out


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>wamdata stats: {{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 2px solid #4c78a8; padding-bottom: .2em; margin-top: 2em; }
h3 { margin-top: 1.5em; color: #333; } .muted { color: #777; font-size: .9em; }
table { border-collapse: collapse; margin: .5em 0; } th, td { padding: .25em .7em; border-bottom: 1px solid #ddd; }
th { background: #f3f5f8; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: bold; border-top: 2px solid #999; }
figure { display: inline-block; margin: .4em .8em .8em 0; vertical-align: top; } figcaption { font-size: .85em; color: #555; max-width: 700px; }
.note { background: #fff8e1; border-left: 4px solid #f2b600; padding: .5em .8em; }
code { background: #f3f3f3; padding: 0 .2em; }
</style></head><body>
<h1>wamdata stats: {{ title }}</h1>
<p class="muted">generated {{ generated }} · {{ sections|length }} dataset{{ "s" if many else "" }}</p>

<section id="summary"><h2>Summary</h2>
<table><tr><th>dataset</th><th>episodes</th><th>steps</th><th>duration</th><th>size</th><th>shards</th>
<th>failures</th><th>success</th><th>cameras</th><th>action spaces</th></tr>
{% for s in sections %}{% set m = s.summary %}<tr class="dataset" data-dataset="{{ s.label }}">
<td>{{ s.label }}</td>
<td class="n" data-key="episodes" data-value="{{ m.episodes }}">{{ "{:,}".format(m.episodes) }}</td>
<td class="n" data-key="steps" data-value="{{ m.steps }}">{{ "{:,}".format(m.steps) }}</td>
<td class="n" data-key="hours" data-value="{{ m.hours }}">{{ m.hours|hours }}</td>
<td class="n" data-key="bytes" data-value="{{ m.bytes }}">{{ m.bytes|size }}</td>
<td class="n" data-key="shards" data-value="{{ m.shards }}">{{ m.shards }}</td>
<td class="n" data-key="failures" data-value="{{ s.failures_total }}">{{ s.failures_total }}</td>
<td class="n">{{ m.success_rate|pct }}</td><td>{{ s.cameras|join(", ") or "none" }}</td>
<td>{% for k, v in m.action_spaces.items() %}{{ k }} ({{ v }}){{ ", " if not loop.last }}{% endfor %}</td></tr>
{% endfor %}{% if many %}<tr class="total"><td>total</td><td class="n">{{ "{:,}".format(total.episodes) }}</td>
<td class="n">{{ "{:,}".format(total.steps) }}</td><td class="n">{{ total.hours|hours }}</td>
<td class="n">{{ total.bytes|size }}</td><td class="n">{{ total.shards }}</td><td class="n">{{ total.failures }}</td>
<td></td><td></td><td></td></tr>{% endif %}
</table>
<h3>By source and embodiment</h3>
<table><tr><th>dataset</th><th>source</th><th>episodes</th><th>steps</th><th>duration</th><th>success</th></tr>
{% for s in sections %}{% for src, g in s.summary.breakdown.items() %}
<tr class="source" data-dataset="{{ s.label }}" data-source="{{ src }}"><td>{{ s.label }}</td><td>{{ src }}</td>
<td class="n" data-key="episodes" data-value="{{ g.episodes }}">{{ "{:,}".format(g.episodes) }}</td>
<td class="n">{{ "{:,}".format(g.steps) }}</td>
<td class="n" data-key="hours" data-value="{{ g.hours }}">{{ g.hours|hours }}</td><td class="n">{{ g.success_rate|pct }}</td></tr>
{% endfor %}{% endfor %}</table>
<table><tr><th>dataset</th><th>embodiment</th><th>episodes</th><th>duration</th></tr>
{% for s in sections %}{% for e, g in s.by_embodiment.items() %}<tr class="embodiment"><td>{{ s.label }}</td><td>{{ e }}</td>
<td class="n">{{ "{:,}".format(g.episodes) }}</td><td class="n">{{ g.hours|hours }}</td></tr>{% endfor %}{% endfor %}</table>
{% if by_source %}<figure class="overview"><img alt="hours and episodes per source" src="{{ by_source }}"></figure>{% endif %}
{% if by_embodiment %}<figure class="overview"><img alt="hours and episodes per embodiment" src="{{ by_embodiment }}"></figure>{% endif %}
</section>

{% for s in sections %}{% set d = loop.index %}
<section class="dataset" id="dataset-{{ d }}" data-dataset="{{ s.label }}"><h2>{{ s.label }}</h2>
<p class="muted">{{ s.where }}</p>

<section class="lengths" id="dataset-{{ d }}-lengths"><h3>Episode lengths</h3>
{% for l in s.lengths %}<figure data-source="{{ l.source }}"><img alt="episode lengths of {{ l.source }}" src="{{ l.uri }}"></figure>{% endfor %}
</section>

<section class="frames" id="dataset-{{ d }}-frames"><h3>Sample frames</h3>
{% for st in s.strips %}<figure class="strip" data-source="{{ st.source }}" data-camera="{{ st.camera }}">
{% if st.uri %}<img alt="{{ st.source }} / {{ st.camera }}" src="{{ st.uri }}">
<figcaption>{{ st.source }} / <b>{{ st.camera }}</b> ({{ st.size }}): {{ st.labels|join(", ") }}</figcaption>
{% else %}<p class="note">{{ st.source }} / {{ st.camera }}: frames unavailable: {{ st.error }}</p>{% endif %}</figure>
{% else %}<p class="muted">no cameras</p>{% endfor %}
</section>

<section class="distributions" id="dataset-{{ d }}-distributions"><h3>State and action distributions</h3>
<p class="muted">per dimension: grey min..max, blue q01..q99, black mean ± std, white tick the median
(quantiles within {{ "%.2f%%"|format(100 * s.summary.stats.get("sketch", {}).get("normalized_rank_error", 0)) }} rank error)</p>
{% for e in s.features %}<h4>{{ e.embodiment }}</h4>
{% for p in e.plots %}<figure class="feature" data-feature="{{ p.name }}"><img alt="{{ p.name }}" src="{{ p.uri }}">
<figcaption><b>{{ p.name }}</b> {{ p.about }} · {{ p.dims }} dims · {{ "{:,}".format(p.count) }} steps
{% if p.hidden %}· {{ p.hidden }} more dimensions in <code>--json</code>{% endif %}</figcaption></figure>
{% else %}<p class="muted">no state or action features</p>{% endfor %}
{% if e.others %}<p class="muted">also {{ e.others|length }} other features with statistics in stats.json / <code>--json</code>:
{{ e.others|join(", ") }}</p>{% endif %}
{% else %}<p class="muted">no features with statistics</p>{% endfor %}
</section>

<section class="signals" id="dataset-{{ d }}-signals"><h3>Quality signals</h3>
{% if s.signals.missing %}<p class="note">{{ s.signals.missing }}</p>{% else %}
<p class="muted">{{ s.signals.episodes }} episodes; hover a plot for what it measures</p>
{% for p in s.signals.plots %}<figure class="signal" data-signal="{{ p.name }}" title="{{ p.doc }}"><img alt="{{ p.name }}" src="{{ p.uri }}"></figure>{% endfor %}
{% if s.signals.empty %}<p class="muted">null for every episode here (e.g. blur without a camera, duplicate_distance without duplicates): {{ s.signals.empty|join(", ") }}</p>{% endif %}{% endif %}
</section>

<section class="failures" id="dataset-{{ d }}-failures"><h3>Conversion failures: {{ s.failures_total }}</h3>
{% if s.failures %}<table><tr><th>item, file</th><th>error</th><th>reason</th></tr>
{% for f in s.failures %}<tr class="failure"><td>{{ f.get("item") }}<br><span class="muted">{{ f.get("path") or "" }}</span></td><td>{{ f.get("error", "") }}</td><td>{{ f.get("reason", "") }}</td></tr>{% endfor %}</table>
{% if s.failures_total > s.failures|length %}<p class="muted">{{ s.failures_total - s.failures|length }} more in failures.jsonl</p>{% endif %}
{% else %}<p class="muted">none</p>{% endif %}
</section>
</section>
{% endfor %}
</body></html>
"""
