"""WamStream: window contents, padding, shuffling, splitting, resume, harmonisation, normalisation,
resampling and manifests, on small generated datasets."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

from tests.fixtures.loader_data import frame, make_dataset
from wamdata.errors import ConfigError, FormatError
from wamdata.loader import LoaderConfig, WamStream, load_manifest
from wamdata.loader.plan import WindowScheduler, block_owners, mixture_counts

LENGTHS = [20, 25, 15, 30, 20, 10]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("loader") / "ds", n=len(LENGTHS), steps=LENGTHS, gripper=True)


@pytest.fixture(scope="module")
def ego(tmp_path_factory):
    """Video-only source: no actions, different state features, another embodiment and camera."""
    return make_dataset(tmp_path_factory.mktemp("loader") / "ego", n=3, steps=12, actions=False, joints=4,
                        cameras=("front",), embodiment="human", family="egocentric_video", prefix="ego")


def ids(samples):
    return [(s["episode_id"], s["t"]) for s in samples]


def all_windows(lengths=LENGTHS, prefix="ep"):
    return {(f"{prefix}{e:04d}", t) for e, n in enumerate(lengths) for t in range(n)}


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_window_contents_equal_source_values_and_frames(ds):
    stream = WamStream(ds, cameras=["front", "wrist"], history=2, future=[1, 4], action_horizon=5,
                       image_size=None, normalize=None, shuffle_buffer=64)
    samples = list(stream)
    assert set(ids(samples)) == all_windows() and len(samples) == sum(LENGTHS)
    assert stream.state_layout.names == ["state.eef_pos", "state.gripper"]
    worst = 99.0
    for s in samples:
        e, t, T = int(s["episode_id"][2:]), s["t"], LENGTHS[int(s["episode_id"][2:])]
        hist = [max(t - 1, 0), t]
        assert s["state"].dtype == np.float32 and s["state"].shape == (2, 4)
        np.testing.assert_allclose(s["state"][:, 0], [1000 * e + h for h in hist])
        np.testing.assert_allclose(s["state"][:, 3], [h % 2 for h in hist])
        assert s["state_is_pad"].tolist() == [t == 0, False] == s["frames_is_pad"].tolist()
        steps = [min(t + k, T - 1) for k in range(5)]
        np.testing.assert_allclose(s["actions"][:, 0], [1000 * e + k + 0.25 for k in steps])
        assert s["actions_is_pad"].tolist() == [t + k > T - 1 for k in range(5)]
        assert s["future_is_pad"].tolist() == [t + 1 > T - 1, t + 4 > T - 1]
        assert s["language"] == (f"first half {e}" if t < T // 2 else f"task {e}")
        assert s["source"] == "fixture" and s["embodiment"] == "franka"
        for ci, cam in enumerate(["front", "wrist"]):
            assert s["frames"][cam].shape == (2, 32, 48, 3) and s["frames"][cam].dtype == np.uint8
            for got, step in zip(s["frames"][cam], hist):
                worst = min(worst, psnr(got, frame(e, step, cam=ci)))
            for got, f in zip(s["future_frames"][cam], [1, 4]):
                worst = min(worst, psnr(got, frame(e, min(t + f, T - 1), cam=ci)))
    assert worst > 35, worst


def test_episode_end_padding_and_masks(ds):
    stream = WamStream(ds, cameras=["front"], history=3, future=[2, 8], action_horizon=4, normalize=None,
                       shuffle_buffer=1, image_size=(16, 24))
    by = {(s["episode_id"], s["t"]): s for s in stream}
    last = by[("ep0005", 9)]   # the last step of a 10-step episode
    assert last["future_is_pad"].tolist() == [True, True]
    assert last["actions_is_pad"].tolist() == [False, True, True, True]
    np.testing.assert_allclose(last["actions"][:, 0], [5009.25] * 4)   # repeats the last step
    first = by[("ep0005", 0)]
    assert first["frames_is_pad"].tolist() == [True, True, False]
    np.testing.assert_allclose(first["state"][:, 0], [5000] * 3)
    np.testing.assert_array_equal(first["frames"]["front"][0], first["frames"]["front"][2])
    assert first["frames"]["front"].shape == (3, 16, 24, 3)
    assert first["state_mask"].all() and first["action_mask"].all()


def test_in_order_without_shuffle_buffer(ds):
    order = ids(WamStream(ds, cameras=[], shuffle_buffer=1, normalize=None))
    # shards in a seeded order, each episode's windows in step order
    for (e1, t1), (e2, t2) in zip(order, order[1:]):
        assert (e1 == e2 and t2 == t1 + 1) or (e1 != e2 and t2 == 0)


def test_seed_and_epoch_determinism(ds):
    def run(**kw):
        return ids(WamStream(ds, cameras=["front"], normalize=None, shuffle_buffer=32, **kw))

    a = run(seed=3)
    assert a == run(seed=3)
    assert a != run(seed=4) and set(a) == set(run(seed=4)) == all_windows()
    s = WamStream(ds, cameras=[], normalize=None, shuffle_buffer=32, seed=3)
    e0, e1 = ids(s), ids(s)   # plain iteration moves on to the next epoch
    assert e0 == a and e1 != e0 and set(e1) == all_windows() and s.epoch == 2


@pytest.mark.parametrize("cut", [0, 1, 17, 60, 119, 120])
def test_exact_resume(ds, cut):
    kw = dict(cameras=["front"], normalize=None, shuffle_buffer=40, max_live_episodes=3, seed=7)
    full = WamStream(ds, **kw)
    expected = list(full)
    s = WamStream(ds, **kw)
    it = iter(s)
    head = [next(it) for _ in range(cut)]
    state = json.loads(json.dumps(s.state_dict()))   # plain integers, JSON-safe
    resumed = WamStream(ds, **kw)
    resumed.load_state_dict(state)
    rest = list(resumed)
    if cut == len(expected):   # a state taken after the last sample resumes at the next epoch
        assert state["epoch"] == 1 and ids(rest) == ids(list(full)) != ids(expected)
        return
    assert ids(head) + ids(rest) == ids(expected)
    # the data itself is the same, not only the ids
    for a, b in zip(rest, expected[cut:]):
        np.testing.assert_array_equal(a["frames"]["front"], b["frames"]["front"])


def test_each_camera_of_an_episode_is_decoded_once_per_visit(ds, monkeypatch):
    """No per-sample seek: one sequential decode per (episode, camera) per epoch, whatever the
    shuffle buffer does with the windows."""
    from wamdata.format import video

    calls = []
    real = video.PyAVDecoder.iter_frames

    def spy(self, source, start=0, stop=None):
        calls.append((len(source), start))
        return real(self, source, start, stop)

    monkeypatch.setattr(video.PyAVDecoder, "iter_frames", spy)
    samples = list(WamStream(ds, cameras=["front", "wrist"], image_size=(8, 8), normalize=None,
                             shuffle_buffer=40, max_live_episodes=3))
    assert len(samples) == sum(LENGTHS)
    assert len(calls) == 2 * len(LENGTHS) and all(start == 0 for _, start in calls)


def test_resume_rejects_other_layout(ds, ego):
    s = WamStream(ds, cameras=[], normalize=None, seed=1)
    with pytest.raises(ConfigError, match="seed"):
        WamStream(ds, cameras=[], normalize=None, seed=2).load_state_dict(s.state_dict())
    # anything that changes which samples come in which order makes a saved position meaningless
    for other in (dict(shuffle_buffer=7), dict(history=3), dict(window_stride=2)):
        with pytest.raises(ConfigError, match="another stream"):
            WamStream(ds, cameras=[], normalize=None, seed=1, **other).load_state_dict(s.state_dict())
    with pytest.raises(ConfigError, match="another stream"):
        WamStream({"datasets": [{"path": ds}, {"path": ego}]}, cameras=[], normalize=None,
                  seed=1).load_state_dict(s.state_dict())
    WamStream(ds, cameras=[], normalize=None, seed=1).load_state_dict(s.state_dict())  # the same: fine


def test_epoch_start_state_resumes_under_another_world_size(ds):
    """With equal shares (samples_per_epoch), a checkpoint taken after a full pass on 2 ranks resumes
    on 3: each new rank gets its share of the next epoch, as a fresh 3-rank run of that epoch does.
    Without equal shares a rank's boundary says nothing of the others: refused, as is mid-epoch, and
    one rank never loads another's state."""
    kw = dict(cameras=[], normalize=None, shuffle_buffer=8, seed=6, samples_per_epoch="even")
    old = WamStream(ds, rank=0, world_size=2, **kw)
    list(old)
    state = old.state_dict()
    for rank in range(3):
        resumed = WamStream(ds, rank=rank, world_size=3, **kw)
        resumed.load_state_dict(state)
        fresh = WamStream(ds, rank=rank, world_size=3, **kw)
        fresh.set_epoch(1)
        assert ids(resumed) == ids(fresh) != []
    with pytest.raises(ConfigError, match="rank 0 of 2; this stream is rank 1 of 2: each rank resumes from its own"):
        WamStream(ds, rank=1, world_size=2, **kw).load_state_dict(state)
    mid = WamStream(ds, rank=0, world_size=2, **kw)
    next(iter(mid))
    with pytest.raises(ConfigError, match="mid-epoch at rank 0 of 2; this stream is rank 1 of 3"):
        WamStream(ds, rank=1, world_size=3, **kw).load_state_dict(mid.state_dict())
    unequal = dict(kw, samples_per_epoch=None)
    first = WamStream(ds, rank=0, world_size=2, **unequal)
    list(first)
    with pytest.raises(ConfigError, match="samples_per_epoch set"):
        WamStream(ds, rank=0, world_size=3, **unequal).load_state_dict(first.state_dict())


def test_resume_after_the_dataset_moved(ds, tmp_path):
    import shutil

    s = WamStream(ds, cameras=[], normalize=None, shuffle_buffer=8)
    it = iter(s)
    head = [next(it) for _ in range(23)]
    moved = shutil.copytree(ds, tmp_path / "elsewhere")
    r = WamStream(str(moved), cameras=[], normalize=None, shuffle_buffer=8)
    r.load_state_dict(s.state_dict())
    assert ids(head) + ids(r) == ids(WamStream(ds, cameras=[], normalize=None, shuffle_buffer=8))


def test_normalize_naming_an_unknown_feature_is_an_error(ds):
    with pytest.raises(ConfigError, match="state.eef_poss"):
        WamStream(ds, cameras=[], normalize={"state.eef_poss": "stats"})


def test_two_ranks_two_workers_cover_the_epoch_once(ds):
    stream = WamStream(ds, cameras=[], normalize=None, shuffle_buffer=16)
    got = [w for c in range(4) for _, w in stream.iter_consumer(0, c, 4)]
    assert len(got) == sum(LENGTHS) and set(ids(got)) == all_windows()
    # blocks are balanced by window count (to within one episode) and each consumer knows its length
    lens = [stream.consumer_length(0, c, 4) for c in range(4)]
    assert sum(lens) == sum(LENGTHS) and max(lens) - min(lens) <= max(LENGTHS)
    # ranks from the config
    r = [ids(WamStream(ds, cameras=[], normalize=None, rank=k, world_size=2)) for k in range(2)]
    assert not set(r[0]) & set(r[1]) and set(r[0]) | set(r[1]) == all_windows()


def test_more_consumers_than_episodes(ds):
    stream = WamStream(ds, cameras=[], normalize=None)
    got = [w for c in range(9) for _, w in stream.iter_consumer(1, c, 9)]
    assert sorted(ids(got)) == sorted(all_windows())


def test_harmonised_mixture_with_video_only_source(ds, ego):
    stream = WamStream({"datasets": [{"path": ds, "weight": 1}, {"path": ego, "weight": 1}]},
                       cameras=["front", "wrist"], normalize=None, action_horizon=3, image_size=(16, 24))
    assert stream.state_layout.names == ["state.eef_pos", "state.gripper", "state.joint_pos"]
    assert stream.action_layout.names == ["action.eef_pos"]
    seen = set()
    for s in stream:
        seen.add(s["dataset"])
        assert s["state"].shape == (2, 8) and s["actions"].shape == (3, 3)
        if s["embodiment"] == "human":
            assert s["state_mask"].tolist() == [True] * 3 + [False] + [True] * 4
            assert s["actions_is_pad"].all() and not s["action_mask"].any()
            assert s["camera_mask"].tolist() == [True, False] and not s["frames"]["wrist"].any()
            e = int(s["episode_id"][3:])
            np.testing.assert_allclose(s["state"][-1, 4:], np.arange(4) + e)
        else:
            assert s["state_mask"].tolist() == [True] * 4 + [False] * 4 and s["camera_mask"].all()
    assert seen == {"ds", "ego"}


def test_placeholder_camera_comes_masked_and_black(tmp_path):
    """A camera its converter flagged as a placeholder in some episodes (Bridge's blank image_3):
    those episodes' windows mask it and give black frames; the others show it."""
    from tests.fixtures.loader_data import episode
    from wamdata.format.writer import write_dataset
    from wamdata.schema import ArrayFrames, Camera

    eps = [episode(e, 8) for e in range(3)]
    eps[1].cameras["wrist"] = Camera("wrist", ArrayFrames(np.zeros((8, 32, 48, 3), np.uint8)),
                                     metadata={"placeholder": True})
    write_dataset(str(tmp_path / "ds"), eps)
    stream = WamStream(str(tmp_path / "ds"), cameras=["front", "wrist"], normalize=None, image_size=None)
    n = 0
    for s in stream:
        blank = s["episode_id"] == "ep0001"
        assert s["camera_mask"].tolist() == [True, not blank], s["episode_id"]
        assert s["frames"]["wrist"].any() != blank and s["frames"]["front"].any()
        n += 1
    assert n == 24


def test_a_pinned_layout_carries_over_to_a_subset(ds, ego):
    """A model trained on a mixture, evaluated on one of its datasets: the mixture's layout, given as
    {name: width}, makes the subset's vectors line up dimension for dimension."""
    mix = WamStream({"datasets": [ds, ego]}, cameras=[], normalize=None)
    mixed = {ids([s])[0]: s for s in mix if s["dataset"] == "ego"}
    alone = WamStream(ego, cameras=[], normalize=None)
    assert alone.state_layout.width == 7 and alone.action_layout.width == 0   # its own layout differs
    pinned = WamStream(ego, cameras=[], normalize=None, state_features=mix.state_layout.widths,
                       action_features=mix.action_layout.widths)
    assert pinned.state_layout == mix.state_layout and pinned.action_layout == mix.action_layout
    for s in pinned:
        m = mixed[ids([s])[0]]
        for key in ("state", "state_mask", "actions", "actions_is_pad", "action_mask"):
            np.testing.assert_array_equal(s[key], m[key])
    with pytest.raises(ConfigError, match=r"wider than the given layout.*state.joint_pos \(4 > 2\)"):
        WamStream(ego, cameras=[], normalize=None, state_features={"state.joint_pos": 2})
    with pytest.raises(ConfigError, match="positive integers"):
        WamStream(ego, cameras=[], normalize=None, state_features={"state.joint_pos": 0})


def test_mixture_weights(ds, ego):
    stream = WamStream({"datasets": [{"path": ds, "weight": 3}, {"path": ego, "weight": 1}]},
                       cameras=[], normalize=None, samples_per_epoch=4000, shuffle_buffer=8)
    samples = list(stream)
    assert len(samples) == 4000
    frac = np.mean([s["dataset"] == "ds" for s in samples])
    assert abs(frac - 0.75) < 0.03, frac
    # the small dataset cycles through passes: every one of its windows is seen, many times over
    assert {w for w in ids(samples) if w[0].startswith("ego")} == all_windows([12] * 3, "ego")


@pytest.mark.parametrize("consumers", [4, 8])
def test_mixture_weights_hold_across_many_consumers(ds, ego, consumers):
    """ranks x workers consumers: the 3-episode dataset is shared by those that would get none of
    its episodes, so every consumer (and the whole) samples it by its weight."""
    stream = WamStream({"datasets": [{"path": ds, "weight": 1}, {"path": ego, "weight": 1}]},
                       cameras=[], normalize=None, samples_per_epoch=4000, shuffle_buffer=8)
    per = [[s["dataset"] for _, s in stream.iter_consumer(0, c, consumers)] for c in range(consumers)]
    assert sum(map(len, per)) == 4000
    for got in per:
        assert abs(np.mean([d == "ds" for d in got]) - 0.5) < 0.15
    assert abs(np.mean([d == "ds" for got in per for d in got]) - 0.5) < 0.03


def test_mixture_resume(ds, ego):
    kw = dict(cameras=["front"], normalize=None, samples_per_epoch=300, shuffle_buffer=10, image_size=(8, 8))
    mix = {"datasets": [{"path": ds, "weight": 2}, {"path": ego, "weight": 1}]}
    expected = ids(WamStream(mix, **kw))
    s = WamStream(mix, **kw)
    it = iter(s)
    head = [next(it) for _ in range(137)]
    r = WamStream(mix, **kw)
    r.load_state_dict(s.state_dict())
    assert ids(head) + ids(r) == expected


def test_normalisation_stats_and_bounds(ds):
    stats = json.load(open(f"{ds}/stats.json"))["by_embodiment"]["franka"]
    raw = {ids([s])[0]: s for s in WamStream(ds, cameras=[], normalize=None)}
    mean, std = np.array(stats["state.eef_pos"]["mean"]), np.array(stats["state.eef_pos"]["std"])
    for s in WamStream(ds, cameras=[], normalize="stats"):
        r = raw[ids([s])[0]]
        np.testing.assert_allclose(s["state"][:, 0], (r["state"][:, 0] - mean[0]) / std[0], rtol=1e-5)
        np.testing.assert_allclose(s["state"][:, 1], 0.0, atol=1e-6)   # constant dimension: centred, unscaled
    q01, q99 = np.array(stats["action.eef_pos"]["q01"]), np.array(stats["action.eef_pos"]["q99"])
    per = WamStream(ds, cameras=[], normalize={"action.eef_pos": "bounds"})
    for s in per:
        r = raw[ids([s])[0]]
        want = 2 * (r["actions"][:, 0] - q01[0]) / (q99[0] - q01[0]) - 1
        np.testing.assert_allclose(s["actions"][:, 0], want, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(s["state"], r["state"])   # not listed: untouched


@pytest.mark.parametrize("mode", ["stats", "bounds"])
def test_denormalize_gives_back_source_units(ds, ego, mode):
    """What a trainer does with a policy's output: the stream's normalised action chunk (and state)
    back in robot units, per the sample's dataset and embodiment, numpy or torch."""
    mix = {"datasets": [{"path": ds}, {"path": ego}]}
    raw = {ids([s])[0]: s for s in WamStream(mix, cameras=[], normalize=None, shuffle_buffer=1)}
    stream = WamStream(mix, cameras=[], normalize=mode, shuffle_buffer=1)
    seen = set()
    for s in stream:
        r = raw[ids([s])[0]]
        for kind, key, mask in (("action", "actions", "action_mask"), ("state", "state", "state_mask")):
            back = stream.denormalize(s[key], s["dataset"], s["embodiment"], kind=kind)
            np.testing.assert_allclose(back[..., s[mask]], r[key][..., s[mask]], rtol=1e-5, atol=1e-3)
        seen.add(s["dataset"])
    assert seen == {"ds", "ego"}
    torch = pytest.importorskip("torch")
    s = next(iter(stream))
    back = stream.denormalize(torch.from_numpy(s["actions"]), s["dataset"], s["embodiment"])
    np.testing.assert_allclose(back.numpy(), raw[ids([s])[0]]["actions"], rtol=1e-5, atol=1e-3)
    with pytest.raises(ConfigError, match="no dataset 'nope'"):
        stream.denormalize(s["actions"], "nope", "franka")
    with pytest.raises(ConfigError, match="dims"):
        stream.denormalize(s["actions"][:, :2], "ds", "franka")


def test_missing_stats_names_path_and_command(tmp_path):
    p = make_dataset(tmp_path / "nostats", n=1, steps=5, stats=False)
    with pytest.raises(FormatError, match=r"stats\.json.*wamdata stats"):
        WamStream(p, cameras=[], normalize="stats")
    assert len(list(WamStream(p, cameras=[], normalize=None))) == 5


def test_resize_modes_stretch_crop_pad(ds):
    """Stored frames are 32x48. crop keeps the centred 32x32; pad letterboxes the whole frame into
    48x48 (8 black rows above and below); stretch (the default) squeezes it."""
    def first(**kw):
        s = next(iter(WamStream(ds, cameras=["front"], normalize=None, shuffle_buffer=1, **kw)))
        return s["frames"]["front"][-1], frame(int(s["episode_id"][2:]), s["t"])

    got, src = first(image_size=(32, 32), resize="crop")
    assert got.shape == (32, 32, 3) and psnr(got, src[:, 8:40]) > 35
    got, src = first(image_size=(48, 48), resize="pad")
    assert got.shape == (48, 48, 3) and not got[:8].any() and not got[40:].any() and psnr(got[8:40], src) > 35
    got, src = first(image_size=(32, 32))
    import cv2

    assert psnr(got, cv2.resize(src, (32, 32), interpolation=cv2.INTER_AREA)) > 35
    for bad in ("320x180", (90,), (0, 32)):
        with pytest.raises(ConfigError, match="image_size is"):
            WamStream(ds, cameras=["front"], image_size=bad)
    with pytest.raises(ConfigError, match="resize must be one of"):
        WamStream(ds, cameras=["front"], resize="fit")


def test_resample_to_common_fps(tmp_path):
    p = make_dataset(tmp_path / "fps", n=2, steps=20, stats=False)   # 10 Hz
    down = list(WamStream(p, cameras=["front"], normalize=None, fps=5, shuffle_buffer=1, image_size=None))
    assert len(down) == 20
    for s in down:
        e, t = int(s["episode_id"][2:]), s["t"]
        np.testing.assert_allclose(s["state"][-1, 0], 1000 * e + 2 * t)
        assert psnr(s["frames"]["front"][-1], frame(e, 2 * t)) > 35
        assert s["timestamp"] == pytest.approx(t / 5)
    up = list(WamStream(p, cameras=[], normalize=None, fps=20, shuffle_buffer=1))
    assert len(up) == 2 * 39
    first = [s["state"][-1, 0] - 1000 * int(s["episode_id"][2:]) for s in up[:6]]
    np.testing.assert_allclose(first, [0, 0, 1, 1, 2, 2])  # nearest step


def test_resampled_delta_actions_keep_the_motion(tmp_path):
    """A per-step motion (action.eef_delta_pos) at another rate is the motion over the target step:
    at half the rate twice the source delta, at double half of it; none inside a timestamp gap."""
    from wamdata.format.writer import write_dataset
    from wamdata.schema import Episode

    ts = np.r_[np.arange(10), np.arange(20, 30)] / 10.0       # 10 Hz with a 1 s hole after 0.9 s
    ep = Episode("gap", "fixture", "teleop", "franka", 10.0, steps={"timestamp": ts}, action_space="eef_delta")
    ep.add("state.eef_pos", np.stack([np.arange(20.0), np.zeros(20), np.zeros(20)], 1))
    ep.add("action.eef_delta_pos", np.tile([0.01, 0.0, 0.0], (20, 1)))
    write_dataset(str(tmp_path / "d"), [ep])

    def deltas(fps):
        s = WamStream(str(tmp_path / "d"), cameras=[], normalize=None, fps=fps, shuffle_buffer=1,
                      history=1, action_horizon=1)
        return {w["t"]: (w["actions"][0, 0], w["actions_is_pad"][0]) for w in s}

    same = deltas(10)
    np.testing.assert_allclose([same[t][0] for t in range(10)], 0.01, rtol=1e-6)
    half = deltas(5)
    np.testing.assert_allclose([half[t][0] for t in range(5)], 0.02, rtol=1e-6)
    np.testing.assert_allclose([half[t][0] for t in (5, 6, 7, 8, 9)], 0.0, atol=1e-9)   # the hole
    assert not half[4][1] and half[6][1]   # inside the hole: padded (no source step near)
    np.testing.assert_allclose([half[t][0] for t in range(10, 14)], 0.02, rtol=1e-6)
    double = deltas(20)
    np.testing.assert_allclose([double[t][0] for t in range(19)], 0.005, rtol=1e-6)
    # the whole motion is kept: 10 source steps before the hole move 0.1 at any rate
    assert sum(v for t, (v, _) in double.items() if t < 20) == pytest.approx(0.1, rel=1e-5)


def test_mixing_step_rates_without_fps_warns(tmp_path, caplog):
    slow = make_dataset(tmp_path / "slow", n=1, steps=10, stats=False, cameras=())
    fast = make_dataset(tmp_path / "fast", n=1, steps=10, stats=False, cameras=(), fps=30.0, prefix="f")
    mix = {"datasets": [{"path": slow}, {"path": fast}]}
    with caplog.at_level("WARNING", logger="wamdata.loader.stream"):
        WamStream(mix, cameras=[], normalize=None)
    assert "10 Hz" in caplog.text and "30 Hz" in caplog.text and "fps=" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="wamdata.loader.stream"):
        WamStream(mix, cameras=[], normalize=None, fps=10)
    assert "step rates" not in caplog.text


def test_manifest_filter_episodes_split(ds, ego, tmp_path):
    (tmp_path / "view.txt").write_text("ego0001\nego0002\n")

    text = f"""
name: test-mix
split: {{train: 0.5, val: 0.5}}
datasets:
  - path: {os.path.relpath(ds, tmp_path)}
    weight: 2
    filter: "num_steps >= 20 and episode_id != 'ep0004'"
  - path: {ego}
    episodes_file: view.txt
"""
    (tmp_path / "m.yaml").write_text(text)
    m = load_manifest(str(tmp_path / "m.yaml"))
    assert m.datasets[0].path == ds and m.datasets[0].weight == 2 and m.datasets[1].episodes == ("ego0001", "ego0002")
    eps = {}
    for split in ("train", "val"):
        s = WamStream(str(tmp_path / "m.yaml"), cameras=[], normalize=None, split=split)
        eps[split] = {w["episode_id"] for w in s}
    assert not eps["train"] & eps["val"] and eps["val"]
    assert eps["train"] | eps["val"] == {"ep0000", "ep0001", "ep0003", "ego0001", "ego0002"}
    with pytest.raises(ConfigError, match="selection leaves no windows"):
        WamStream({"datasets": [{"path": ds, "filter": "num_steps > 1000"}]}, cameras=[], normalize=None)
    with pytest.raises(ConfigError, match="unknown split"):
        WamStream(str(tmp_path / "m.yaml"), cameras=[], normalize=None, split="test")
    with pytest.raises(ConfigError, match="filter"):
        load_manifest({"datasets": [{"path": ds, "filter": "__import__('os')"}]})


def test_manifest_mistakes_name_the_manifest_and_never_pass_silently(ds, tmp_path, caplog):
    def manifest(name, **entry):
        import yaml

        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"datasets": [{"path": ds, **entry}]}))
        return str(path)

    for name, entry, match in [
        ("syntax", {"filter": "num_steps >= "}, "not an expression"),
        ("in_str", {"filter": "task in 'task 1'"}, "needs a list"),
        ("weight", {"weight": "heavy"}, "weight must be a number"),
        ("episodes", {"episodes": "ep0001"}, "list of ids"),
    ]:
        path = manifest(name, **entry)
        with pytest.raises(ConfigError, match=match) as err:
            load_manifest(path)
        assert path in str(err.value), err.value
    (tmp_path / "view.txt").write_text("ep0001\n  # a comment, indented\nep001\n")
    with caplog.at_level("WARNING", logger="wamdata.loader.manifest"):
        s = WamStream(manifest("view", episodes_file="view.txt"), cameras=[], normalize=None)
    assert {w["episode_id"] for w in s} == {"ep0001"}
    assert "1 of the 2 listed episodes are not in the dataset" in caplog.text and "ep001" in caplog.text
    # a filter on a column the index lacks, a mistyped dataset path: the error says which manifest
    for name, entry, match in [("column", {"filter": "num_step >= 30"}, "num_step"),
                               ("typo", {"path": ds + "_typo"}, "_typo")]:
        path = manifest(name, **entry)
        with pytest.raises((ConfigError, FormatError), match=match) as err:
            WamStream(path, cameras=[], normalize=None)
        assert str(err.value).startswith(f"{path}: datasets[0]: ") and "\n" not in str(err.value), err.value
    # two datasets a sample could not be told apart by (its `dataset` field)
    with pytest.raises(ConfigError, match=r"both labelled 'ds'.*distinct 'name'"):
        load_manifest({"datasets": [{"path": ds}, {"path": ds, "filter": "success == True"}]})
    named = load_manifest({"datasets": [{"path": ds}, {"path": ds, "name": "ds-success"}]})
    assert [d.label for d in named.datasets] == ["ds", "ds-success"]


def test_manifest_split_ignores_key_order_and_warns_when_unused(ds, caplog):
    def episodes(split_map, split):
        return {w["episode_id"] for w in WamStream({"datasets": [ds], "split": split_map}, cameras=[],
                                                   normalize=None, split=split)}

    assert episodes({"train": 0.6, "val": 0.4}, "val") == episodes({"val": 0.4, "train": 0.6}, "val")
    with caplog.at_level("WARNING", logger="wamdata.loader.stream"):
        WamStream({"datasets": [ds], "split": {"train": 0.9, "val": 0.1}}, cameras=[], normalize=None)
    assert "no split= was given" in caplog.text


def test_manifest_at_a_url_resolves_relative_paths(tmp_path):
    import fsspec

    p = make_dataset("memory://bucket/data/six", n=2, steps=6, stats=False)
    with fsspec.open("memory://bucket/m/m.yaml", "w") as f:
        f.write("datasets:\n  - path: ../data/six\n")
    m = load_manifest("memory://bucket/m/m.yaml")
    assert m.datasets[0].path == p
    assert len(list(WamStream("memory://bucket/m/m.yaml", cameras=[], normalize=None))) == 12


def test_mixture_epoch_does_not_grow_with_consumers(ds, ego):
    """Consumers left without a small dataset's episodes share a block of it; the epoch must not
    count those shared windows once per consumer."""
    stream = WamStream({"datasets": [{"path": ds, "weight": 3}, {"path": ego, "weight": 1}]}, cameras=[],
                       normalize=None)
    total = stream.total_windows
    for n in (1, 2, 8, 42):
        assert sum(stream.consumer_length(0, c, n) for c in range(n)) == total


def test_shipped_manifests_parse():
    import glob

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = sorted(glob.glob(os.path.join(root, "manifests", "*.yaml")))
    assert len(files) >= 2
    for f in files:
        m = load_manifest(f)
        assert m.datasets and all(d.weight > 0 for d in m.datasets)


def test_unknown_camera_and_bad_config(ds):
    with pytest.raises(ConfigError, match="known: .*front"):
        WamStream(ds, cameras=["nope"], normalize=None)
    with pytest.raises(ConfigError):
        LoaderConfig(history=0)
    with pytest.raises(ConfigError, match="normalize"):
        LoaderConfig(normalize="zscore")


# ---- stages keep explicit state: one resume property for each ---------------------------------------

@pytest.mark.parametrize("buffer,max_live", [(1, 16), (7, 2), (50, 16)])
def test_scheduler_fast_forward_matches_uninterrupted(buffer, max_live):
    windows = [5, 0, 9, 3, 12, 1]

    def emits(s):
        out = []
        while (ev := s.step()) is not None:
            if ev[0] == "emit":
                out.append(ev[1:3])
        return out

    full = emits(WindowScheduler(windows, buffer, max_live, 1, 2))
    assert sorted(full) == sorted((p, a) for p, n in enumerate(windows) for a in range(n))
    for cut in range(len(full) + 1):
        s = WindowScheduler(windows, buffer, max_live, 1, 2)
        live = s.fast_forward(cut)
        assert len(live) <= max_live
        assert full[:cut] + emits(s) == full


def test_mixture_counts_and_blocks_are_pure():
    a = list(mixture_counts([1, 2, 0.5], 5000, 3, 1, 0))
    assert a == list(mixture_counts([1, 2, 0.5], 5000, 3, 1, 0))
    assert np.bincount(a).tolist()[1] / 5000 == pytest.approx(2 / 3.5, abs=0.03)
    w = np.array([5, 1, 1, 9, 3, 0, 4])
    owner = block_owners(w, 3)
    assert owner.tolist() == sorted(owner.tolist()) and set(owner.tolist()) == {0, 1, 2}  # contiguous, all used


@pytest.mark.parametrize("api", ["numpy", "torch"])
def test_batches_without_cameras_or_future_frames(ds, api):
    def batches(**kw):
        stream = WamStream(ds, normalize=None, shuffle_buffer=8, image_size=(8, 12), **kw)
        return list(stream.batches(5)) if api == "numpy" else list(stream.dataloader(batch_size=5))

    b = batches(cameras=[])[0]
    assert dict(b["frames"]) == {} and dict(b["future_frames"]) == {} and len(b["state"]) == 5
    b = batches(cameras=["front"], history=1, future=[])[0]
    assert tuple(b["frames"]["front"].shape) == (5, 1, 8, 12, 3)
    assert tuple(b["future_frames"]["front"].shape) == (5, 0, 8, 12, 3)


def test_batches_checkpoint_after_the_last_partial_batch_resumes_at_the_next_epoch(ds):
    """The last, partial batch is not replayed, and the epoch it ended is not left empty: a state
    taken after it (still inside the loop) resumes at the next epoch."""
    kw = dict(cameras=[], normalize=None, shuffle_buffer=8)
    s = WamStream(ds, **kw)
    sizes, state = [], None
    for b in s.batches(16):
        sizes.append(len(b["t"]))
        state = s.state_dict()
    assert sizes[-1] == sum(LENGTHS) % 16 != 0 and state["epoch"] == 1 and state["emitted"] == [0]
    r = WamStream(ds, **kw)
    r.load_state_dict(state)

    def batch_ids(batches):
        return [list(zip(b["episode_id"], b["t"].tolist())) for b in batches]

    assert batch_ids(r.batches(16)) == batch_ids(s.batches(16))   # both epoch 1


def test_a_loop_stopped_at_the_epoch_end_goes_on_with_the_next_epoch(ds):
    """islice(dl, len(dl)) or a step budget never exhausts the iterator: the next iteration must be
    the next epoch, not an empty remainder of this one."""

    kw = dict(cameras=[], normalize=None, shuffle_buffer=8)
    s = WamStream(ds, **kw)
    epochs = [ids(itertools.islice(s, sum(LENGTHS))) for _ in range(3)]
    assert [len(e) for e in epochs] == [sum(LENGTHS)] * 3 and epochs[0] != epochs[1] != epochs[2]
    assert s.epoch == 2   # the third epoch's last sample was taken; the roll happens on the next use
    assert s.state_dict()["epoch"] == 3


def test_numpy_batches_equal_stacked_samples(ds):
    kw = dict(cameras=["front", "wrist"], normalize=None, shuffle_buffer=20, image_size=(8, 12))
    samples = list(WamStream(ds, **kw))
    batches = list(WamStream(ds, **kw).batches(16))
    assert sum(len(b["t"]) for b in batches) == len(samples)
    b0 = batches[0]
    assert b0["frames"]["wrist"].shape == (16, 2, 8, 12, 3) and b0["language"] == [s["language"] for s in samples[:16]]
    for k in ("state", "actions", "actions_is_pad", "future_is_pad", "camera_mask"):
        np.testing.assert_array_equal(b0[k], np.stack([s[k] for s in samples[:16]]))
    np.testing.assert_array_equal(batches[-1]["future_frames"]["front"],
                                  np.stack([s["future_frames"]["front"] for s in samples[16 * (len(batches) - 1):]]))


def test_unreadable_episode_raise_or_skip(tmp_path):
    p = make_dataset(tmp_path / "bad", n=4, steps=10, stats=False)
    import wamdata

    rows = wamdata.open_dataset(p).episodes.to_pylist()
    bad = next(r for r in rows if r["episode_id"] == "ep0002")
    with open(f"{p}/{bad['shard']}", "r+b") as f:
        f.truncate(bad["offset"] + bad["size"] // 3)
    kw = dict(cameras=["front"], normalize=None, shuffle_buffer=8, image_size=(8, 8))
    with pytest.raises(FormatError, match="shard"):
        list(WamStream(p, **kw))
    full = ids(WamStream(p, on_error="skip", **kw))
    assert set(full) == all_windows([10] * 4) - {("ep0002", t) for t in range(10)}
    s = WamStream(p, on_error="skip", **kw)
    it = iter(s)
    head = [next(it) for _ in range(11)]
    r = WamStream(p, on_error="skip", **kw)
    r.load_state_dict(s.state_dict())
    assert ids(head) + ids(r) == full


def test_skip_in_a_shared_shard_loses_only_the_bad_episode_and_resumes_exactly(tmp_path):
    """Several episodes per shard, the shard cut inside its last episode: skipping drops that episode
    alone, and a resume from any point reads each episode once more at most — it must not scan on
    through the shard (into the bad episode) for one it already passed."""
    import wamdata

    lengths = [20, 25, 15, 30, 20, 10, 18, 22]
    p = make_dataset(tmp_path / "multi", n=len(lengths), steps=lengths, shard_size_mb=0.03, stats=False)
    rows = wamdata.open_dataset(p).episodes.to_pylist()
    first = [r for r in rows if r["shard"] == rows[0]["shard"]]
    assert len(first) >= 3, "the fixture must share shards"
    bad = max(first, key=lambda r: r["offset"])
    with open(f"{p}/{bad['shard']}", "r+b") as f:
        f.truncate(bad["offset"] + 512 + 100)   # past the first tar header, inside its data
    kw = dict(cameras=["front"], normalize=None, shuffle_buffer=16, image_size=(8, 8), on_error="skip")
    full = ids(WamStream(p, **kw))
    assert set(full) == all_windows(lengths) - {(bad["episode_id"], t) for t in range(bad["num_steps"])}
    for cut in range(1, len(full), 3):
        s = WamStream(p, **kw)
        head = list(itertools.islice(s, cut))
        r = WamStream(p, **kw)
        r.load_state_dict(s.state_dict())
        assert ids(head) + ids(r) == full, cut


def test_skip_covers_a_missing_shard(tmp_path, caplog):
    import wamdata

    p = make_dataset(tmp_path / "gone", n=4, steps=10, stats=False)
    gone = next(r for r in wamdata.open_dataset(p).episodes.to_pylist() if r["episode_id"] == "ep0001")
    os.remove(f"{p}/{gone['shard']}")
    kw = dict(cameras=["front"], normalize=None, shuffle_buffer=8, image_size=(8, 8))
    with pytest.raises(FormatError, match=f"{gone['shard']}: shard listed in the index is missing"):
        list(WamStream(p, **kw))
    with caplog.at_level("WARNING", logger="wamdata.loader.stream"):
        got = ids(WamStream(p, on_error="skip", **kw))
    assert set(got) == all_windows([10] * 4) - {("ep0001", t) for t in range(10)}
    assert "ep0001" in caplog.text and os.path.basename(gone["shard"]) in caplog.text


def test_fsspec_url_and_shared_shards(tmp_path):
    """An fsspec URL, and several episodes per shard (whole-shard sequential reads vs byte ranges)."""
    p = make_dataset("memory://loader-test/ds", n=3, steps=10)
    assert set(ids(WamStream(p, cameras=["front"], image_size=(8, 8)))) == all_windows([10] * 3)
    q = make_dataset(tmp_path / "big_shards", n=7, steps=[8, 9, 10, 11, 12, 13, 14], shard_size_mb=0.03, stats=False)
    import wamdata

    assert 1 < len(wamdata.open_dataset(q).shards) < 7
    stream = WamStream(q, cameras=["front"], normalize=None, image_size=(8, 8), shuffle_buffer=10)
    got = [w for c in range(3) for _, w in stream.iter_consumer(0, c, 3)]
    assert sorted(ids(got)) == sorted(all_windows([8, 9, 10, 11, 12, 13, 14]))
