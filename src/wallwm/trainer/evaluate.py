"""Closed-loop evaluation of a policy in MetaWorld (extra ``sim``).

Each task runs ``episodes`` episodes from initial states the recorder never used (seeds offset by
``HELD_OUT_SEED``), rendering the same camera at the model's image size; success is MetaWorld's
own ``info["success"]`` at any step within ``max_steps``. Reported per task with a 95 % Wilson
interval, and overall.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wallwm.trainer.policy import Observation, Policy, wilson_interval

HELD_OUT_SEED = 1_000_000


def evaluate_metaworld(
    policy: Policy,
    tasks: list[str],
    episodes: int,
    image_size: int,
    camera: str = "corner",
    max_steps: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Success rates (with 95 % intervals) per task and overall."""
    import cv2

    from wallwm.pipeline.sim.metaworld import instruction_for, make_env, render

    per_task: dict[str, dict[str, Any]] = {}
    for task in tasks:
        successes = 0
        for i in range(episodes):
            env_seed = HELD_OUT_SEED + seed * 100_003 + i
            env = make_env(task, env_seed, i, camera, 128)
            try:
                obs, _ = env.reset(seed=env_seed)
                policy.reset()
                for _ in range(max_steps):
                    frame = cv2.resize(
                        render(env, camera), (image_size, image_size), interpolation=cv2.INTER_AREA
                    )
                    action = policy.act(
                        Observation(frame, np.asarray(obs[:4], np.float32), instruction_for(task))
                    )
                    obs, _r, _term, _trunc, info = env.step(np.clip(action, -1.0, 1.0))
                    if info.get("success"):
                        successes += 1
                        break
            finally:
                env.close()
        low, high = wilson_interval(successes, episodes)
        per_task[task] = {
            "episodes": episodes,
            "successes": successes,
            "success_rate": successes / episodes,
            "ci95": [low, high],
        }
    total = sum(t["successes"] for t in per_task.values())
    n = sum(t["episodes"] for t in per_task.values())
    low, high = wilson_interval(total, n)
    return {
        "per_task": per_task,
        "overall": {
            "episodes": n,
            "successes": total,
            "success_rate": total / max(n, 1),
            "ci95": [low, high],
        },
    }
