"""Pipeline commands: ``wallwm ingest``, ``status``, ``failures``, ``quality``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from wallwm.cli.common import (
    ActionTopicOpt,
    CameraMapOpt,
    DatasetOpt,
    EpisodeTopicOpt,
    FormatOpt,
    FpsOpt,
    GripperOpenOpt,
    InstructionOpt,
    JsonOpt,
    NewDatasetOpt,
    RayAddressOpt,
    RobotOpt,
    SourceArg,
    camera_map,
    console,
    err_console,
    print_json,
    print_readings,
    progress_bar,
    validation_message,
)

if TYPE_CHECKING:
    from wallwm.pipeline.ingest import IngestConfig, IngestSummary
    from wallwm.pipeline.sources.peek import SourcePeek


def ingest(
    source: SourceArg,
    dataset: NewDatasetOpt,
    fmt: FormatOpt = "auto",
    instruction: InstructionOpt = None,
    fps: FpsOpt = None,
    robot: RobotOpt = None,
    action_topic: ActionTopicOpt = None,
    episode_topic: EpisodeTopicOpt = None,
    frame_tolerance: Annotated[
        int, typer.Option(help="Accepted |video frames - action rows| per camera.")
    ] = 1,
    gripper_open: GripperOpenOpt = "auto",
    camera_map_items: CameraMapOpt = None,
    batch_episodes: Annotated[int, typer.Option(help="Episodes per Lance commit.")] = 32,
    force: Annotated[
        bool, typer.Option(help="Re-read episodes whose files did not change.")
    ] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any episode failed.")] = False,
    local: Annotated[bool, typer.Option(help="Run without Ray (debugging).")] = False,
    ray_address: RayAddressOpt = None,
) -> None:
    """Ingest recorded episodes into the dataset's episodes table (idempotent, incremental)."""
    from pydantic import ValidationError

    from wallwm.pipeline.ingest import IngestConfig

    try:
        cfg = IngestConfig(
            source=source,
            dataset=dataset,
            format=fmt,  # type: ignore[arg-type]
            instruction=instruction,
            fps=fps,
            robot=robot,
            action_topics=tuple(action_topic or ()),
            episode_topic=episode_topic,
            frame_tolerance=frame_tolerance,
            gripper_open=gripper_open,  # type: ignore[arg-type]
            camera_map=camera_map(camera_map_items),
            batch_episodes=batch_episodes,
            force=force,
            strict=strict,
            executor="local" if local else "ray",
            ray_address=ray_address,
        )
    except ValidationError as exc:
        err_console.print(f"[red]invalid options:[/] {validation_message(exc)}", soft_wrap=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(ingest_with_progress(cfg)[0])


def inspect_cmd(
    source: SourceArg,
    fmt: FormatOpt = "auto",
    instruction: InstructionOpt = None,
    fps: FpsOpt = None,
    action_topic: ActionTopicOpt = None,
    episode_topic: EpisodeTopicOpt = None,
    episodes: Annotated[
        int, typer.Option(help="Episodes to read, spread over the source.", min=1)
    ] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Look at a source before ingesting it: format, episodes, dims, cameras, fps, problems.

    Reads the signals of a few episodes spread over the source (no video decoded, nothing
    written); each problem is the line ingest would record.
    """
    from wallwm.pipeline.sources.base import EpisodeError
    from wallwm.pipeline.sources.peek import peek_source

    try:
        found = peek_source(
            source, fmt, instruction=instruction, fps=fps, sample=episodes,
            action_topics=tuple(action_topic or ()), episode_topic=episode_topic,
        )  # fmt: skip
    except EpisodeError as exc:
        err_console.print(f"[red]{exc.file}: {exc.problem}[/]")
        raise typer.Exit(1) from exc
    if as_json:
        print_json(found.as_dict())
        return
    _show_peek(found)


def _show_episode_notes(found: SourcePeek) -> None:
    """Per sampled episode: the problem ingest would record, or its reading notes.

    The notes say what the cut reads differently from what is stored (a wrapped angle, a held
    stream, ...).
    """
    for ep in found.sampled:
        if ep.problem:
            console.print(f"[red]would fail[/] {ep.key}: {ep.problem}", soft_wrap=True)
        elif ep.reading:
            console.print(f"read for the cut, {ep.key}: " + "; ".join(ep.reading), soft_wrap=True)


def _show_peek(found: SourcePeek) -> None:
    """``inspect``'s text: the listing, a table of the sample, its problems and columns."""
    from collections import Counter

    from rich.table import Table

    console.print(
        f"[bold]{found.uri}[/] ({found.format}): {found.listed} episodes listed, "
        f"{len(found.listing_failures)} refused by the listing",
        soft_wrap=True,
    )
    for line in found.listing_failures[:10]:
        console.print(f"[red]refused[/] {line}", soft_wrap=True)
    for line in found.hints:
        console.print(f"[yellow]hint[/] {line}", soft_wrap=True)
    table = Table(title=f"{len(found.sampled)} episodes read (signals only)")
    for col in ("episode", "frames", "fps", "actions/states", "cameras", "truth events"):
        table.add_column(col, overflow="fold")
    for ep in found.sampled:
        if ep.problem:
            continue
        table.add_row(
            ep.key,
            f"{ep.frames} ({ep.duration_s:.1f} s)",
            f"{ep.fps:g}",
            f"{ep.action_dim} / {ep.state_dim}",
            ", ".join(ep.cameras) or "-",
            "-" if ep.ground_truth_events is None else str(ep.ground_truth_events),
        )
    if table.row_count:
        console.print(table)
    _show_episode_notes(found)
    dims = Counter((ep.action_dim, ep.state_dim) for ep in found.sampled if not ep.problem)
    if len(dims) > 1:  # one dataset holds one embodiment: say so before ingest fails the rest
        mix = ", ".join(f"{a}/{st} x{n}" for (a, st), n in dims.most_common())
        console.print(
            f"[yellow]the sample mixes embodiments (actions/states {mix}): a dataset holds one; "
            "ingest each embodiment into its own --dataset[/]",
            soft_wrap=True,
        )
    read = [ep for ep in found.sampled if not ep.problem]
    for what, names in (("actions", read[0].action_names if read else None),
                        ("states", read[0].state_names if read else None)):  # fmt: skip
        if names:  # what the columns are, as the first episode read names them
            more = f" ... ({len(names)})" if len(names) > 16 else ""
            console.print(f"{what}: " + ", ".join(names[:16]) + more, soft_wrap=True)
    tasks = sorted({ep.instruction for ep in found.sampled if ep.instruction})
    if tasks:
        console.print("instructions: " + "; ".join(tasks[:10]), soft_wrap=True)
    if read:
        robots = sorted({ep.robot for ep in read if ep.robot})
        console.print(
            "robot: " + ", ".join(robots) if robots else "robot: none named (--robot names it)",
            soft_wrap=True,
        )


def status(dataset: DatasetOpt, as_json: JsonOpt = False) -> None:
    """Show the dataset's tables, row counts, Lance versions, stage progress and failures."""
    from rich.table import Table

    from wallwm.pipeline.tables.status import dataset_status
    from wallwm.pipeline.tables.store import LanceStore

    info = dataset_status(LanceStore(dataset))
    if as_json:
        print_json(info)
        return
    tables = Table(title=f"dataset {info['dataset']}")
    for col in ("table", "rows", "version"):
        tables.add_column(col)
    for t in info["tables"]:
        tables.add_row(t["table"], str(t["rows"]) if t["exists"] else "-", str(t["version"] or "-"))
    console.print(tables)
    stages = Table(title="stages")
    for col in ("stage", "done", "total", "last run", "open failures"):
        stages.add_column(col)
    for s in info["stages"]:
        last = info["last_runs"].get(s["stage"], {})
        stages.add_row(
            s["stage"],
            str(s["done"]),
            f"{s['total']} {s['unit']}",
            f"{last.get('finished_at', '-')[:19]} {last.get('code_version', '')}",
            str(info["open_failures"].get(s["stage"], 0)),
        )
    console.print(stages)


def failures(
    dataset: DatasetOpt,
    as_json: JsonOpt = False,
    show_all: Annotated[bool, typer.Option("--all", help="Include resolved failures.")] = False,
) -> None:
    """List recorded failures: which file, which stage, what went wrong."""
    from rich.table import Table

    from wallwm.pipeline.tables import schemas
    from wallwm.pipeline.tables.store import LanceStore

    store = LanceStore(dataset)
    rows = store.read(schemas.FAILURES, where=None if show_all else "resolved = false").to_pylist()
    rows.sort(key=lambda r: (r["stage"], r["episode_key"]))
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no failures")
        return
    table = Table(title=f"{len(rows)} failures")
    for col in ("stage", "episode", "error", "file", "message"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["stage"], r["episode_key"], r["error_class"], r["file"], r["message"])
    console.print(table)


def quality(
    dataset: DatasetOpt,
    tag: Annotated[str | None, typer.Option(help="Snapshot to assess (default: current).")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="List unflagged episodes too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List episode quality flags (frame drops, desync, still, failed, jerky, chatter, dups).

    ``materialize --exclude-flag NAME`` leaves flagged episodes out of a training view.
    """
    from collections import Counter

    from rich.table import Table

    from wallwm.pipeline.quality import FLAGS, dataset_quality
    from wallwm.pipeline.tables.store import LanceStore, StoreError

    try:
        results = dataset_quality(LanceStore(dataset), tag)
    except StoreError as exc:
        err_console.print(f"[red]--tag {tag}: {exc}[/]")
        raise typer.Exit(1) from exc
    shown = [r for r in results if r.flags or show_all]
    if as_json:
        print_json([dataclasses.asdict(r) for r in shown])
        return
    counts = Counter(f for r in results for f in r.flags)
    summary = ", ".join(f"{counts[f]} {f}" for f in FLAGS if counts[f]) or "no flags"
    console.print(f"[bold]quality[/]: {len(results)} episodes; {summary}", soft_wrap=True)
    if not shown:
        return
    table = Table()
    for col in ("episode", "flags", "details"):
        table.add_column(col, overflow="fold")
    for r in shown:
        details = ", ".join(f"{k}={v}" for k, v in r.details.items())
        table.add_row(r.episode_key, ", ".join(r.flags), details)
    console.print(table)


def ingest_with_progress(cfg: IngestConfig) -> tuple[int, IngestSummary]:
    """Run ingest with a progress bar and one console line per failure.

    Returns the exit code and the run's summary.
    """
    from wallwm.pipeline.ingest import EpisodeOutcome, run_ingest

    with progress_bar("ingest", "{task.fields[fps]:>8.0f} frames/s") as progress:
        task = progress.add_task("ingest", total=None, fps=0.0)
        frames = 0

        def on_start(total: int) -> None:
            progress.update(task, total=total)

        def on_outcome(o: EpisodeOutcome) -> None:
            nonlocal frames
            if o.ok:
                frames += o.video_frames
                elapsed = progress.tasks[0].elapsed or 1e-9
                progress.update(task, advance=1, fps=frames / elapsed)
            else:
                assert o.error is not None
                if o.episode_key and o.episode_key != o.error.file:
                    progress.advance(task)
                # One unwrapped line per failure, so logs can be grepped by file name.
                progress.console.print(
                    f"[red]failed[/] {o.episode_key or cfg.source}: {o.error.file}: "
                    f"{o.error.problem}",
                    soft_wrap=True,
                    markup=True,
                )

        summary = run_ingest(cfg, on_start=on_start, on_outcome=on_outcome)
    console.print(
        f"[bold]ingest[/] {summary.source} ({summary.source_format}): "
        f"[green]{summary.written} written[/], {summary.unchanged} unchanged, "
        f"[red]{summary.failed} failed[/] of {summary.listed}; {summary.frames} frames "
        f"({summary.video_frames} video frames) in {summary.seconds:.1f} s = "
        f"{summary.frames_per_s:.0f} frames/s; episodes table version {summary.episodes_version}",
        soft_wrap=True,
    )
    if summary.gripper:
        console.print(f"gripper open end: {summary.gripper}")
    if summary.events:
        console.print(f"[bold]segment[/] (fused with ingest): {summary.events} events")
        if summary.model:  # chosen in this run: what and why, as `wallwm segment` says it
            from wallwm.cli.segment import print_model_choice

            print_model_choice(summary.model)
        print_readings(summary.readings)
    code = summary.exit_code(cfg.strict)
    if code:
        err_console.print(
            "[red]--strict: failures[/]" if cfg.strict else "[red]nothing was ingested[/]"
        )
    return code, summary
