"""One episode visit: its steps resampled and harmonised, its needed frames decoded once, and the
windows cut from it.

Frames are decoded sequentially (one pass per camera, no seek) when the episode is loaded; each
decoded frame carries a count of the pending windows that still need it and is dropped when that
count reaches zero. A loaded episode's windows all become pending at once, so the frames held are
bounded by ``max_live_episodes`` (+1 read ahead) x the longest episode's needed frames x cameras, and
shrink as windows are emitted; ``shuffle_buffer`` decides when the next episode is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wamdata.errors import FormatError
from wamdata.format.video import resize_frame
from wamdata.loader.config import LoaderConfig
from wamdata.loader.plan import kept_anchors, resampled_steps
from wamdata.loader.vectors import Normalizer, VectorLayout, harmonise
from wamdata.schema import TIMESTAMP


@dataclass
class DatasetContext:
    """What a window needs to know about the dataset it comes from."""

    index: int
    name: str
    cfg: LoaderConfig
    state_layout: VectorLayout
    action_layout: VectorLayout
    normalizer: Normalizer
    frame_shape: dict[str, tuple[int, int]]   # camera -> (height, width) of delivered frames
    delta_features: frozenset[str] = frozenset()   # per-step motions: summed, not picked, when resampled


class LoadedEpisode:
    def __init__(self, stored, ctx: DatasetContext, pending_anchors: np.ndarray, decoder, ranges=None):
        cfg = ctx.cfg
        self.ctx = ctx
        meta = stored.meta
        self.episode_id = stored.episode_id
        self.source = str(meta.get("source", ""))
        self.embodiment = str(meta.get("embodiment", ""))
        self.where = stored.where
        ts = np.asarray(stored.array(TIMESTAMP), np.float64)
        T = len(ts)
        src_fps = float(meta["fps"])
        n = resampled_steps(int(meta["num_steps"]), src_fps, float(meta["duration_s"]), cfg.fps)
        if cfg.fps is None:
            self.src = np.arange(T)
            self.valid = np.ones(T, bool)
            self.times = ts - ts[0]
        else:
            grid = ts[0] + np.arange(n) / cfg.fps
            right = np.clip(np.searchsorted(ts, grid), 0, T - 1)
            left = np.clip(right - 1, 0, T - 1)
            self.src = np.where(np.abs(ts[left] - grid) <= np.abs(ts[right] - grid), left, right)
            tol = cfg.fps_tolerance_s if cfg.fps_tolerance_s is not None else 1.0 / src_fps
            self.valid = np.abs(ts[self.src] - grid) <= tol + 1e-9
            self.times = grid - ts[0]
        self.n = len(self.src)
        names = set(stored.steps.column_names)
        cols_s = {s.name: stored.array(s.name).reshape(T, -1)[self.src]
                  for s in ctx.state_layout.slots if s.name in names}
        cols_a = {}
        for s in ctx.action_layout.slots:
            if s.name in names:
                col = stored.array(s.name).reshape(T, -1)
                if cfg.fps is not None and s.name in ctx.delta_features:
                    cols_a[s.name] = resample_deltas(col, ts, 1.0 / src_fps, grid, 1.0 / cfg.fps)
                else:
                    cols_a[s.name] = col[self.src]
        self.state, self.state_mask = harmonise(ctx.state_layout, cols_s, self.n, self.embodiment, ctx.normalizer)
        self.actions, self.action_mask = harmonise(ctx.action_layout, cols_a, self.n, self.embodiment,
                                                   ctx.normalizer)
        self.has_actions = bool(cols_a) and meta.get("action_space", "") != "none"
        self.language = [(float(s["start_s"]), float(s["end_s"]), str(s["text"])) for s in meta.get("language", [])]
        tasks = meta.get("tasks") or []
        self.task = str(tasks[0]) if tasks else ""
        self._index_windows(cfg, src_fps, ranges)
        # Frames: which source frames the pending windows need, decoded in one sequential pass.
        # A camera its converter flagged as a placeholder (one constant image throughout, like Bridge's
        # blank image_3) shows nothing to learn from: it is delivered as a missing camera is (black
        # frames, camera_mask false), never decoded, so a model is not trained to predict black.
        cams = meta.get("cameras", {})
        self.cameras = [c for c in cfg.cameras if c in cams and not cams[c].get("metadata", {}).get("placeholder")]
        self.refs = np.bincount(self.frame_ids[np.asarray(pending_anchors, np.int64)].ravel(), minlength=T)
        self.frames: dict[str, list] = {}
        needed = np.nonzero(self.refs)[0]
        stop = int(needed[-1]) + 1 if len(needed) else 0
        for cam in self.cameras:
            hw = ctx.frame_shape[cam]
            store = [None] * T
            got = 0
            try:
                for i, frame in enumerate(decoder.iter_frames(stored.video_bytes(cam), 0, stop)):
                    if self.refs[i]:
                        store[i] = fit_frame(frame, hw, cfg.resize)
                    got = i + 1
            except FormatError:
                raise
            except Exception as e:  # decoder errors name the episode and camera
                raise FormatError(f"{self.where}: camera {cam!r}: video decode failed ({e})") from e
            if got < stop:
                raise FormatError(f"{self.where}: camera {cam!r} has {got} frames, windows need {stop}")
            self.frames[cam] = store

    def _index_windows(self, cfg: LoaderConfig, src_fps: float, ranges):
        """Step indices and padding masks of every window of the episode, as (windows, k) tables
        computed at once: per-window numpy calls cost more than the indexing itself. With a view's
        kept ``ranges``, windows are anchored inside them and each range bounds its windows
        (:func:`wamdata.loader.plan.kept_anchors`)."""
        t, lo, hi = kept_anchors(self.n, src_fps, cfg.fps, cfg.window_stride, ranges)
        self.anchor_steps = t
        lo, hi = lo[:, None], hi[:, None]
        h = t[:, None] + np.arange(-cfg.history + 1, 1)
        f = t[:, None] + np.asarray(cfg.future, np.int64).reshape(1, -1)
        a = t[:, None] + np.arange(cfg.action_horizon)
        self.hist_steps, self.future_steps, self.action_steps = (np.clip(x, lo, hi) for x in (h, f, a))
        self.hist_pad = (h < lo) | ~self.valid[self.hist_steps]
        self.future_pad = (f > hi) | ~self.valid[self.future_steps]
        self.action_pad = ((a > hi) | ~self.valid[self.action_steps]) if self.has_actions \
            else np.ones(a.shape, bool)
        # source frames each window shows: history then future
        self.frame_ids = self.src[np.concatenate([self.hist_steps, self.future_steps], 1)]

    def language_at(self, time_s: float) -> str:
        for start, end, text in self.language:
            if start <= time_s <= end:
                return text
        return self.task

    def window(self, anchor: int, stack: bool = True) -> dict:
        """The episode's ``anchor``-th window (at step ``anchor * window_stride`` without kept ranges);
        releases frames no longer needed.
        ``stack=False`` leaves frames as lists of (H, W, 3) arrays for :func:`batch.collate` to copy
        straight into a batch."""
        cfg, ctx = self.ctx.cfg, self.ctx
        t = int(self.anchor_steps[anchor])
        hc, fc = self.hist_steps[anchor], self.future_steps[anchor]
        frames, future = {}, {}
        for cam in cfg.cameras:
            store = self.frames.get(cam)
            if store is None:
                H, W = ctx.frame_shape[cam]
                frames[cam] = np.zeros((len(hc), H, W, 3), np.uint8)
                future[cam] = np.zeros((len(fc), H, W, 3), np.uint8)
            elif not stack:
                frames[cam] = [store[i] for i in self.src[hc]]
                future[cam] = [store[i] for i in self.src[fc]]
            else:
                frames[cam] = np.stack([store[i] for i in self.src[hc]])
                future[cam] = np.stack([store[i] for i in self.src[fc]]) if len(fc) else \
                    np.zeros((0, *ctx.frame_shape[cam], 3), np.uint8)
        ids = self.frame_ids[anchor]
        np.subtract.at(self.refs, ids, 1)
        for i in ids[self.refs[ids] == 0]:
            for store in self.frames.values():
                store[i] = None
        return {
            "frames": frames,
            "future_frames": future,
            "frames_is_pad": self.hist_pad[anchor].copy(),
            "future_is_pad": self.future_pad[anchor].copy(),
            "camera_mask": np.array([c in self.frames for c in cfg.cameras], bool),
            "state": self.state[hc],
            "state_is_pad": self.hist_pad[anchor].copy(),
            "state_mask": self.state_mask,
            "actions": self.actions[self.action_steps[anchor]] if self.has_actions else
            np.zeros((cfg.action_horizon, ctx.action_layout.width), np.float32),
            "actions_is_pad": self.action_pad[anchor].copy(),
            "action_mask": self.action_mask if self.has_actions else np.zeros(ctx.action_layout.width, bool),
            "language": self.language_at(float(self.times[t])),
            "episode_id": self.episode_id,
            "t": int(t),
            "timestamp": float(self.times[t]),
            "source": self.source,
            "embodiment": self.embodiment,
            "dataset": ctx.name,
        }


def fit_frame(frame: np.ndarray, hw: tuple[int, int], mode: str) -> np.ndarray:
    """A frame at (height, width) ``hw``: ``"stretch"`` resizes (the aspect ratio follows the target),
    ``"crop"`` takes the largest centred region of the target's aspect ratio first, ``"pad"`` scales
    the whole frame to fit inside and centres it on black."""
    h, w = hw
    H, W = frame.shape[:2]
    if (H, W) == (h, w) or mode == "stretch":
        return resize_frame(frame, (w, h))
    if mode == "crop":
        if H * w > W * h:   # taller than the target: crop rows
            keep = max(1, round(W * h / w))
            frame = frame[(H - keep) // 2: (H - keep) // 2 + keep]
        else:
            keep = max(1, round(H * w / h))
            frame = np.ascontiguousarray(frame[:, (W - keep) // 2: (W - keep) // 2 + keep])
        return resize_frame(frame, (w, h))
    scale = min(h / H, w / W)
    nh, nw = max(1, round(H * scale)), max(1, round(W * scale))
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - nh) // 2, (w - nw) // 2
    out[y: y + nh, x: x + nw] = resize_frame(frame, (nw, nh))
    return out


def resample_deltas(values: np.ndarray, ts: np.ndarray, src_dt: float, grid: np.ndarray, dt: float) -> np.ndarray:
    """Per-step motions (``delta`` features) at another rate: the motion accumulated over each target
    step ``[grid_k, grid_k + dt)``, not the nearest source step's motion (which would lose half of it
    at half the rate and count it twice at double). Source step ``i`` moves by ``values[i]`` evenly
    over ``[ts_i, ts_i + src_dt)``; nothing moves inside a timestamp gap. Translations add up exactly;
    rotation vectors are summed, which is exact about a fixed axis and first-order otherwise."""
    T = len(ts)
    cum = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values, 0, dtype=np.float64)])
    ends = np.minimum(ts + src_dt, np.append(ts[1:], np.inf))
    knots = np.stack([ts, ends], 1).ravel()                         # start_0, end_0, start_1, ...
    at_knots = np.stack([cum[:T], cum[1:]], 1).reshape(2 * T, -1)   # accumulated motion there
    out = np.empty((len(grid), values.shape[1]), np.float32)
    for j in range(values.shape[1]):
        out[:, j] = np.interp(grid + dt, knots, at_knots[:, j]) - np.interp(grid, knots, at_knots[:, j])
    return out
