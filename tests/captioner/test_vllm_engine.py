"""The in-process ``vllm`` backend's engine (``VllmEngineActor``) on the CPU build of vLLM.

The Ray actor around it needs GPUs (``num_gpus=1``); the engine class itself -- batched chat
generation with structured outputs, results keyed by event id -- runs here inside
``.venv-vllm`` with wallwm's sources on the path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from wallwm.captioner.parsing import parse_caption

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-vllm"


def test_engine_generates_schema_valid_captions_keyed_by_event(tmp_path):
    if not (VENV / ".wallwm-vllm-ready").exists():
        pytest.skip(f"the vLLM CPU environment {VENV} could not be built")
    python = str(VENV / "bin" / "python")
    model = tmp_path / "tiny"
    subprocess.run(
        [python, str(ROOT / "tests/vllm_support/build_tiny_qwen2vl.py"), str(model)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    # its own process group: on a timeout the engine-core process vLLM spawns goes too, instead
    # of spinning on as an orphan beside the rest of the suite
    smoke = subprocess.Popen(
        [python, str(ROOT / "tests/vllm_support/engine_smoke.py"), str(model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = smoke.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(smoke.pid, signal.SIGKILL)
        stdout, stderr = smoke.communicate()
        pytest.fail(f"the engine smoke run took over 400 s; its log ends: {stderr[-3000:]}")
    assert smoke.returncode == 0, stderr[-3000:]
    results = [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert [r["event_id"] for r in results] == [f"event-{i}" for i in range(5)]
    for r in results:
        parse_caption(r["text"])
        assert r["prompt_tokens"] > 50 and r["completion_tokens"] > 0
