"""`wamdata stats ... --html`: one self-contained file whose summary agrees with `wamdata info`, with a
decodable frame strip per source x camera, quality-signal histograms once `curate --signals` ran, the
conversion failures, and sections per dataset for a manifest mixing datasets (one without cameras or
actions). Datasets: ALOHA (4 cameras, joint actions) converted on 2 real Ray workers with one broken
file, and a dataset without cameras or actions. The browser test renders the file in headless Chromium."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections import defaultdict
from html.parser import HTMLParser

import numpy as np
import pytest

from pipelines.executors import RayExecutor
from tests.fixtures.aloha import CAMERAS, write_aloha
from tests.fixtures.loader_data import make_dataset
from wamdata.cli import main
from wamdata.convert import ConvertConfig, convert
from wamdata.report import dataset_summary
from wamdata.stats_html import STRIP_FRAMES, THUMB_HEIGHT


class Page(HTMLParser):
    """Every element as (tag, attrs, the section ids it is inside, its text)."""

    def __init__(self, text: str):
        super().__init__()
        self.elements, self._open = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "in": [e["attrs"].get("id") for e in self._open], "text": ""}
        self.elements.append(el)
        if tag not in ("img", "meta", "br"):
            self._open.append(el)

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for el in self._open:
            el["text"] += data

    def find(self, tag=None, cls=None, inside=None, **attrs):
        return [e for e in self.elements if (tag is None or e["tag"] == tag)
                and (cls is None or cls in e["attrs"].get("class", "").split())
                and (inside is None or inside in e["in"])
                and all(e["attrs"].get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def section(self, sid):
        (s,) = [e for e in self.elements if e["attrs"].get("id") == sid]
        return s


def _image(uri: str, kind: str) -> np.ndarray:
    import cv2

    prefix = f"data:image/{kind};base64,"
    assert uri.startswith(prefix), uri[:40]
    img = cv2.imdecode(np.frombuffer(base64.b64decode(uri[len(prefix):]), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "undecodable image"
    return img


def _not_blank(img: np.ndarray) -> None:
    assert img.std() > 5 and (img < 250).any(axis=-1).mean() > 0.05


@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("stats_html")
    src = tmp / "aloha_raw"
    write_aloha(str(src), episodes=3, T=12)
    (src / "episode_3.hdf5").write_bytes(b"not an HDF5 file")   # fails its item; the report lists it
    aloha = tmp / "aloha"
    with RayExecutor(workers=2) as ex:
        report = convert(ConvertConfig(source="aloha", input=str(src), output=str(aloha), workers=2, quiet=True,
                                       max_failures=1), ex)
    assert report.converted == 3 and report.failed == 1
    bare = make_dataset(tmp / "bare", n=3, steps=[10, 14, 18], cameras=(), actions=False, source="bare", prefix="b")
    manifest = tmp / "mix.yaml"
    manifest.write_text("datasets:\n  - {path: aloha, name: aloha}\n  - {path: bare, name: bare, weight: 0.5}\n")
    return {"aloha": str(aloha), "bare": bare, "manifest": str(manifest), "tmp": tmp}


def _render(target: str, out) -> tuple[str, Page]:
    assert main(["stats", target, "--html", str(out), "--quiet"]) == 0
    text = out.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text          # nothing fetched from the network
    page = Page(text)
    assert not page.find("script") and not page.find("link")
    assert all(e["attrs"]["src"].startswith("data:image/") for e in page.find("img"))
    return text, page


def _check_summary(page: Page, label: str, path: str) -> None:
    info = dataset_summary(path)
    (row,) = page.find("tr", cls="dataset", data_dataset=label)
    cells = {e["attrs"]["data-key"]: e for e in _children(page, row) if "data-key" in e["attrs"]}
    for key in ("episodes", "steps", "bytes", "shards", "failures"):
        assert int(cells[key]["attrs"]["data-value"]) == info[key], key
    assert float(cells["hours"]["attrs"]["data-value"]) == pytest.approx(info["hours"], rel=1e-9)
    assert cells["episodes"]["text"].strip() == f"{info['episodes']:,}"
    sources = {e["attrs"]["data-source"]: e for e in page.find("tr", cls="source", data_dataset=label)}
    assert set(sources) == set(info["sources"])
    for name, v in info["sources"].items():
        got = {c["attrs"]["data-key"]: c["attrs"]["data-value"] for c in _children(page, sources[name])
               if "data-key" in c["attrs"]}
        assert int(got["episodes"]) == v["episodes"] and float(got["hours"]) == pytest.approx(v["hours"], rel=1e-9)


def _children(page: Page, el: dict) -> list[dict]:
    i = page.elements.index(el)
    out = []
    for e in page.elements[i + 1:]:
        if len(e["in"]) <= len(el["in"]):   # left the element
            break
        out.append(e)
    return out


def _feature_names(path: str) -> dict[str, set[str]]:
    stats = json.loads(open(f"{path}/stats.json").read())
    return {e: {n for n in feats if n.startswith(("state.", "action."))} for e, feats in stats["by_embodiment"].items()}


def test_html_report_of_a_dataset(data, tmp_path):
    text, page = _render(data["aloha"], tmp_path / "aloha.html")
    for sid in ("summary", "dataset-1", "dataset-1-lengths", "dataset-1-frames", "dataset-1-distributions",
                "dataset-1-signals", "dataset-1-failures"):
        page.section(sid)
    assert [e["text"].strip() for e in page.find("h2")] == ["Summary", "aloha"]
    _check_summary(page, "aloha", data["aloha"])

    # one decodable, non-blank strip per source x camera, STRIP_FRAMES thumbnails of the camera's aspect
    strips = page.find("figure", cls="strip", inside="dataset-1-frames")
    assert sorted(s["attrs"]["data-camera"] for s in strips) == sorted(dataset_summary(data["aloha"])["cameras"])
    assert len(strips) == len(CAMERAS) and {s["attrs"]["data-source"] for s in strips} == {"aloha"}
    for s in strips:
        (img,) = [e for e in _children(page, s) if e["tag"] == "img"]
        strip = _image(img["attrs"]["src"], "jpeg")
        assert strip.shape[0] == THUMB_HEIGHT
        assert strip.shape[1] == STRIP_FRAMES * round(64 * THUMB_HEIGHT / 48) + 2 * (STRIP_FRAMES - 1)
        _not_blank(strip)
        assert s["text"].count(" @ ") == STRIP_FRAMES   # which episode and step each thumbnail is

    # a distribution plot per state/action feature, and the episode lengths of the one source
    plotted = {e["attrs"]["data-feature"] for e in page.find("figure", cls="feature", inside="dataset-1-distributions")}
    assert plotted == set().union(*_feature_names(data["aloha"]).values()) and "action.joint_pos" in plotted
    for e in page.find("img", inside="dataset-1-distributions") + page.find("img", inside="summary"):
        _not_blank(_image(e["attrs"]["src"], "png"))
    assert len(page.find("figure", inside="dataset-1-lengths", data_source="aloha")) == 1

    # failures: the broken file, its error and reason
    assert "Conversion failures: 1" in page.section("dataset-1-failures")["text"]
    (row,) = page.find("tr", cls="failure")
    assert "episode_3" in row["text"] and row["text"].count("episode_3.hdf5") >= 1

    # signals: absent, then histograms once `wamdata curate --signals` ran
    assert "no signals computed; run `wamdata curate" in page.section("dataset-1-signals")["text"]
    assert not page.find("figure", cls="signal")
    assert main(["curate", data["aloha"], "--signals", "--workers", "0", "--quiet"]) == 0
    _, page = _render(data["aloha"], tmp_path / "aloha_signals.html")
    signals = page.find("figure", cls="signal", inside="dataset-1-signals")
    names = {e["attrs"]["data-signal"] for e in signals}
    assert {"blur", "luma", "action_jumps", "ts_jitter", "idle_fraction", "lang_empty"} <= names
    for s in signals:
        (img,) = [e for e in _children(page, s) if e["tag"] == "img"]
        _not_blank(_image(img["attrs"]["src"], "png"))
        assert s["attrs"]["title"]   # what it measures
    assert "no signals computed" not in page.section("dataset-1-signals")["text"]
    assert len(text) < 1_000_000   # thumbnails and plots stay small


def test_html_report_of_a_manifest_mixing_datasets(data, tmp_path):
    _, page = _render(data["manifest"], tmp_path / "mix.html")
    assert [e["text"].strip() for e in page.find("h2")] == ["Summary", "aloha", "bare"]
    _check_summary(page, "aloha", data["aloha"])
    _check_summary(page, "bare", data["bare"])
    (total,) = page.find("tr", cls="total")
    both = [dataset_summary(data[k]) for k in ("aloha", "bare")]
    assert f"{sum(s['episodes'] for s in both):,}" in total["text"]

    by_section = defaultdict(list)
    for s in page.find("figure", cls="strip"):
        by_section[[i for i in s["in"] if i and i.endswith("-frames")][0]].append(s["attrs"]["data-camera"])
    assert sorted(by_section["dataset-1-frames"]) == sorted(dataset_summary(data["aloha"])["cameras"])
    assert "dataset-2-frames" not in by_section and "no cameras" in page.section("dataset-2-frames")["text"]

    # the dataset without actions has state plots only
    plotted = {e["attrs"]["data-feature"] for e in page.find("figure", cls="feature", inside="dataset-2-distributions")}
    assert plotted == {"state.eef_pos"}
    assert len(page.find("figure", inside="dataset-2-lengths", data_source="bare")) == 1
    assert "Conversion failures: 0" in page.section("dataset-2-failures")["text"]
    assert "no signals computed" in page.section("dataset-2-signals")["text"]


def test_html_report_of_a_view_counts_kept_steps(data, tmp_path):
    eid = "b0001"   # 14 steps, of which 6 kept; b0002 (18 steps) whole
    view = tmp_path / "view.yaml"
    view.write_text(f"datasets:\n  - path: {data['bare']}\n    episodes: [{eid}, b0002]\n"
                    f"    keep_steps: {{{eid}: [[0, 4], [10, 12]]}}\n")
    _, page = _render(str(view), tmp_path / "view.html")
    (row,) = page.find("tr", cls="dataset")
    cells = {c["attrs"]["data-key"]: c["attrs"]["data-value"] for c in _children(page, row) if "data-key" in c["attrs"]}
    assert int(cells["episodes"]) == 2 and int(cells["steps"]) == 6 + 18


@pytest.mark.browser
def test_html_report_renders_in_headless_chromium(data, tmp_path):
    import cv2

    chromium = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
                    None)
    if chromium is None:
        pytest.skip("no chromium binary (make test-browser installs Debian's chromium)")
    _render(data["manifest"], tmp_path / "mix.html")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2400", f"file://{tmp_path / 'mix.html'}"],
                   check=True, timeout=120, capture_output=True)
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (2400, 1200)
    non_white = (img < 240).any(axis=-1).mean()
    assert img.std() > 20 and 0.03 < non_white < 0.9, (img.std(), non_white)
