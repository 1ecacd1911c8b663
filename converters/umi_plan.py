"""UMI's ``dataset_plan.pkl``: the session plan a replay buffer was built from, read only when trusted.

UMI's SLAM pipeline (``scripts_slam_pipeline/06_generate_dataset_plan.py``) pickles one entry per
demo: the camera videos it cut (``cameras[j].video_path``, ``video_start_end`` frame range), the
grippers' trajectories and ``episode_timestamps``; ``07_generate_replay_buffer.py`` builds
``dataset.zarr.zip`` from it, one episode per entry, usually written beside it in the session folder.

Unpickling runs whatever code the file names, so a plan is never unpickled unless the user passes
``--trust-pickle`` (``--option trust_pickle=true``). Untrusted, its presence is recorded in every
episode's metadata (``umi_plan.read = false`` and why) and logged once per store. Trusted, each
episode gets its provenance: source videos with their frame ranges and its first/last timestamp.
The plan is provenance only (the store holds the data), so an unreadable plan is reported, not fatal.
"""

from __future__ import annotations

import logging
import os
import pickle

import numpy as np

from wamdata.sources import json_value

log = logging.getLogger(__name__)

PLAN_FILE = "dataset_plan.pkl"
UNTRUSTED = ("not unpickled: unpickling runs code named by the file; pass --trust-pickle "
             "(--option trust_pickle=true) if you trust where it came from")


def _episode(entry) -> dict:
    cams = [{"video_path": str(c.get("video_path")), "video_start_end": json_value(c.get("video_start_end"))}
            for c in entry.get("cameras") or []]
    ts = np.asarray(entry.get("episode_timestamps", []), np.float64).ravel()
    out = {"cameras": cams}
    if ts.size:
        out["timestamps"] = [float(ts[0]), float(ts[-1])]
    return out


def read_plan(store_path: str, episodes: int, trust: bool) -> tuple[dict | None, list[dict] | None]:
    """``(note, per_episode)`` for the plan beside ``store_path``: ``(None, None)`` when there is none;
    ``per_episode`` only when trusted, readable and listing as many demos as the store has episodes."""
    path = os.path.join(os.path.dirname(os.path.abspath(store_path)), PLAN_FILE)
    if not os.path.isfile(path):
        return None, None
    note = {"file": PLAN_FILE, "read": False}
    if not trust:
        log.warning("zarr_replay: %s %s", path, UNTRUSTED)
        return {**note, "reason": UNTRUSTED}, None
    try:
        with open(path, "rb") as f:
            plan = pickle.load(f)  # noqa: S301 - the user vouched for this file with --trust-pickle
        entries = [_episode(e) for e in plan]
    except Exception as e:  # noqa: BLE001 - anything a pickle may raise; the plan is optional provenance
        log.warning("zarr_replay: %s: unreadable plan (%s: %s)", path, type(e).__name__, e)
        return {**note, "reason": f"unreadable ({type(e).__name__}: {e})"}, None
    if len(entries) != episodes:
        reason = f"lists {len(entries)} demos, the store has {episodes} episodes: not matched to episodes"
        log.warning("zarr_replay: %s %s", path, reason)
        return {**note, "reason": reason}, None
    return {**note, "read": True}, entries
