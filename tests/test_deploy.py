"""The KubeRay RayJob shipped in deploy/ stays runnable: its entrypoint is a valid `wamdata convert`
command line that joins the cluster, and the image it names is the one the Dockerfile documents."""

import shlex
from pathlib import Path

import yaml

from wamdata.cli import build_parser

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kuberay"


def test_rayjob_entrypoint_is_a_valid_convert_command_joining_the_cluster():
    job = yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "wamdata"
    args = build_parser().parse_args(argv[1:])
    assert args.ray_address == "auto" and "://" in args.output and args.source == "droid"
    cluster = job["spec"]["rayClusterSpec"]
    images = {c["image"] for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1, "head and workers run the same wamdata"
    ray_version = cluster["rayVersion"]
    assert f"rayproject/ray:{ray_version}-" in (DEPLOY / "Dockerfile").read_text()
