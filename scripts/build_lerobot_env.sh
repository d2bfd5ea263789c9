#!/usr/bin/env bash
# Builds .venv-lerobot: the `lerobot` library in its own virtual environment, used by the tests
# that ingest datasets written by LeRobot itself (not by our own fixtures). lerobot pins
# torch<2.11 and pulls CUDA wheels from PyPI, so it is installed without dependencies next to
# the local CPU torch, plus the few packages its dataset writer imports. Idempotent.
set -euo pipefail
VENV=${1:-.venv-lerobot}
PY=${PYTHON:-python3.11}
STAMP="$VENV/.wallwm-lerobot-ready"
# (an environment from before torchcodec was added is rebuilt)
[ -f "$STAMP" ] && "$VENV/bin/python" -c "import torchcodec" 2>/dev/null && exit 0
rm -rf "$VENV"
"$PY" -m venv "$VENV"
PIP="$VENV/bin/pip install --quiet --disable-pip-version-check"
$PIP --upgrade pip
$PIP "torch==2.13.0" "torchvision==0.28.0"
$PIP --no-deps "lerobot==0.4.4" accelerate safetensors
# lerobot 0.3 writes format v2.1: kept beside it, put first on PYTHONPATH by the tests.
$PIP --no-deps --target "$VENV/lerobot-0.3" "lerobot==0.3.3"
$PIP "datasets>=4,<5" "huggingface-hub>=0.34.2,<0.36" "av>=15" jsonlines "packaging<26" \
    "draccus==0.10.0" einops deepdiff termcolor gymnasium "imageio[ffmpeg]" \
    opencv-python-headless pandas pillow psutil pyyaml
# CUDA-only leftovers removed, torchvision guarded for CPU torch (shared fixes).
bash "$(dirname "$0")/cpu_torch_fixes.sh" "$VENV"
# LeRobot decodes video with torchcodec (torchvision 0.28 has no VideoReader to fall back on):
# the CPU release built against torch 2.13, installed after the fixes (which remove the CUDA
# torchcodec dependencies pull in); it loads Debian's ffmpeg libraries (`make system-deps`).
$PIP --no-deps "torchcodec==0.13.0"
"$VENV/bin/python" -c "import lerobot; from lerobot.datasets.lerobot_dataset import LeRobotDataset; print('lerobot', lerobot.__version__)"
"$VENV/bin/python" -c "from torchcodec.decoders import VideoDecoder; print('torchcodec ok')"
PYTHONPATH="$VENV/lerobot-0.3" "$VENV/bin/python" -c "from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION as v; assert v == 'v2.1', v"
touch "$STAMP"
