"""`--ray-address`: the job joins a running Ray cluster (a head started with `ray start`) instead of
starting its own. Slow (starts a separate Ray head): `make test-slow`."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from tests.fixtures.synthetic import SOURCE, write_npz_tree

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_convert_joins_a_running_cluster(tmp_path):
    bin_dir = os.path.dirname(sys.executable)
    ray_cli = shutil.which("ray", path=bin_dir) or os.path.join(bin_dir, "ray")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # `ray start` enables token authentication; the driver must opt in to present the token
    env = dict(os.environ, PYTHONPATH=root, RAY_ADDRESS="", RAY_AUTH_MODE="token")
    port = _free_port()
    # --block keeps `ray start` in the foreground: stopping it stops this head only (`ray stop` would
    # stop every Ray on the machine, a test session's own included)
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port",
                             str(port), "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    try:
        for _ in range(120):  # the head takes a few seconds to come up
            if subprocess.run([ray_cli, "status", "--address", f"127.0.0.1:{port}"], env=env,
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        write_npz_tree(tmp_path / "src", n=4, T=10)
        proc = subprocess.run([sys.executable, "-m", "wamdata.cli", "convert", "--source", SOURCE, "--input",
                               str(tmp_path / "src"), "--output", str(tmp_path / "ds"), "--ray-address",
                               f"127.0.0.1:{port}", "--quiet"], env=env, capture_output=True, text=True, cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "converted 4 episodes" in proc.stdout
        info = json.loads((tmp_path / "ds" / "wamdata.json").read_text())
        assert info["counts"]["episodes"] == 4
    finally:
        head.terminate()
        head.wait(timeout=60)

