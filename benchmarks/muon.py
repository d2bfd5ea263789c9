"""Optimizer step time on CPU: wallwm Muon (fp32 / bf16 / auto) vs torch.optim.Muon (bf16) vs AdamW.

Six 384x384 hidden matrices plus two 384x1536 MLP matrices (roughly one block of the `small`
preset's size class); gradients are fixed random tensors; the mean of 20 steps after 3 warm-up
steps is reported. Usage: ``python benchmarks/muon.py``
"""

from __future__ import annotations

import time

import torch
from rich.console import Console
from rich.table import Table

from wallwm.trainer.optim import Muon


def params() -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    shapes = [(384, 384)] * 6 + [(384, 1536), (1536, 384)]
    out = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(*shape, generator=gen) * 0.02)
        p.grad = torch.randn(*shape, generator=gen)
        out.append(p)
    return out


def time_steps(opt: torch.optim.Optimizer, steps: int = 20) -> float:
    for _ in range(3):
        opt.step()
    t = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t) / steps * 1000


def main() -> None:
    torch.set_num_threads(2)
    rows = {
        "AdamW": time_steps(torch.optim.AdamW(params(), lr=1e-3)),
        "torch.optim.Muon (bf16 Newton-Schulz)": time_steps(torch.optim.Muon(params(), lr=1e-3)),
        "wallwm Muon (fp32 Newton-Schulz)": time_steps(
            Muon(params(), lr=1e-3, ns_dtype=torch.float32)
        ),
        "wallwm Muon (bf16 Newton-Schulz)": time_steps(
            Muon(params(), lr=1e-3, ns_dtype=torch.bfloat16)
        ),
        "wallwm Muon (auto)": time_steps(Muon(params(), lr=1e-3)),
    }
    table = Table(title="optimizer step, 8 matrices (3.1 M parameters), CPU, 2 threads")
    for col in ("optimizer", "ms / step", "vs torch Muon"):
        table.add_column(col, justify="right")
    ref = rows["torch.optim.Muon (bf16 Newton-Schulz)"]
    for name, ms in rows.items():
        table.add_row(
            name, f"{ms:.1f}", f"{ref / ms:.1f}x faster" if ms < ref else f"{ms / ref:.1f}x slower"
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
