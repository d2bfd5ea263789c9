"""Shared CLI helpers: options, console, JSON output."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="Dataset root directory (holds the Lance tables).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
RayAddressOpt = Annotated[
    str | None,
    typer.Option("--ray-address", help="Join a running Ray cluster instead of a local Ray."),
]
GripperOpenOpt = Annotated[
    str,
    typer.Option(
        help="Which end of the source's gripper values is open: auto (LeRobot gripper commands: "
        "the end most episodes start at) | high | low (e.g. LIBERO/MetaWorld commands, +1 closes).",
    ),
]


def validation_message(exc: Any) -> str:
    """A pydantic ``ValidationError`` as one line naming each option and what is wrong."""
    parts = []
    for error in exc.errors():
        loc = "-".join(str(x) for x in error["loc"]).replace("_", "-")
        name = f"--{loc}" if loc else ""
        parts.append(f"{name}: {error['msg']}" if name else error["msg"])
    return "; ".join(parts)


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (no rich markup, so it pipes cleanly into jq)."""
    typer.echo(json.dumps(obj, indent=2, default=str))
