"""The loader's knobs in one frozen dataclass, checked once at construction.

A window anchored at step ``t`` (steps of the stream's rate, see ``fps``) holds:

- ``history`` frames and states at ``t - history + 1 .. t`` (before step 0: step 0 repeated, padded),
- future frames at ``t + f`` for ``f`` in ``future`` (past the end: the last step repeated, padded),
- ``action_horizon`` actions at ``t .. t + action_horizon - 1`` (past the end: repeated, padded).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from wamdata.errors import ConfigError

NORMALIZE_MODES = ("stats", "bounds")
RESIZE_MODES = ("stretch", "crop", "pad")


@dataclass(frozen=True)
class LoaderConfig:
    cameras: tuple[str, ...] = ()
    history: int = 2
    future: tuple[int, ...] = (4, 8, 16)
    action_horizon: int = 16
    # (height, width) of delivered frames; None: each camera at its stored size in the first dataset
    # that has it (a camera stored at other sizes in other datasets is fitted to that one)
    image_size: tuple[int, int] | None = (180, 320)
    resize: str = "stretch"           # "stretch" | "crop" (centred, keeps aspect) | "pad" (letterbox)
    seed: int = 0
    shuffle_buffer: int = 2048        # windows held for shuffling; <= 1 streams windows in order
    max_live_episodes: int = 8        # decoded episodes held at once (+1 read ahead): the memory bound
    read_ahead: bool = True           # decode the next episode in a background thread (one more in memory)
    window_stride: int = 1            # anchor every N-th step
    normalize: str | dict | None = "stats"   # "stats" | "bounds" | None, or {feature: mode}
    fps: float | None = None          # resample every dataset to this rate (nearest step)
    fps_tolerance_s: float | None = None     # nearest step farther than this is padded; default 1 source period
    rank: int | None = None
    world_size: int | None = None
    split: str | None = None
    # names (default: the canonical ones present), or {name: width} to pin a layout (VectorLayout.widths)
    state_features: tuple[str, ...] | tuple[tuple[str, int], ...] | None = None
    action_features: tuple[str, ...] | tuple[tuple[str, int], ...] | None = None
    # samples per epoch over all ranks/workers (default: every window once); "even": every consumer
    # (rank x worker) the same count, total windows // consumers, so DDP ranks get equal batch counts
    samples_per_epoch: int | str | None = None
    on_error: str = "raise"           # "raise" | "skip": an unreadable episode stops the stream or is skipped (logged)
    decoder: str = "pyav"
    decoder_threads: int = 1

    def __post_init__(self):
        def fix(name, value):
            object.__setattr__(self, name, value)

        fix("cameras", tuple(self.cameras) if not isinstance(self.cameras, str) else (self.cameras,))
        fix("future", tuple(int(f) for f in self.future))
        if self.image_size is not None:
            size = self.image_size
            if isinstance(size, str) or len(size) != 2 or not all(
                    isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in size):
                raise ConfigError(f"image_size is (height, width) in pixels, e.g. (180, 320), or None; got {size!r}")
            fix("image_size", (int(size[0]), int(size[1])))
        for name in ("state_features", "action_features"):
            v = getattr(self, name)
            if isinstance(v, dict):   # a pinned layout, name -> width (VectorLayout.widths)
                if not all(isinstance(w, numbers.Integral) and not isinstance(w, bool) and w > 0 for w in v.values()):
                    raise ConfigError(f"{name}: widths must be positive integers, got {v}")
                fix(name, tuple((str(n), int(w)) for n, w in v.items()))
            elif v is not None:
                fix(name, tuple([v] if isinstance(v, str) else v))
        if self.history < 1:
            raise ConfigError(f"history must be >= 1, got {self.history}")
        if self.action_horizon < 0:
            raise ConfigError(f"action_horizon must be >= 0, got {self.action_horizon}")
        if any(f < 1 for f in self.future):
            raise ConfigError(f"future offsets are steps after t and must be >= 1, got {list(self.future)}")
        if self.window_stride < 1:
            raise ConfigError(f"window_stride must be >= 1, got {self.window_stride}")
        if self.max_live_episodes < 1:
            raise ConfigError(f"max_live_episodes must be >= 1, got {self.max_live_episodes}")
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"fps must be positive, got {self.fps}")
        modes = self.normalize.values() if isinstance(self.normalize, dict) else [self.normalize]
        for m in modes:
            if m is not None and m not in NORMALIZE_MODES:
                raise ConfigError(f"unknown normalize mode {m!r}; known: {', '.join(NORMALIZE_MODES)} or None")
        from wamdata.format.video import DECODERS

        if self.decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {self.decoder!r}; known: {', '.join(DECODERS)}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.on_error not in ("raise", "skip"):
            raise ConfigError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        spe = self.samples_per_epoch
        if spe is not None and spe != "even" and (isinstance(spe, (str, bool)) or int(spe) < 1):
            raise ConfigError(f"samples_per_epoch must be a positive count, 'even' or None, got {spe!r}")
        if (self.rank is None) != (self.world_size is None):
            raise ConfigError("give both rank and world_size, or neither (then torch.distributed decides)")
        if self.world_size is not None and not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} outside world_size {self.world_size}")

    def normalize_mode(self, feature: str) -> str | None:
        if isinstance(self.normalize, dict):
            return self.normalize.get(feature)
        return self.normalize
