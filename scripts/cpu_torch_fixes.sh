#!/usr/bin/env bash
# Makes a venv's PyPI torchvision usable next to the local CPU torch (shared by the vLLM and
# lerobot environments). Usage: scripts/cpu_torch_fixes.sh VENV. Idempotent.
set -euo pipefail
VENV=$1
# 1. CUDA-only packages pulled in as dependencies break imports next to CPU torch: remove them.
"$VENV/bin/pip" uninstall --quiet -y torchcodec torchaudio triton 2>/dev/null || true
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# 2. torchvision's fake-op registrations for nms/qnms are unconditional and fail without its C
#    ops; guard them so its pure-Python parts (transforms, video utilities) import.
"$VENV/bin/python" - "$SITE/torchvision/_meta_registrations.py" <<'PYEOF'
import re, sys
path = sys.argv[1]
src = open(path).read()
if "wallwm-guard" not in src:
    src = re.sub(
        r'^(@register_meta\("(?:nms|qnms)"\)|@torch\.library\.register_fake\("torchvision::(?:nms|qnms)"\))',
        r'@(lambda f: f)  # wallwm-guard\n# \1', src, flags=re.M)
    open(path, "w").write(src)
PYEOF
