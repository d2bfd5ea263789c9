"""Run wallwm's in-process vLLM engine class on CPU (inside .venv-vllm; wallwm's src on
PYTHONPATH): ``python engine_smoke.py MODEL_DIR`` prints one JSON line per result."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np

from wallwm.captioner.backends import VllmBackendConfig, VllmEngineActor
from wallwm.captioner.prompting import EventFacts, build_request, load_prompt

if __name__ == "__main__":
    img = cv2.imencode(".jpg", np.full((64, 64, 3), 120, np.uint8))[1].tobytes()
    kf = (("cam", "first", img), ("cam", "middle", img), ("cam", "last", img))
    requests = [
        build_request(
            EventFacts(
                f"event-{i}", "open the drawer", i, 5, i, i + 1, 0.1, (), None, keyframes=kf
            ),
            load_prompt(),
        )
        for i in range(5)
    ]
    cfg = VllmBackendConfig(
        model=sys.argv[1],
        max_model_len=2048,
        max_images_per_prompt=3,
        max_tokens=400,
        engine_kwargs={
            "enforce_eager": True,
            "kv_cache_memory_bytes": 256 * 1024 * 1024,
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        },
    )
    engine = VllmEngineActor(cfg)
    for r in engine.generate(requests):
        print(
            "RESULT "
            + json.dumps(
                {
                    "event_id": r.event_id,
                    "text": r.text,
                    "prompt_tokens": r.prompt_tokens,
                    "completion_tokens": r.completion_tokens,
                }
            ),
            flush=True,
        )
