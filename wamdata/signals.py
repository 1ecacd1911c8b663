"""Quality signals of one stored episode, along the three axes of the curation survey.

Every function here is pure: arrays in, plain numbers out. :func:`episode_signals` gathers them for a
:class:`wamdata.format.reader.StoredEpisode` into one row of the side table ``curation/signals.parquet``
(:mod:`wamdata.curate` writes it; ``pipelines.curate_job`` fans the work out over shards). Columns
(``SIGNAL_COLUMNS`` documents each; every one is a plain number or bool except the last three):

visual fidelity (sampled frames, :func:`frame_sample`; frame measures from :mod:`wamdata.quality`)
    ``blur`` (worst camera's median variance of Laplacian; low = blurred), ``luma`` (mean, [0, 1]),
    ``dark_frames`` / ``bright_frames`` / ``black_frames`` (worst camera's fraction of sampled frames
    under- / over-exposed / black), ``repeated_frames`` (worst camera's fraction of sampled consecutive
    pairs that repeat: frozen or duplicated frames). Null without a camera.
physical plausibility (``state.*`` / ``action.*``, by each feature's declared encoding and unit)
    ``nonfinite`` (NaN/Inf values), ``action_jumps`` / ``state_jumps`` (steps whose per-step motion is
    an outlier of the feature's own distribution, robust z > ``jump_z`` on the median / MAD, or beyond
    an absolute speed where the unit allows), ``action_jump_z`` (largest robust z), ``action_jerk``
    (steps whose third difference is such an outlier), ``gripper_flips`` and ``gripper_chatter_hz``
    (open/close flips with hysteresis; the most in any 1 s), ``action_state_error`` (how far the
    commanded action is from the next observed state, relative to the state's motion; 0 = exact).
temporal integrity (timestamps against the nominal fps)
    ``ts_gaps`` (steps > 1.5 nominal periods), ``ts_gap_max_s``, ``ts_jitter`` (std of the regular
    periods / nominal), ``dropped_frames`` (steps the gaps stand for), ``ts_backwards``.
idle, duplicates, language
    ``idle_s`` / ``idle_fraction`` and ``idle_ranges`` (list of [start, stop) step ranges where neither
    state nor action moves, or ``extra.idle`` is set, lasting at least ``idle_min_s``),
    ``frame_hashes`` (dhash of the sampled frames, for near-duplicate episodes), ``state_hash`` (sha1
    of the state columns: identical sequences), ``lang_empty`` / ``lang_duplicate`` / ``lang_garbled``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass

import numpy as np

from wamdata import quality
from wamdata.schema import GRIPPER_FEATURES, QUATERNION_FEATURES, TIMESTAMP

SIGNALS_VERSION = 1

SIGNAL_COLUMNS: dict[str, str] = {
    "blur": "variance of the Laplacian, worst camera's median over sampled frames (low = blurred; sharp ~100s)",
    "luma": "mean luma of sampled frames over cameras, [0, 1]",
    "dark_frames": "worst camera's fraction of sampled frames with over half their pixels under-exposed",
    "bright_frames": "worst camera's fraction of sampled frames with over half their pixels saturated",
    "black_frames": "worst camera's fraction of sampled frames that are black (>= 99% of pixels dark)",
    "repeated_frames": "worst camera's fraction of sampled consecutive frame pairs that repeat (frozen/duplicated)",
    "nonfinite": "NaN/Inf values over the numeric state/action/extra columns",
    "action_jumps": "action steps whose motion is an outlier (robust z > jump_z) or beyond an absolute speed",
    "action_jump_z": "largest robust z of an action's per-step motion",
    "action_jerk": "action steps whose third difference is an outlier (robust z > jump_z)",
    "state_jumps": "state steps whose motion is an outlier (robust z > jump_z) or beyond an absolute speed",
    "gripper_flips": "open/close flips of the gripper (action, else state), hysteresis 0.3 / 0.7",
    "gripper_chatter_hz": "most gripper flips within any 1 s window (flips/s)",
    "action_state_error": "commanded vs next observed state, relative to the state's motion (0 = exact)",
    "ts_gaps": "timestamp steps longer than 1.5 nominal periods",
    "ts_gap_max_s": "longest timestamp step, s",
    "ts_jitter": "std of the regular timestamp steps / the nominal period",
    "dropped_frames": "steps the timestamp gaps stand for (round(dt * fps) - 1 summed)",
    "ts_backwards": "timestamp steps <= 0",
    "idle_s": "seconds in idle segments",
    "idle_fraction": "fraction of steps in idle segments",
    "idle_ranges": "idle segments as [start, stop) step ranges (list)",
    "frame_hashes": "64-bit dhash of each sampled frame, cameras in name order (list)",
    "state_hash": "sha1 of the state columns' values ('' without state)",
    "lang_empty": "no task text and no language segment",
    "lang_duplicate": "the same text listed twice among the tasks, or in consecutive segments",
    "lang_garbled": "text with control/private characters, mojibake or a token repeated 3+ times in a row",
}

# absolute speed limits (units per second) of a plausible per-step motion, by declared unit
SPEED_LIMIT = {"m": 3.0, "rad": 2 * np.pi, "rad_axis_angle": 2 * np.pi}
# speeds under which a feature is idle, by declared unit (others: this fraction of its range per s)
IDLE_SPEED = {"m": 0.005, "rad": 0.02, "rad_axis_angle": 0.02, "normalized": 0.02}
IDLE_RANGE_FRACTION = 0.01
REPEATED_CHANGE = 0.002      # quality.change below this: the two frames repeat (half a grey level)
_MOJIBAKE = re.compile("[ÃÂâ][\u0080-\u00bf\u2018-\u203a\u20ac]|\ufffd")
_RUN = re.compile(r"\b(\w+)(?:\s+\1\b){2,}", re.IGNORECASE)


@dataclass(frozen=True)
class SignalSettings:
    """What the signals depend on; recorded with the side table (another setting recomputes)."""

    frames_per_camera: int = 32     # sampled frames per camera (an episode this short: every frame)
    hashes_per_camera: int = 8      # of which this many, evenly spaced, are hashed for duplicates
    jump_z: float = 8.0             # robust z of an outlier motion / jerk
    idle_min_s: float = 1.0         # shortest idle segment
    decoder: str = "pyav"

    def to_json(self) -> dict:
        return {"version": SIGNALS_VERSION, **asdict(self)}


# ---- visual -------------------------------------------------------------------------------------

def frame_sample(num_frames: int, count: int) -> np.ndarray:
    """Which frames of a camera are measured: all of a clip of at most ``count`` frames; otherwise
    ``count // 2`` evenly spaced pairs (i, i + 1), so that repeats are seen as well as levels."""
    if num_frames <= count:
        return np.arange(num_frames)
    starts = np.linspace(0, num_frames - 2, max(1, count // 2)).round().astype(np.int64)
    return np.unique(np.concatenate([starts, starts + 1]))


def camera_signals(frames: dict[int, np.ndarray], hashes: int) -> dict:
    """Measures of one camera's sampled frames (index -> RGB frame)."""
    idx = sorted(frames)
    greys = {i: quality.grey(frames[i]) for i in idx}
    exp = [quality.exposure(greys[i]) for i in idx]
    pairs = [(i, i + 1) for i in idx if i + 1 in greys]
    repeated = [quality.change(greys[a], greys[b]) < REPEATED_CHANGE for a, b in pairs]
    hashed = [idx[j] for j in np.linspace(0, len(idx) - 1, min(hashes, len(idx))).round().astype(int)]
    return {
        "blur": float(np.median([quality.blur(greys[i]) for i in idx])),
        "luma": float(np.mean([e["luma"] for e in exp])),
        "dark_frames": float(np.mean([e["dark"] > 0.5 for e in exp])),
        "bright_frames": float(np.mean([e["bright"] > 0.5 for e in exp])),
        "black_frames": float(np.mean([e["dark"] >= 0.99 for e in exp])),
        "repeated_frames": float(np.mean(repeated)) if repeated else 0.0,
        "hashes": [quality.dhash(greys[i]) for i in hashed],
    }


def visual_signals(per_camera: list[dict]) -> dict:
    """Episode-level visual columns: the worst camera for each defect, the mean for luma."""
    if not per_camera:
        return {k: None for k in ("blur", "luma", "dark_frames", "bright_frames", "black_frames",
                                  "repeated_frames")} | {"frame_hashes": []}
    worst = {k: max(c[k] for c in per_camera) for k in ("dark_frames", "bright_frames", "black_frames",
                                                         "repeated_frames")}
    return {"blur": min(c["blur"] for c in per_camera), "luma": float(np.mean([c["luma"] for c in per_camera])),
            **worst, "frame_hashes": [h for c in per_camera for h in c["hashes"]]}


# ---- physical plausibility ---------------------------------------------------------------------

def _robust_z(m: np.ndarray) -> np.ndarray:
    """|m - median| / (1.4826 MAD) per column, the MAD taken over the steps that move at all (a
    feature idle half the time still has a scale); columns that never move get z 0."""
    z = np.zeros_like(m)
    for j in range(m.shape[1]):
        col = m[:, j]
        moving = col[np.abs(col - np.median(col)) > 1e-12]
        if len(moving) < 3:
            continue
        med = np.median(col)
        mad = 1.4826 * np.median(np.abs(moving - med))
        scale = max(mad, 1e-9 * (np.max(np.abs(col)) + 1.0))
        z[:, j] = np.abs(col - med) / scale
    return z


def _motion(values: np.ndarray, encoding: str | None) -> np.ndarray:
    """Per-step motion (T', D): differences of an absolute feature, the values of a delta one."""
    x = values.reshape(len(values), -1).astype(np.float64)
    return x if encoding == "delta" else np.diff(x, axis=0)


def _plausible_features(features: dict) -> list[str]:
    return sorted(n for n, f in features.items() if n.startswith(("state.", "action."))
                  and n not in QUATERNION_FEATURES and n not in GRIPPER_FEATURES
                  and np.issubdtype(np.dtype(f.dtype), np.floating))


def jump_signals(arrays: dict[str, np.ndarray], features: dict, fps: float, jump_z: float) -> dict:
    """Outlier motions (jumps) and third differences (jerk), per kind (state / action)."""
    out = {"action_jumps": 0, "state_jumps": 0, "action_jerk": 0, "action_jump_z": 0.0}
    for name in _plausible_features(features):
        if name not in arrays or len(arrays[name]) < 4:
            continue
        kind = name.split(".", 1)[0]
        feat = features[name]
        m = _motion(arrays[name], feat.encoding)
        finite = np.isfinite(m).all(axis=1)
        m = m[finite]
        if len(m) < 3:
            continue
        z = _robust_z(m)
        rng = np.ptp(arrays[name].reshape(len(arrays[name]), -1)[np.isfinite(arrays[name].reshape(
            len(arrays[name]), -1)).all(axis=1)], axis=0)
        big = np.abs(m) > 0.01 * rng          # an outlier of a tiny noise is not a jump
        jumps = ((z > jump_z) & big).any(axis=1)
        limit = SPEED_LIMIT.get(feat.unit or "")
        if limit is not None:
            jumps |= (np.abs(m) * fps > limit).any(axis=1)
        out[f"{kind}_jumps"] += int(jumps.sum())
        if kind == "action":
            out["action_jump_z"] = max(out["action_jump_z"], float(z.max()))
            jerk = np.diff(m, n=2, axis=0)
            if len(jerk) >= 3:
                out["action_jerk"] += int(((_robust_z(jerk) > jump_z) & (np.abs(jerk) > 0.01 * rng)).any(axis=1).sum())
    return out


def gripper_signals(arrays: dict[str, np.ndarray], timestamps: np.ndarray) -> dict:
    """Flips of the commanded gripper (else the measured one) with hysteresis (closed above 0.7, open
    under 0.3), and the most flips in any 1 s window."""
    name = next((n for n in ("action.gripper", "state.gripper") if n in arrays), None)
    if name is None:
        return {"gripper_flips": 0, "gripper_chatter_hz": 0.0}
    flips, worst = 0, 0
    for g in np.asarray(arrays[name], np.float64).reshape(len(timestamps), -1).T:
        state, times = None, []
        for t, v in zip(timestamps, g):
            new = True if v > 0.7 else False if v < 0.3 else state
            if state is not None and new != state:
                times.append(t)
            state = new
        times = np.asarray(times)
        flips += len(times)
        if len(times):
            worst = max(worst, int(np.max(np.searchsorted(times, times + 1.0 - 1e-9) - np.arange(len(times)))))
    return {"gripper_flips": flips, "gripper_chatter_hz": float(worst)}


# action feature -> the state feature it commands, and how (its declared encoding decides at run time)
_COMMANDS = {"action.eef_pos": "state.eef_pos", "action.eef_delta_pos": "state.eef_pos",
             "action.joint_pos": "state.joint_pos", "action.joint_delta_pos": "state.joint_pos",
             "action.joint_vel": "state.joint_vel"}


def consistency_signal(arrays: dict[str, np.ndarray], features: dict) -> float | None:
    """How far the commanded action is from what the next state shows, relative to the state's motion:
    absolute actions: median |a[t] - s[t+1]| / median |s[t+1] - s[t]|; delta actions: the largest drift
    of cumsum(a) from the state's displacement s[t+1] - s[0], over the path length. The worst pair."""
    worst = None
    for a_name, s_name in _COMMANDS.items():
        if a_name not in arrays or s_name not in arrays or len(arrays[s_name]) < 3:
            continue
        a = arrays[a_name].reshape(len(arrays[a_name]), -1).astype(np.float64)
        s = arrays[s_name].reshape(len(arrays[s_name]), -1).astype(np.float64)
        if a.shape != s.shape:
            continue
        step = np.linalg.norm(np.diff(s, axis=0), axis=1)
        if features[a_name].encoding == "delta":
            drift = np.linalg.norm(np.cumsum(a[:-1], axis=0) - (s[1:] - s[0]), axis=1)
            err = float(np.max(drift) / max(step.sum(), 1e-12))
        else:
            err = float(np.median(np.linalg.norm(a[:-1] - s[1:], axis=1)) / max(np.median(step), 1e-12))
        if np.isfinite(err):
            worst = err if worst is None else max(worst, err)
    return worst


# ---- temporal, idle ----------------------------------------------------------------------------

def timing_signals(timestamps: np.ndarray, fps: float) -> dict:
    dt = np.diff(np.asarray(timestamps, np.float64))
    nominal = 1.0 / fps
    if not len(dt):
        return {"ts_gaps": 0, "ts_gap_max_s": 0.0, "ts_jitter": 0.0, "dropped_frames": 0, "ts_backwards": 0}
    gaps = dt > 1.5 * nominal
    regular = dt[~gaps & (dt > 0)]
    return {"ts_gaps": int(gaps.sum()), "ts_gap_max_s": float(dt.max()),
            "ts_jitter": float(regular.std() / nominal) if len(regular) else 0.0,
            "dropped_frames": int(np.sum(np.maximum(np.round(dt[gaps] / nominal) - 1, 0))),
            "ts_backwards": int(np.sum(dt <= 0))}


def idle_ranges(arrays: dict[str, np.ndarray], features: dict, timestamps: np.ndarray, fps: float,
                min_s: float) -> list[list[int]]:
    """[start, stop) step ranges where no state or action feature moves faster than its idle speed
    (by unit, else a fraction of its range per second) or ``extra.idle`` is set, of >= ``min_s``."""
    T = len(timestamps)
    moving = np.zeros(T, bool)
    names = [n for n in features if n.startswith(("state.", "action.")) and n in arrays
             and np.issubdtype(np.dtype(features[n].dtype), np.floating) and n not in QUATERNION_FEATURES]
    if not names and "extra.idle" not in arrays:
        return []
    for name in names:
        x = arrays[name].reshape(T, -1).astype(np.float64)
        m = np.abs(_motion(x, features[name].encoding)) * fps
        limit = IDLE_SPEED.get(features[name].unit or "")
        limit = limit if limit is not None else IDLE_RANGE_FRACTION * np.nanmax(np.ptp(x, axis=0))
        fast = ~(m <= max(limit, 1e-12)).all(axis=1)   # NaN counts as moving
        if features[name].encoding == "delta":
            moving |= fast
        else:                                           # a motion between t and t+1 moves both
            moving[:-1] |= fast
            moving[1:] |= fast
    if "extra.idle" in arrays:
        moving &= ~np.asarray(arrays["extra.idle"], bool).reshape(T)
    out, start = [], None
    for t in range(T + 1):
        still = t < T and not moving[t]
        if still and start is None:
            start = t
        elif not still and start is not None:
            if (t - start) / fps >= min_s - 1e-9:
                out.append([start, t])
            start = None
    return out


# ---- language ----------------------------------------------------------------------------------

def _garbled(text: str) -> bool:
    bad = any(unicodedata.category(c) in ("Cc", "Co", "Cs", "Cn") and c not in "\n\t" for c in text)
    return bad or bool(_MOJIBAKE.search(text)) or bool(_RUN.search(text))


def language_signals(tasks: list[str], segments: list[str]) -> dict:
    texts = [t for t in tasks + segments if t and t.strip()]
    norm = [" ".join(t.split()).lower() for t in tasks if t and t.strip()]
    seg = [" ".join(t.split()).lower() for t in segments]
    return {"lang_empty": not texts,
            "lang_duplicate": len(set(norm)) < len(norm) or any(a == b for a, b in zip(seg, seg[1:])),
            "lang_garbled": any(_garbled(t) for t in texts)}


# ---- one episode -------------------------------------------------------------------------------

def state_hash(arrays: dict[str, np.ndarray]) -> str:
    names = sorted(n for n in arrays if n.startswith("state."))
    if not names:
        return ""
    h = hashlib.sha1()
    for n in names:
        h.update(n.encode())
        h.update(np.ascontiguousarray(arrays[n]).tobytes())
    return h.hexdigest()


def episode_signals(ep, settings: SignalSettings, decoder) -> dict:
    """One row of the side table for a stored episode (its meta, steps and videos)."""
    meta = ep.meta
    fps = float(meta["fps"])
    ts = np.asarray(ep.array(TIMESTAMP), np.float64)
    cols = set(ep.steps.column_names)
    features = {n: f for n, f in ep.features.items() if n in cols}
    arrays = {n: ep.array(n) for n, f in features.items() if n.startswith(("state.", "action.", "extra."))
              and (np.issubdtype(np.dtype(f.dtype), np.number) or f.dtype in ("bool", "bool_"))}
    numeric = [a for a in arrays.values() if np.issubdtype(a.dtype, np.floating)]
    per_camera = []
    cams = meta.get("cameras", {})
    for cam in sorted(cams):
        if cams[cam].get("metadata", {}).get("placeholder"):
            continue
        wanted = set(frame_sample(len(ts), settings.frames_per_camera).tolist())
        frames = {}
        for i, frame in enumerate(decoder.iter_frames(ep.video_bytes(cam), 0, max(wanted) + 1 if wanted else 0)):
            if i in wanted:
                frames[i] = frame
        if frames:
            per_camera.append(camera_signals(frames, settings.hashes_per_camera))
    idle = idle_ranges(arrays, features, ts, fps, settings.idle_min_s)
    idle_steps = sum(b - a for a, b in idle)
    return {
        "episode_id": ep.episode_id,
        **visual_signals(per_camera),
        "nonfinite": int(sum(np.sum(~np.isfinite(a)) for a in numeric)),
        **jump_signals(arrays, features, fps, settings.jump_z),
        **gripper_signals(arrays, ts),
        "action_state_error": consistency_signal(arrays, features),
        **timing_signals(ts, fps),
        "idle_s": idle_steps / fps,
        "idle_fraction": idle_steps / len(ts) if len(ts) else 0.0,
        "idle_ranges": idle,
        "state_hash": state_hash(arrays),
        **language_signals([str(t) for t in meta.get("tasks") or []],
                           [str(s.get("text", "")) for s in meta.get("language") or []]),
    }
