"""``--source rlds``: RLDS / Open X-Embodiment TFDS folders, read without TensorFlow.

Input: a TFDS version folder (``dataset_info.json``, ``features.json``, ``*.tfrecord-NNNNN-of-NNNNN``)
or a folder holding several (``<name>/<version>/``). One ``tf.train.Example`` per episode, keys
flattened as ``steps/observation/image_0``; ``features.json`` gives each key's dtype and shape.

Items are (shard, record): ``discover`` reads only the 12-byte record headers and stores each
record's byte offset in ``SourceItem.info``, so ``read`` seeks straight to it and one big shard is
split across workers. Both CRCs (length and data, masked CRC32C) are verified; a bad CRC or a
truncated shard fails that record's item only (a bad *length* CRC also fails the records after it,
which can no longer be located).

Field table (generic mapping; a preset, ``--option preset=bridge|droid``, maps further, see
``converters/presets/*.yaml`` for each preset's own table of slices, units and conventions):

| source field                              | canonical                        | notes |
|-------------------------------------------|----------------------------------|-------|
| steps/observation/<image> (JPEG/PNG, RGB) | camera ``<image>`` (preset: role) | decoded lazily with OpenCV; all-constant placeholder cameras kept, flagged ``metadata.placeholder`` |
| steps/<tensor> not mapped by the preset   | ``extra.<path with / -> .>``     | dtype/shape from features.json, exact (Tensor bytes/zlib encodings parsed from raw bytes) |
| steps/is_first, is_last, is_terminal      | ``meta.is_first`` ...            | bool per step |
| steps/reward, steps/discount              | ``meta.reward``, ``meta.discount`` | float per step |
| steps/<text> (language_instruction, ...)  | ``tasks`` + ``language`` segments | unique non-empty texts; a segment per run of equal text |
| episode_metadata/*                        | ``metadata.episode_metadata``    | file_path, recording_folderpath, ... as JSON values |
| (none)                                    | ``timestamp``                    | i / fps; fps from the preset, ``--option fps`` or 10 Hz (recorded in ``metadata.fps_source``) |

Preset features whose conversion is not a plain slice copy (Euler -> quaternion, gripper polarity, a unit ``scale``)
are marked ``derived`` and their whole raw source field is kept under ``extra.`` as well: nothing lost.
Non-RGB images (depth, 1-channel) are not converted; they are listed in ``metadata.unconverted``.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from converters import tfrecord_io as tfr
from converters.rlds_mapping import FieldSpec, apply_conversion, decode_field, flatten_features, load_preset
from wamdata.errors import ConfigError, SourceError
from wamdata.media import LazyFrames, decode_image, encoded_image_frames
from wamdata.schema import Camera, Episode, LanguageSegment
from wamdata.sources import Converter, SourceItem, json_value, register, source_fs, url_of

RLDS_FLAGS = ("is_first", "is_last", "is_terminal", "reward", "discount")
DEFAULT_FPS = 10.0
_SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<split>[^-.]+)\.tfrecord(?:-(?P<shard>\d+)-of-\d+)?$")


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", s)


def _decode_at(images: list[bytes], i: int) -> np.ndarray:
    return decode_image(images[i])


@register("rlds")
class RLDS(Converter):
    family = "teleop"

    @dataclass
    class Options:
        preset: str | None = None  # bridge | droid | none (generic)
        split: str | None = None  # only shards of this split (train, val, ...)
        fps: float | None = None  # overrides the preset's fps
        embodiment: str | None = None  # overrides the preset's embodiment

        def __post_init__(self):
            if self.fps is not None and not self.fps > 0:
                raise ConfigError(f"rlds: option fps must be > 0, got {self.fps}")

    def __init__(self, **options):
        super().__init__(**options)
        self.preset = load_preset(self.options.preset) if self.options.preset else None
        self._specs: dict[str, dict[str, FieldSpec]] = {}

    # --- discover ---------------------------------------------------------------------------------

    def _dataset_dirs(self, root: str) -> list[str]:
        fs, path = source_fs(root)
        if fs.exists(posixpath.join(path, "features.json")):
            return [path]
        found = fs.glob(posixpath.join(path, "*/features.json")) + fs.glob(posixpath.join(path, "*/*/features.json"))
        if not found:
            raise SourceError(root, "rlds: no TFDS dataset here (no features.json in it or its subfolders)")
        return sorted(posixpath.dirname(p) for p in found)

    def discover(self, root: str) -> Iterator[SourceItem]:
        fs, _ = source_fs(root)
        for vdir in self._dataset_dirs(root):
            info = json.loads(fs.cat_file(posixpath.join(vdir, "dataset_info.json")))
            name, version = info.get("name", posixpath.basename(posixpath.dirname(vdir))), info.get("version", "")
            lengths = {s["name"]: [int(n) for n in s.get("shardLengths", [])] for s in info.get("splits", [])}
            shards = sorted(p for p in fs.ls(vdir, detail=False) if ".tfrecord" in posixpath.basename(p))
            splits = {m["split"] if m else "" for m in map(_SHARD_RE.match, map(posixpath.basename, shards))}
            if self.options.split and self.options.split not in splits:
                raise ConfigError(f"{vdir}: no shards of split {self.options.split!r}; "
                                  f"its splits: {', '.join(sorted(splits))}")
            for shard in shards:
                m = _SHARD_RE.match(posixpath.basename(shard))
                split = m["split"] if m else ""
                if self.options.split and split != self.options.split:
                    continue
                size = fs.size(shard)
                with fs.open(shard, "rb") as f:
                    spans = tfr.scan_records(f, size)
                expected = None
                if m and m["shard"] is not None and split in lengths and int(m["shard"]) < len(lengths[split]):
                    expected = lengths[split][int(m["shard"])]
                if expected is not None and len(spans) < expected:  # records that cannot be located fail too
                    why = spans[-1].error if spans and spans[-1].error else \
                        f"shard ends after {len(spans)} whole records, dataset_info.json says {expected}"
                    spans += [tfr.RecordSpan(i, size, 0, f"record {i} not found ({why})")
                              for i in range(len(spans), expected)]
                base = posixpath.basename(shard)
                for s in spans:
                    yield SourceItem(
                        id=_safe(f"{name}_{version}_{base}") + f"_{s.index:06d}",
                        path=url_of(fs, shard), index=s.index,
                        info={"offset": s.offset, "length": s.length, "error": s.error, "dataset_dir": url_of(fs, vdir),
                              "dataset": name, "version": version, "split": split},
                    )

    # --- read -------------------------------------------------------------------------------------

    def _spec(self, vdir: str) -> dict[str, FieldSpec]:
        if vdir not in self._specs:
            fs, _ = source_fs(vdir)
            self._specs[vdir] = flatten_features(json.loads(fs.cat_file(posixpath.join(vdir, "features.json"))))
        return self._specs[vdir]

    def _record(self, item: SourceItem) -> bytes:
        if item.info.get("error"):
            raise SourceError(item, f"rlds: {item.info['error']}")
        fs, _ = source_fs(item.path)
        try:
            with fs.open(item.path, "rb") as f:
                offset, size = item.info.get("offset"), fs.size(item.path)
                if offset is None:  # an item rebuilt from its id alone: locate the record again
                    spans = tfr.scan_records(f, size)
                    if item.index >= len(spans) or spans[item.index].error:
                        raise tfr.RecordError(f"record {item.index} not found "
                                              f"({spans[-1].error if spans else 'empty shard'})")
                    offset = spans[item.index].offset
                return tfr.read_record(f, offset, item.index, size)
        except tfr.RecordError as e:
            raise SourceError(item, f"rlds: {e}") from None

    def read(self, item: SourceItem) -> Episode:
        vdir = item.info.get("dataset_dir") or posixpath.dirname(item.path)
        specs = self._spec(vdir)
        try:
            example = tfr.parse_example(self._record(item))
        except (ValueError, IndexError) as e:
            raise SourceError(item, f"rlds: record {item.index}: malformed tf.train.Example ({e})") from None
        fields, unconverted = {}, {}
        for key, (kind, values) in sorted(example.items()):
            fs = specs.get(key)
            if fs is None or fs.kind == "unknown":
                unconverted[key] = "not described by features.json"
                continue
            try:
                fields[key] = (fs, decode_field(fs, kind, values))
            except ValueError as e:
                raise SourceError(item, f"rlds: record {item.index}: {e}") from None
        lengths = {len(v) for fs, v in fields.values() if fs.per_step}
        if len(lengths) != 1:
            raise SourceError(item, f"rlds: record {item.index}: step fields disagree on the step count {sorted(lengths)}")
        return self._episode(item, fields, lengths.pop(), unconverted)

    def _episode(self, item: SourceItem, fields: dict, T: int, unconverted: dict) -> Episode:
        preset = self.preset or {}
        fps = float(self.options.fps or preset.get("fps") or DEFAULT_FPS)
        ep = Episode(
            episode_id=item.id, source="rlds", family=self.family, fps=fps,
            embodiment=self.options.embodiment or preset.get("embodiment") or item.info.get("dataset", "unknown"),
            steps={"timestamp": np.arange(T, dtype=np.float64) / fps},
            action_space=preset.get("action_space", "none"),
        )
        used = self._map_features(ep, fields, preset)
        self._cameras(ep, fields, preset, unconverted)
        for key, (fs, v) in fields.items():
            if not fs.per_step or fs.kind != "tensor" or key in used:
                continue
            short = key[len("steps/"):] if key.startswith("steps/") else key
            col = f"meta.{short}" if short in RLDS_FLAGS else "extra." + short.replace("/", ".")
            ep.add(col, v, description=fs.description, names=None)
        self._language(ep, fields, preset, T)
        episode_meta = {k.split("/", 1)[-1] if k.startswith("episode_metadata/") else k: json_value(v)
                        for k, (fs, v) in fields.items() if not fs.per_step}
        ep.success = self._success(episode_meta, preset)
        fps_source = "option" if self.options.fps else ("preset" if preset.get("fps") else "default")
        ep.metadata.update({
            "episode_metadata": episode_meta, "preset": self.options.preset, "fps_source": fps_source,
            "provenance": {"dataset": item.info.get("dataset"), "version": item.info.get("version"),
                           "split": item.info.get("split"), "shard": posixpath.basename(item.path),
                           "record": item.index, "offset": item.info.get("offset")},
            "unconverted": unconverted,
        })
        return ep

    def _map_features(self, ep: Episode, fields: dict, preset: dict) -> set[str]:
        """Add the preset's canonical features; return the source keys fully copied by identity."""
        covered: dict[str, set[int]] = {}
        for name, cfg in (preset.get("features") or {}).items():
            if cfg["source"] not in fields:
                ep.metadata.setdefault("missing_preset_fields", []).append(cfg["source"])
                continue
            fs, v = fields[cfg["source"]]
            a, b = cfg.get("slice", [0, v.shape[-1] if v.ndim > 1 else 1])
            vals = v.reshape(len(v), -1)[:, a:b]
            conv = cfg.get("convert", "identity")
            scale = float(cfg.get("scale", 1.0))  # unit change, e.g. a normalised command to rad/s
            out = apply_conversion(conv, vals)
            if not np.issubdtype(out.dtype, np.floating):
                out = out.astype(np.float32)
            if scale != 1.0:
                out = out * out.dtype.type(scale)
            exact = conv == "identity" and scale == 1.0
            ep.add(name, out, derived=not exact, description=cfg.get("description", fs.description),
                   names=cfg.get("names"))
            if exact:
                covered.setdefault(cfg["source"], set()).update(range(a, b))
        return {k for k, cols in covered.items()
                if cols >= set(range(int(np.prod(fields[k][0].shape)) if fields[k][0].shape else 1))}

    def _cameras(self, ep: Episode, fields: dict, preset: dict, unconverted: dict) -> None:
        roles = {src: role for role, src in (preset.get("cameras") or {}).items()}
        for key, (fs, images) in fields.items():
            if fs.kind != "image" or not fs.per_step:
                continue
            if (fs.shape and fs.shape[-1] != 3) or fs.dtype != "uint8":
                unconverted[key] = f"non-RGB image ({fs.dtype}, shape {fs.shape}) is not converted"
                continue
            role = roles.get(key, key.rsplit("/", 1)[-1])
            if len(fs.shape) == 3 and min(fs.shape) > 0:  # size declared: no eager decode needed
                frames = LazyFrames(len(images), fs.shape[0], fs.shape[1], functools.partial(_decode_at, images))
            else:
                frames = encoded_image_frames(images)
            placeholder = False
            if len(set(images)) == 1:  # one image repeated: a placeholder camera if it is also constant
                first = decode_image(images[0])
                placeholder = int(first.min()) == int(first.max())
            ep.cameras[role] = Camera(role, frames, fps=ep.fps, metadata={
                "source_key": key, "encoding": fs.encoding, "placeholder": placeholder})

    def _language(self, ep: Episode, fields: dict, preset: dict, T: int) -> None:
        order = list(preset.get("language") or [])
        keys = order + sorted(k for k, (fs, _) in fields.items() if fs.kind == "text" and fs.per_step and k not in order)
        ts = ep.steps["timestamp"]
        for key in keys:
            if key not in fields:
                continue
            texts = fields[key][1]
            start = 0
            for i in range(1, T + 1):
                if i == T or texts[i] != texts[start]:
                    text = texts[start].strip()
                    if text:
                        ep.language.append(LanguageSegment(float(ts[start]), float(ts[i - 1] + 1.0 / ep.fps), text))
                        if text not in ep.tasks:
                            ep.tasks.append(text)
                    start = i

    @staticmethod
    def _success(meta: dict, preset: dict) -> bool | None:
        rule = preset.get("success")
        if not rule:
            return None
        value = str(meta.get(rule["field"].split("/", 1)[-1], ""))
        if re.search(rule["true_pattern"], value):
            return True
        if re.search(rule["false_pattern"], value):
            return False
        return None
