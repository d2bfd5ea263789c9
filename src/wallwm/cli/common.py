"""Shared CLI helpers: options, console, JSON output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def existing_dataset(dataset: str) -> str:
    """``--dataset`` of a command that reads one: it must exist (only ingest/run create one).

    A missing or empty folder is one line on stderr and exit 2 -- before anything opens it (the
    table store would otherwise create the folder and answer with empty tables). Object-store
    URIs are checked by the store when opened.
    """
    if dataset and "://" not in dataset:
        root = Path(dataset)
        if not root.is_dir():
            err_console.print(
                f"[red]--dataset {dataset}: no such folder[/] (create a dataset with "
                "`wallwm ingest SOURCE --dataset DIR` or `wallwm run`)",
                soft_wrap=True,
            )
            raise typer.Exit(2)
        if not any(root.glob("*.lance")):
            err_console.print(
                f"[red]--dataset {dataset}: not a wallwm dataset (no Lance tables in it)[/]",
                soft_wrap=True,
            )
            raise typer.Exit(2)
    return dataset


#: ``--dataset`` of commands that read a dataset (it must exist).
DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="Dataset root directory (holds the Lance tables).",
        callback=existing_dataset,
    ),
]
#: ``--dataset`` of the commands that create one (ingest, run).
NewDatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset", "-d", help="Dataset root directory (created, or added to when it exists)."
    ),
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
