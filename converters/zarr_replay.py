"""``--source zarr_replay``: diffusion-policy / UMI ReplayBuffer stores (zarr v2 folder or ``*.zarr.zip``).

Layout (real-stanford/diffusion_policy ``common/replay_buffer.py``): ``data/<key>`` arrays sharing
the step axis, ``meta/episode_ends`` int64 cumulative exclusive ends (episode i is
``ends[i-1]:ends[i]``). One item per episode, id ``zarr_replay/<store>:<episode, 6 digits>``;
discovery opens each store and reads only ``meta/episode_ends``. A zip is read in place (no copy, no
extraction); each episode's arrays are sliced ``start:end`` (zarr decodes only the chunks that
overlap it) and images are read lazily chunk by chunk, so memory is bounded by one episode.
Mapping comes from ``--option preset=`` (tables below) and ``map=key:target,...``; any other key is
kept as ``extra.<key>`` and listed in ``metadata.unmapped_keys``.

``preset=pusht`` (Push-T, ``pusht_cchi_v7_replay.zarr``; family ``sim``: humans pushed the block with
the mouse in a pymunk simulation, the frames are rendered, like robosuite's human demos), 10 Hz:

| source field           | feature                | units / conventions |
|------------------------|------------------------|---------------------|
| data/img (N,96,96,3) float32 0-255 | camera ``agentview`` | rounded to uint8 (the real store is integral: exact), top-down render, RGB, upright |
| data/state (N,5)       | extra.state            | agent_x, agent_y, block_x, block_y (px of the 512x512 workspace, y down), block_angle (rad) |
| data/action (N,2)      | extra.action           | commanded agent target, px, absolute; pixels are not metres, so not ``action.eef_pos``; action_space ``agent_target_px`` |
| data/keypoint (N,9,2)  | extra.keypoint         | T-block keypoints, px |
| data/n_contacts (N,1)  | extra.n_contacts       | count |

``preset=umi`` (UMI's ``dataset.zarr.zip`` from ``scripts_slam_pipeline/07_generate_replay_buffer.py``;
family ``human_demo``), 59.94 Hz (GoPro). Poses are in UMI's SLAM/table-tag frame, declared ``world``.
Robot i numbers grippers from right (0) to left (1); the canonical end-effector features are one arm,
so robot0 (the only one in single-arm data) is canonical and other robots stay under ``extra.``
with the same conversions — a harmonised vector never pairs robot1's gripper with robot0's pose:

| source field                          | feature                     | units / conventions |
|---------------------------------------|-----------------------------|---------------------|
| robot0_eef_pos (N,3)                  | state.eef_pos               | m, world |
| robot0_eef_rot_axis_angle (N,3)       | state.eef_rot + extra.robot0_eef_rot_axis_angle | quaternion xyzw (w >= 0, derived) + raw rad |
| robot0_gripper_width (N,1)            | state.gripper + extra.robot0_gripper_width | closure 1 - w / ``gripper_max_width`` (0.09 m, UMI's ``max_gripper_width``), clipped; raw m |
| robot{i>0}_eef_pos / _eef_rot_axis_angle / _gripper_width | extra.robot{i}_eef_pos / _eef_rot / _gripper + raw | as robot0 |
| robot{i}_demo_start_pose / _demo_end_pose (N,6) | extra.robot{i}_demo_*_pose | xyz m + axis-angle rad, constant per episode |
| camera{j}_rgb (N,224,224,3) uint8, JPEG-XL (``imagecodecs_jpegxl``) | camera ``wrist`` (one gripper) / ``wrist_right``, ``wrist_left`` (two) / ``exterior_k`` (non-gripper) | RGB, upright; intrinsics not in the store (UMI's fisheye calibration) |
| (none)                                | no action features, action_space ``none`` | unless ``derive_action=next_state`` |

``derive_action=next_state``: ``action.eef_pos/eef_rot/gripper`` (and ``extra.robot{i}_action_*``) at
step t are the state at t + 1, declared absolute and ``derived``; the last step repeats its own state
(hold), as diffusion policy pads past an episode's end; action_space ``eef_abs``.
Without a preset every key is ``extra.<key>`` unless ``map=`` names it, and ``fps=`` is required.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from converters.zarr_presets import PRESETS, Target, convert, make_plan, parse_map
from converters.umi_plan import read_plan
from converters.zarr_store import ReplayStore, ZarrFrames, is_store
from wamdata.errors import ConfigError, SourceError
from wamdata.schema import FAMILIES, Camera, Episode
from wamdata.sources import Converter, SourceItem, check_read_size, register

NEXT_STATE = {"state.eef_pos": "action.eef_pos", "state.eef_rot": "action.eef_rot", "state.gripper": "action.gripper"}


def _find_stores(root: str) -> list[str]:
    if is_store(root):
        return [root]
    found = []
    for d, dirs, files in os.walk(root):
        for name in sorted(dirs):
            if is_store(os.path.join(d, name)):
                found.append(os.path.join(d, name))
        dirs[:] = sorted(n for n in dirs if not is_store(os.path.join(d, n)))
        found += [os.path.join(d, n) for n in files if n.endswith(".zarr.zip")]
    return sorted(found)


@register("zarr_replay")
class ZarrReplay(Converter):
    family = "human_demo"

    @dataclass
    class Options:
        preset: str | None = None          # pusht | umi
        map: str | None = None             # key:target,... (camera.<role> | skip | extra.<name> | canonical)
        fps: float | None = None           # default: the preset's (required without one)
        embodiment: str | None = None
        family: str | None = None          # default: the preset's (pusht sim, umi human_demo)
        task: str | None = None
        derive_action: str | None = None   # next_state
        gripper_max_width: float = 0.09    # m, UMI's max_gripper_width
        trust_pickle: bool = False         # unpickle dataset_plan.pkl and pickle-coded arrays (runs code)

        def __post_init__(self):
            if self.preset is not None and self.preset not in PRESETS:
                raise ConfigError(f"zarr_replay: unknown preset {self.preset!r}; known: {', '.join(PRESETS)}")
            if self.fps is None and self.preset is None:
                raise ConfigError("zarr_replay: a store without a preset needs fps= (ReplayBuffers record no rate)")
            if self.fps is not None and not self.fps > 0:
                raise ConfigError(f"zarr_replay: option fps must be > 0, got {self.fps}")
            if self.family is not None and self.family not in FAMILIES:
                raise ConfigError(f"zarr_replay: family {self.family!r}; known: {', '.join(FAMILIES)}")
            if self.derive_action not in (None, "next_state"):
                raise ConfigError(f"zarr_replay: derive_action={self.derive_action!r}; known: next_state")
            if not self.gripper_max_width > 0:
                raise ConfigError(f"zarr_replay: gripper_max_width must be > 0 m, got {self.gripper_max_width}")
            parse_map(self.map)

    def discover(self, root: str) -> Iterator[SourceItem]:
        base = root if os.path.isdir(root) and not is_store(root) else os.path.dirname(root)
        for path in _find_stores(root):
            rel = os.path.relpath(path, base)
            try:
                with ReplayStore(path, self.options.trust_pickle) as store:
                    ends = store.episode_ends()
            except SourceError as e:   # the store is one failed item, named by its file and key
                yield SourceItem(id=f"zarr_replay/{rel}", path=path, info={"relpath": rel, "error": e.reason})
                continue
            note, plan = read_plan(path, len(ends), self.options.trust_pickle)
            starts = np.concatenate([[0], ends[:-1]])
            for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist())):
                info = {"relpath": rel, "start": int(s), "end": int(e)}
                if note:
                    info["umi_plan"] = {**note, **(plan[i] if plan else {})}
                yield SourceItem(id=f"zarr_replay/{rel}:{i:06d}", path=path, index=i, info=info)

    def read(self, item: SourceItem) -> Episode:
        if "error" in item.info:
            raise SourceError(item, item.info["error"])
        store = None
        try:
            store = ReplayStore(item.path, self.options.trust_pickle)
            ep = self._read(item, store)
        except SourceError as e:
            if store is not None:
                store.close()
            raise SourceError(item, e.reason) from None
        if not ep.cameras:   # else the frames read from the open store and own it
            store.close()
        return ep

    def _read(self, item: SourceItem, store: ReplayStore) -> Episode:
        keys = store.data_keys()
        plan = make_plan(keys, self.options)
        missing = [k for k in plan.required if k not in keys]
        if missing:
            raise SourceError(item, f"zarr_replay: data/{missing[0]} missing (needed by preset {self.options.preset}"
                                    f" / map; the store has {', '.join(keys) or 'no arrays'})")
        i, start, end = item.index, item.info["start"], item.info["end"]
        if end <= start:
            raise SourceError(item, f"zarr_replay: meta/episode_ends not increasing at episode {i} "
                                    f"({start} -> {end})")
        T = end - start
        ep = Episode(episode_id=item.id, source="zarr_replay", family=plan.family, embodiment=plan.embodiment,
                     fps=float(plan.fps), steps={"timestamp": np.arange(T, dtype=np.float64) / plan.fps},
                     tasks=[plan.task] if plan.task else [])
        by_key: dict[str, list[Target]] = {}
        for t in plan.targets:
            by_key.setdefault(t.key, []).append(t)
        unmapped, skipped = [], []
        for key in keys:
            targets = by_key.get(key)
            if targets is None:
                unmapped.append(key)
                targets = [Target(key, "feature", f"extra.{key}")]
            if all(t.kind == "skip" for t in targets):
                skipped.append(key)
                continue
            arr = store.array(f"data/{key}")
            if arr.shape[0] < end:
                raise SourceError(item, f"zarr_replay: data/{key} has {arr.shape[0]} steps; meta/episode_ends[{i}]"
                                        f" = {end} is past its end")
            # the episode's slice as the .zarray header sizes it (frames are read one chunk at a time,
            # but a forged frame shape must fail here, not in the writer)
            check_read_size(item, f"zarr_replay: data/{key}[{start}:{end}]", (T,) + tuple(arr.shape[1:]), arr.dtype)
            values = None
            for t in targets:
                if t.kind == "camera":
                    self._camera(ep, item, store, arr, key, t.name, start, end)
                elif t.kind == "feature":
                    values = arr[start:end] if values is None else values
                    ep.add(t.name, convert(t.convert, values, self.options), **t.declared)
        if any(n.startswith("action.") for n in ep.steps):
            ep.action_space = "mapped"
        elif plan.action_space != "none":   # recorded, but not canonical (Push-T's pixels)
            ep.action_space = plan.action_space
        if self.options.derive_action == "next_state":
            self._derive_next_state(ep, item, plan)
        ep.metadata.update({"provenance": {"store": item.info["relpath"], "episode": i, "start": start, "end": end},
                            "preset": self.options.preset, "unmapped_keys": unmapped, "skipped_keys": skipped})
        if "umi_plan" in item.info:
            ep.metadata["umi_plan"] = item.info["umi_plan"]
        return ep

    @staticmethod
    def _camera(ep: Episode, item: SourceItem, store, arr, key: str, role: str, start: int, end: int) -> None:
        if arr.ndim != 4 or arr.shape[-1] != 3:
            raise SourceError(item, f"zarr_replay: data/{key} has shape {arr.shape}, not (N, H, W, 3) RGB")
        if role in ep.cameras:
            raise SourceError(item, f"zarr_replay: data/{key}: camera role {role!r} given twice")
        codec = arr.metadata.compressor.codec_id if arr.metadata.compressor is not None else None
        meta = {"source_key": key, "source_dtype": str(arr.dtype), "source_codec": codec}
        if arr.dtype != np.uint8:
            meta["to_uint8"] = "values on the 0-255 scale, rounded to the nearest integer and clipped"
        frames = ZarrFrames(item.path, f"data/{key}", start, end, int(arr.shape[1]), int(arr.shape[2]),
                            int(arr.chunks[0]), store, trust_pickle=store.trust_pickle)
        ep.cameras[role] = Camera(role, frames, fps=ep.fps, metadata=meta)

    @staticmethod
    def _derive_next_state(ep: Episode, item: SourceItem, plan) -> None:
        pairs = {t.name: t.next_action for t in plan.targets if t.next_action and t.name in ep.steps}
        pairs.update({s: a for s, a in NEXT_STATE.items() if s in ep.steps})
        if not pairs:
            raise SourceError(item, "zarr_replay: derive_action=next_state but no state.eef_pos / eef_rot / "
                                    "gripper is mapped: nothing to derive actions from")
        for state, action in sorted(pairs.items()):
            if action in ep.steps:
                raise SourceError(item, f"zarr_replay: derive_action=next_state: {action} is recorded already")
            v = ep.steps[state]
            f = ep.features[state]
            ep.add(action, np.concatenate([v[1:], v[-1:]]), unit=f.unit, frame=f.frame, encoding="absolute",
                   names=f.names, derived=True,
                   description=f"{state} of the next step (derive_action=next_state); the last step holds its own")
        ep.action_space = "eef_abs" if ep.action_space == "none" else ep.action_space
