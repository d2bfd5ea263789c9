"""Optimisers for the trainer: Muon for 2-D hidden matrices, AdamW for the rest; schedule; EMA.

``torch.optim.Muon`` always runs its Newton-Schulz orthogonalisation in bfloat16, which is
2.7-15x slower than float32 on CPUs without bf16 matrix units (measured on an AVX2-only EPYC)
but faster on CPUs that have them (2.8x on this project's AVX-512 Xeon, BENCHMARKS.md).
:class:`Muon` here follows the same update rule (EMA momentum, Nesterov, the quintic
Newton-Schulz iteration with coefficients (3.4445, -4.7750, 2.0315), learning-rate adjustment,
decoupled weight decay) and orthogonalises in a chosen dtype; ``"auto"`` (the default) times both
once per process on the parameters' device and keeps the faster.

Matrices of the same shape are orthogonalised together, as one batched Newton-Schulz over their
stack (a few large matrix products instead of hundreds of small launches: the optimiser was a
third of a GPU step matrix by matrix), and the momentum, decay and update run as ``torch._foreach``
ops over each group; the result is the per-matrix rule (tested against ``torch.optim.Muon`` and
against the matrix-by-matrix iteration).

Which parameters get Muon (:func:`split_params`): 2-D weight matrices of hidden layers. Embedding
tables, norms, biases, and input/output projections (heads) go to AdamW, as in the Muon recipe.
"""

from __future__ import annotations

import functools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import AdamW, Optimizer

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(
    grad_AB: torch.Tensor, steps: int = 5, eps: float = 1e-7, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Approximately orthogonalise a matrix, or each of a stack (..., A, B).

    Returns U S' V^T with S' roughly in [0.5, 1.5].
    """
    a, b, c = NS_COEFFICIENTS
    x = grad_AB.to(dtype)
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT
    # spectral norm <= Frobenius norm <= 1, per matrix
    x = x / torch.linalg.matrix_norm(x, keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    if transposed:
        x = x.mT
    out: torch.Tensor = x.to(grad_AB.dtype)
    return out


@functools.cache
def fastest_ns_dtype(device_type: str = "cpu") -> torch.dtype:
    """bfloat16 on GPUs; on CPUs whichever of float32/bfloat16 runs Newton-Schulz faster here."""
    if device_type != "cpu":
        return torch.bfloat16
    g = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        newton_schulz(g, dtype=dtype)  # warm-up
        t = time.perf_counter()
        for _ in range(3):
            newton_schulz(g, dtype=dtype)
        timings[dtype] = time.perf_counter() - t
    return min(timings, key=lambda d: timings[d])


def adjusted_lr(lr: float, shape: torch.Size, mode: str | None) -> float:
    """Muon's per-matrix learning-rate scale.

    ``match_rms_adamw`` (Moonlight): 0.2 * sqrt(max(A, B)), so AdamW learning rates carry over;
    ``original``: sqrt(max(1, A / B)).
    """
    rows, cols = shape[:2]
    if mode == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    if mode in (None, "original"):
        return lr * math.sqrt(max(1.0, rows / cols))
    return lr


class Muon(Optimizer):
    """Muon with a selectable orthogonalisation dtype (float32 for CPUs)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        eps: float = 1e-7,
        adjust_lr_fn: str | None = "match_rms_adamw",
        ns_dtype: torch.dtype | str = "auto",
    ) -> None:
        """Create the optimiser (every parameter must be a 2-D matrix)."""
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            "eps": eps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        super().__init__(params, defaults)
        if ns_dtype == "auto":
            first = next((p for g in self.param_groups for p in g["params"]), None)
            ns_dtype = fastest_ns_dtype(first.device.type if first is not None else "cpu")
        self.ns_dtype: torch.dtype = ns_dtype  # type: ignore[assignment]
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D matrices only, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter with a gradient (same-shape matrices together)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            same_shape: dict[tuple[Any, ...], list[torch.Tensor]] = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    same_shape[(p.shape, p.dtype, p.device)].append(p)
            for params in same_shape.values():
                self._update(group, params)
        return loss

    def _update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """Muon's update of same-shape matrices: momentum, Nesterov, batched Newton-Schulz."""
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            bufs.append(state["momentum_buffer"])
        momentum = group["momentum"]
        torch._foreach_lerp_(bufs, grads, 1 - momentum)  # type: ignore[arg-type]
        updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs  # type: ignore[arg-type]
        stacked = newton_schulz(
            torch.stack(updates), group["ns_steps"], group["eps"], self.ns_dtype
        )
        torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        torch._foreach_add_(
            params,
            list(stacked.unbind()),
            alpha=-adjusted_lr(group["lr"], params[0].shape, group["adjust_lr_fn"]),
        )


#: Parameters under this prefix belong to a pretrained backbone (``model.vlm``): AdamW at
#: ``backbone_lr_scale`` x the learning rate -- Muon's orthogonalised updates are made for
#: training from scratch, and pretrained weights (or their LoRA adapters) want smaller steps.
BACKBONE_PREFIX = "vlm."


def split_params(
    model: nn.Module, head_names: tuple[str, ...] = ("head", "embed", "proj_in", "proj_out")
) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(Muon, AdamW, backbone AdamW) params: hidden 2-D weights, the rest, the backbone's."""
    muon: list[nn.Parameter] = []
    adamw: list[nn.Parameter] = []
    backbone: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith(BACKBONE_PREFIX):
            backbone.append(p)
            continue
        hidden = p.ndim == 2 and not any(h in name for h in head_names)
        (muon if hidden else adamw).append(p)
    return muon, adamw, backbone


class MuonAdamW:
    """Muon on hidden matrices + AdamW on the rest, stepped and checkpointed as one."""

    def __init__(
        self,
        model: nn.Module,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        ns_dtype: torch.dtype | str = "auto",
        backbone_lr_scale: float = 0.1,
    ) -> None:
        """Build both optimisers over ``model``'s parameters.

        Both use the same learning rate; Muon's is scaled per matrix (:func:`adjusted_lr`),
        a backbone's (:data:`BACKBONE_PREFIX`) by ``backbone_lr_scale``, without weight decay
        (LoRA adapters and pretrained weights are not pulled toward zero).
        """
        muon_params, adamw_params, backbone_params = split_params(model)
        self.muon = (
            Muon(muon_params, lr=lr, weight_decay=weight_decay, ns_dtype=ns_dtype)
            if muon_params
            else None
        )
        groups: list[dict[str, Any]] = [{"params": adamw_params}]
        if backbone_params:  # the schedule sets lr x lr_scale on this group
            groups.append(
                {"params": backbone_params, "lr_scale": backbone_lr_scale, "weight_decay": 0.0}
            )
        self.adamw = AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas)
        self.optimizers: list[Optimizer] = [o for o in (self.muon, self.adamw) if o is not None]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """All groups (schedulers set ``lr`` on these)."""
        return [g for o in self.optimizers for g in o.param_groups]

    def step(self) -> None:
        """Step both optimisers."""
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear gradients."""
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """Both optimisers' states."""
        return {
            "muon": self.muon.state_dict() if self.muon else None,
            "adamw": self.adamw.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore both optimisers."""
        if self.muon is not None:
            self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a model's parameters and buffers (evaluation weights).

    The shadow lives on the model's device; it averages the module itself (never a
    data-parallel wrapper, whose state dict names differ). The decay warms up: update ``n``
    (from 0) uses ``min(decay, (1 + n) / (10 + n))``, so the shadow forgets the random
    initialisation within the first few hundred steps -- at a fixed 0.999 it would still be
    55 % the initial weights after 600 steps, 37 % after 1,000, and a short run's policy (what
    is served and evaluated) would be mostly untrained.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        """Start from the model's current weights."""
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay of the next update (warm-up, see the class docstring)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the model's current weights in (one fused op over all float tensors)."""
        live, averaged = [], []
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                live.append(v)
                averaged.append(self.shadow[k])
            else:
                self.shadow[k].copy_(v)
        torch._foreach_lerp_(averaged, live, 1 - self.current_decay())
        self.updates += 1

    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model``."""
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights, the decay and the number of updates (the warm-up's clock)."""
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore (onto the device the shadow is on, whichever device the state was saved on).

        Checkpoints from before the warm-up count as warmed up.
        """
        device = next(iter(self.shadow.values())).device if self.shadow else None
        self.decay = state["decay"]
        self.updates = int(state.get("updates", 1_000_000))
        self.shadow = {k: v.to(device, copy=True) for k, v in state["shadow"].items()}
