"""Closed-loop evaluation of a policy in MetaWorld (extra ``sim``).

Each task runs ``episodes`` episodes from initial states the recorder never used (seeds offset by
``HELD_OUT_SEED``), rendering the same camera at the model's image size; success is MetaWorld's
own ``info["success"]`` at any step within ``max_steps`` (MetaWorld's own limit, 500, by
default). Reported per task with a 95 % Wilson interval and the steps each success took, and
overall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wallwm.trainer.policy import Observation, Policy, wilson_interval
from wallwm.trainer.view import resize_frame

HELD_OUT_SEED = 1_000_000


def evaluate_metaworld(
    policy: Policy,
    tasks: list[str],
    episodes: int,
    image_size: int,
    camera: str | Sequence[str] = "corner",
    max_steps: int = 500,
    seed: int = 0,
    state_dim: int = 4,
) -> dict[str, Any]:
    """Success rates (with 95 % intervals) per task and overall.

    ``camera`` names the MetaWorld camera, or the cameras of a multi-camera model in its order
    (each rendered every step and stacked as the (N, S, S, 3) image). The policy's state is
    the first ``state_dim`` entries of MetaWorld's observation, as the recorder stores them
    (4: hand xyz and gripper; 39: the whole observation, ``sim record --state observation``).
    """
    cameras = [camera] if isinstance(camera, str) else list(camera)
    from wallwm.pipeline.sim.metaworld import instruction_for, make_env, render, state_names

    if state_dim not in (len(state_names("proprio")), len(state_names("observation"))):
        raise ValueError(f"a MetaWorld policy takes a 4-D or 39-D state, not {state_dim}-D")

    per_task: dict[str, dict[str, Any]] = {}
    for task in tasks:
        successes, steps_to_success, rollouts = 0, [], []
        for i in range(episodes):
            env_seed = HELD_OUT_SEED + seed * 100_003 + i
            env = make_env(task, env_seed, i, cameras[0], 128)
            try:
                obs, _ = env.reset(seed=env_seed)
                policy.reset()
                info: dict[str, Any] = {}
                step = -1
                for step in range(max_steps):
                    views = [resize_frame(render(env, c), image_size) for c in cameras]
                    frame = views[0] if len(views) == 1 else np.stack(views)
                    action = policy.act(
                        Observation(
                            frame, np.asarray(obs[:state_dim], np.float32), instruction_for(task)
                        )
                    )
                    obs, _r, _term, _trunc, info = env.step(np.clip(action, -1.0, 1.0))
                    if info.get("success"):
                        successes += 1
                        steps_to_success.append(step + 1)
                        break
            finally:
                env.close()
            # which events the plan went through, and the one it was in at the end (a failure's
            # event: what ``clusters attribution`` maps to clusters)
            trace = policy.event_trace() if hasattr(policy, "event_trace") else []
            rollouts.append(
                {"episode": i, "success": bool(info.get("success")), "steps": step + 1,
                 "events": trace, "last_event": trace[-1] if trace else None}
            )  # fmt: skip
        low, high = wilson_interval(successes, episodes)
        per_task[task] = {
            "episodes": episodes,
            "successes": successes,
            "success_rate": successes / episodes,
            "ci95": [low, high],
            # how long successes took: success under a tighter step limit can be read off
            "steps_to_success": steps_to_success,
            "rollouts": rollouts,
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


def evaluate_offline(
    checkpoint: str,
    batches: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    backbone_path: str | None = None,
) -> dict[str, Any]:
    """Metrics on the events of the episodes held out of training (see ``TrainConfig.holdout``).

    Losses of every head (flow, planner, world, end), the error of sampled actions against the
    recorded ones (in normalised units, masked), end-of-event accuracy (event mode), and top-1
    accuracy of retrieving the true next caption from the planner's prediction. Runs on
    ``device`` (``auto``: CUDA when present) whichever device the checkpoint was trained on.
    """
    import torch

    from wallwm.trainer.data import ClusterBalancedSampler, EventFrameDataset, make_loader
    from wallwm.trainer.device import inference_mode, resolve_device, to_device
    from wallwm.trainer.factory import model_from_checkpoint
    from wallwm.trainer.serving.engine import load_checkpoint

    state = load_checkpoint(checkpoint)
    where = resolve_device(device)
    cfg = state["config"]
    model = model_from_checkpoint(state, str(checkpoint), backbone_path)
    model.to(where).eval()
    data = EventFrameDataset(state["dataset"]["view"], cfg["h_max"], cfg["chunk_len"], seed + 1)
    held = set(state.get("held_out_events", []))
    weights = np.array([1.0 if e["event_id"] in held else 0.0 for e in data.events])
    if not weights.any():
        raise ValueError(f"{checkpoint}: no held-out events (train with --holdout > 0)")
    sampler = ClusterBalancedSampler(weights, batches * batch_size, seed=seed)
    sums: dict[str, float] = {}
    count = 0
    captions = sorted({c for _, c in state.get("caption_bank", [])})
    generator = torch.Generator().manual_seed(seed)
    with inference_mode(where, precision):
        bank = model.embed_texts(captions).float() if captions else None
        for cpu_batch in make_loader(data, batch_size, 0, sampler):
            batch = to_device(cpu_batch, where)
            metrics = {k: float(v) for k, v in model.losses(batch).items()}
            metrics.update(_sampled_metrics(model, batch, generator, captions, bank))
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    return {
        "held_out_events": len(held),
        "batches": count,
        "metrics": {k: v / count for k, v in sums.items()},
    }


def _sampled_metrics(
    model: Any, batch: dict[str, Any], generator: Any, captions: list[str], bank: Any
) -> dict[str, float]:
    """Action error, end-of-event accuracy and next-event retrieval of sampled outputs."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    out = model.act(batch, 10, generator)
    target, mask = model.targets(batch)
    predicted = (out["actions_BHA"] - model.get_buffer("a_mean")) / model.get_buffer("a_std")
    err = ((predicted - target) ** 2).mean(-1)
    metrics = {"action_mse": float((err * mask).sum() / mask.sum().clamp(min=1))}
    if "end_of_event_B" in out:
        hit = (out["end_of_event_B"] > 0.5).float() == batch["end_of_event"]
        metrics["end_accuracy"] = float(hit.float().mean())
    if bank is not None:
        has_next = [i for i, c in enumerate(batch["next_caption"]) if c in captions]
        if has_next:
            sims = F.cosine_similarity(out["next_event_BD"][has_next, None], bank[None], dim=-1)
            truth = torch.tensor(
                [captions.index(batch["next_caption"][i]) for i in has_next], device=sims.device
            )
            metrics["next_event_top1"] = float((sims.argmax(1) == truth).float().mean())
    return metrics
