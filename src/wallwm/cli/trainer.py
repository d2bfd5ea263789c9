"""Trainer commands: ``wallwm materialize`` (more join as the trainer lands)."""

from __future__ import annotations

from typing import Annotated

import typer

from wallwm.cli.common import DatasetOpt, console, err_console


def materialize_cmd(
    dataset: DatasetOpt,
    tag: Annotated[str | None, typer.Option(help="Curated snapshot (wallwm clusters tag).")] = None,
    size: Annotated[int, typer.Option(help="Frame side in pixels.")] = 96,
    force: Annotated[bool, typer.Option(help="Rewrite an existing view.")] = False,
) -> None:
    """Write the training view (resized frames, events, signals, norm stats) of a tag."""
    from wallwm.trainer.view import materialize

    try:
        with console.status("materialising"):
            s = materialize(dataset, tag, size, force)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(
        f"[bold]materialize[/]: {s.episodes} episodes, {s.events} events, {s.frames} "
        f"frames at {size}px -> {s.path} ({s.seconds:.1f} s)",
        soft_wrap=True,
    )
