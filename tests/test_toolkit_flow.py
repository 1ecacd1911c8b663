"""The toolkit flow (info, validate, stats, loader, LeRobot export) on the shapes every new source
brings: with and without cameras, with and without actions, with no canonical state at all."""

import numpy as np
import pytest

from tests.fixtures.loader_data import frame, make_dataset
from tests.toolkit_flow import check_toolkit_flow
from wamdata.format.writer import write_dataset
from wamdata.schema import ArrayFrames, Camera, Episode, LanguageSegment


@pytest.mark.parametrize("cameras,actions", [(("front", "wrist"), True), ((), True), (("front",), False), ((), False)])
def test_flow_with_and_without_cameras_and_actions(tmp_path, cameras, actions):
    path = make_dataset(tmp_path / "ds", n=3, steps=8, stats=False, cameras=cameras, actions=actions)
    out = check_toolkit_flow(path, tmp_path)
    assert out["windows"] == 24
    assert out["lerobot"]["total_episodes"] == 3


def _clip(e: int, T: int = 8) -> Episode:
    """An egocentric clip: frames and language, no state or action features at all."""
    ep = Episode(f"clip{e}", "video", "egocentric_video", "human", 10.0, {"timestamp": np.arange(T) / 10.0},
                 tasks=["cut the onion"])
    ep.add("extra.source_time_s", np.arange(T) / 10.0 + 5)
    ep.cameras["ego"] = Camera("ego", ArrayFrames(np.stack([frame(e, t) for t in range(T)])))
    ep.language = [LanguageSegment(0.1, 0.5, "cut")]
    return ep


def test_flow_without_state_or_actions(tmp_path):
    write_dataset(str(tmp_path / "ds"), [_clip(0), _clip(1)])
    out = check_toolkit_flow(tmp_path / "ds", tmp_path)
    assert out["windows"] == 16 and out["info"]["action_spaces"] == {"none": 2}
