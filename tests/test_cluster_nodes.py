"""A real two-node Ray cluster on this machine (ray.cluster_utils.Cluster: a head and a second raylet,
each its own node): a conversion joined to it lands tasks on both nodes, the output given as an fsspec
URL both see; the loader's ray_dataset().streaming_split feeds two trainer actors disjoint shares.
Slow (starts its own cluster in a subprocess): `make test-slow`."""

import json
import os
import subprocess
import sys

import pytest

from tests.fixtures.synthetic import write_npz_tree

pytestmark = pytest.mark.slow


def test_two_node_cluster_converts_on_both_nodes_and_splits_to_two_trainers(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    written = write_npz_tree(tmp_path / "src", n=8, T=6)
    out_url = f"file://{tmp_path / 'ds'}"
    env = dict(os.environ, PYTHONPATH=root, RAY_ADDRESS="")
    proc = subprocess.run([sys.executable, "-m", "tests.fixtures.cluster", str(tmp_path / "src"), out_url],
                          env=env, capture_output=True, text=True, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["cluster_nodes"] == 2
    assert got["converted"] == 8 and got["failed"] == 0 and sorted(got["ids"]) == sorted(written)
    assert len(set(got["episode_nodes"])) == 2, "conversion tasks ran on both nodes"
    a, b = ({tuple(w) for w in share} for share in got["shares"])
    assert a and b and not a & b
    assert len(a | b) == sum(got["steps"]) == 8 * 6
