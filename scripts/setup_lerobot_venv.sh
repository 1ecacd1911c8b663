#!/usr/bin/env bash
# Set up .venv-lerobot: a separate venv with the real `lerobot` 0.4.x (LeRobot dataset format v3.0) and
# wamdata installed editable, for the interop tests (`pytest -m lerobot`, `make test-lerobot`).
#
# lerobot 0.4.4 (the newest 0.4.x; lerobot >= 0.5 needs Python >= 3.12) pins torch<2.11,
# torchvision<0.26 and torchcodec<0.11, but the torch we have is the CPU build 2.13.0 (a bare
# `pip install torch` pulls a multi-GB CUDA build). The dataset code we test (LeRobotDataset, its
# parquet and video readers) runs on torch 2.13, so lerobot goes in with --no-deps and we list its
# dataset-side dependencies ourselves:
#   - torchcodec 0.13.0: the CPU wheel built against torch 2.13 (0.11 and >= 0.14 link CUDA libraries,
#     0.9/0.10 are built against an older torch ABI);
#   - torchvision 0.28.0 (the one for torch 2.13) is a CUDA build whose C extension cannot load next to
#     CPU torch; lerobot only needs its pure-Python parts, but torchvision registers fake kernels for
#     two ops of that extension at import. A tiny import hook (_wamdata_tv_shim, installed below)
#     declares those two op schemas first, so `import torchvision` works. It changes nothing else.
#
# Video decoding: torchcodec needs the system FFmpeg libraries (libavcodec ...). When they are missing
# the script installs the `ffmpeg` Debian package if it runs as root; otherwise it says what to do.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-lerobot}
PY=${PYTHON:-python3}
TORCH=${TORCH_VERSION:-2.13.0}
TORCHVISION=${TORCHVISION_VERSION:-0.28.0}
TORCHCODEC=${TORCHCODEC_VERSION:-0.13.0}
LEROBOT=${LEROBOT_VERSION:-0.4.4}

STAMP="$VENV/.installed"
if [ -f "$STAMP" ] && [ "$STAMP" -nt "$0" ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0  # already set up by this version of the script
fi

if ! command -v ffmpeg >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  else
    echo "warning: no system FFmpeg; torchcodec needs it (apt-get install ffmpeg)" >&2
  fi
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q "torch==$TORCH" "torchvision==$TORCHVISION"
"$PIP" install -q --no-deps "lerobot==$LEROBOT" "torchcodec==$TORCHCODEC"
"$PIP" install -q \
  "datasets>=4.0.0,<5.0.0" "huggingface-hub>=0.34.2,<0.36.0" "av>=15.0.0,<16.0.0" \
  "draccus==0.10.0" "jsonlines>=4.0.0,<5.0.0" "packaging>=24.2,<26.0" "deepdiff>=7.0.1,<9.0.0" \
  "termcolor>=2.4.0,<4.0.0" "einops>=0.8.0,<0.9.0" "opencv-python-headless>=4.9.0,<4.13.0" \
  "accelerate>=1.10.0,<2.0.0" pandas pillow fsspec pytest
"$PIP" install -q -e .

SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cat > "$SITE/_wamdata_tv_shim.py" <<'PY'
"""Let the pure-Python parts of a CUDA torchvision import next to CPU torch (see setup_lerobot_venv.sh)."""
import importlib.abc
import sys

_SCHEMAS = [
    ("torchvision::nms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"),
    ("torchvision::qnms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"),
]


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            for schema in _SCHEMAS:
                try:
                    torch.library.define(*schema)
                except RuntimeError:
                    pass  # the real extension loaded: its ops exist already
        return None


sys.meta_path.insert(0, _Finder())
PY
echo "import _wamdata_tv_shim" > "$SITE/_wamdata_tv_shim.pth"
"$VENV/bin/python" -c "import lerobot, torch; from lerobot.datasets.lerobot_dataset import LeRobotDataset; import torchcodec; from torchcodec.decoders import VideoDecoder; print('lerobot', lerobot.__version__, 'torch', torch.__version__, 'torchcodec', torchcodec.__version__)"
touch "$STAMP"
