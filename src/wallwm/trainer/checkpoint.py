"""Reading checkpoint files safely, with one clear line when a file is not one."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch


def read_checkpoint(source: str | Path | bytes) -> dict[str, Any]:
    """The dict a checkpoint file (or its bytes) holds, on the CPU.

    Loaded with ``weights_only=True``: tensors and plain data only, so a checkpoint file cannot
    run code in the process that reads it. Every way a file can fail to be one -- missing,
    truncated, not a PyTorch file, pickled objects beyond plain data -- is a ``ValueError`` of
    one line naming the file.
    """
    name = "checkpoint bytes" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ValueError(f"{name}: no such checkpoint file")
    try:
        data = io.BytesIO(source) if isinstance(source, bytes) else source
        state = torch.load(data, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = "Weights only load failed" in str(exc)
        problem = (
            "holds pickled objects beyond tensors and plain data (a checkpoint of a wallwm "
            "before plain-data checkpoints, or not a wallwm file); refused: loading it could "
            "run code"
            if refused
            else "not a PyTorch checkpoint (corrupt or truncated)"
        )
        raise ValueError(f"{name}: {problem}") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ValueError(f"{name}: not a PyTorch checkpoint (corrupt or truncated)") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{name}: not a wallwm checkpoint (a {type(state).__name__})")
    return dict(state)
