"""Export commands: ``wallwm export lerobot``."""

from __future__ import annotations

from typing import Annotated

import typer

from wallwm.cli.common import DatasetOpt, console, err_console, out_folder, progress_bar

app = typer.Typer(no_args_is_help=True, help="Export curated snapshots to other tools' formats.")


@app.command("lerobot")
def export_lerobot_cmd(
    dataset: DatasetOpt,
    out: Annotated[
        str, typer.Option("--out", "-o", help="Folder of the LeRobot dataset.", callback=out_folder)
    ],
    tag: Annotated[str | None, typer.Option(help="Snapshot to export (default: current).")] = None,
    reencode: Annotated[
        bool,
        typer.Option(help="Encode only the exported frames instead of copying source videos."),
    ] = False,
    camera: Annotated[
        list[str] | None,
        typer.Option(
            "--camera", help="Camera to export, repeatable (default: the first episode's)."
        ),
    ] = None,
    codec: Annotated[str, typer.Option(help="Encoder of re-encoded streams.")] = "libx264",
    preset: Annotated[
        str, typer.Option(help="Encoder speed preset (x264: ultrafast ... veryslow).")
    ] = "ultrafast",
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    trim: Annotated[
        bool, typer.Option("--trim/--no-trim", help="Leave out each episode's idle start and end.")
    ] = True,
) -> None:
    """Write the tag's curated episodes as a LeRobot v3.0 dataset (events as subtasks)."""
    from wallwm.pipeline.export.lerobot import ExportConfig, export_lerobot

    cfg = ExportConfig(
        dataset=dataset,
        tag=tag,
        out=out,
        reencode=reencode,
        overwrite=overwrite,
        trim=trim,
        codec=codec,
        preset=preset,
        cameras=camera,
    )
    try:
        with progress_bar("export") as progress:
            task = progress.add_task("export", total=None)
            s = export_lerobot(
                cfg,
                on_start=lambda n: progress.update(task, total=n),
                on_episode=lambda: progress.advance(task),
            )
    except (ValueError, OSError) as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    skipped = (
        f"{len(s.episodes_skipped)} episodes left out for lacking a camera; "
        if s.episodes_skipped
        else ""
    )
    console.print(
        f"[bold]export[/]: {s.episodes_in} episodes -> {s.episodes_out} LeRobot episodes "
        f"({s.frames} frames, {s.events} events as subtasks, {s.events_left_out} left out by "
        f"curation); videos {s.videos_copied} copied, {s.videos_encoded} encoded; {skipped}"
        f"{s.seconds:.1f} s -> {s.out}",
        soft_wrap=True,
    )
