"""Segmentation commands (``segment``, ``run``, ``events``, ``episode``, ``eval segmentation``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

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
    eval_app,
    print_json,
    print_readings,
    progress_bar,
    validation_message,
)

if TYPE_CHECKING:
    from wallwm.pipeline.segmentation import SegmentConfig

events_app = typer.Typer(no_args_is_help=True, help="Inspect events.")
episode_app = typer.Typer(no_args_is_help=True, help="Inspect episodes.")

MethodOpt = Annotated[str, typer.Option(help="events (signal change points) | fixed (chunks)")]
ChunkOpt = Annotated[int, typer.Option(help="Frames per chunk for --method fixed.")]
PenaltyOpt = Annotated[float, typer.Option(help="Cost of one more event (higher: fewer events).")]
ActionModelOpt = Annotated[
    str,
    typer.Option(
        help="Within an event, actions are affine in the paired proprio state (state_feedback: "
        "closed-loop control), a line in time (time: waypoint interpolation) or a polynomial "
        "in time plus state feedback (smooth: a person's reaching, teleoperation); auto: "
        "chosen per dataset from the data, then kept."
    ),
]
NoiseModelOpt = Annotated[
    str,
    typer.Option(
        help="Channel noise: spread of first differences floored at a share of the range "
        "(differences), the within-event model's misfit on short windows (local_fit), or that "
        "misfit scaled to a whole event of a reached path (position_targets); auto: follows "
        "the action model and whether commands move with their states."
    ),
]
ActionFormOpt = Annotated[
    str,
    typer.Option(
        help="What the cut reads of each command: its values, or its rates of change (rates: "
        "a position target bends at a decision, its rate steps there); auto: rates for "
        "position targets whose rates stand clear of their noise, chosen per dataset."
    ),
]
MergeDisturbancesOpt = Annotated[
    bool,
    typer.Option(
        help="Drop the boundaries of hesitations, small corrections and a closed-loop arm's "
        "pauses (the motion after them continues the one before)."
    ),
]
MergeBendsOpt = Annotated[
    bool,
    typer.Option(
        help="Drop boundaries where the command only bends against the state (an actuator "
        "leaving or entering its limit) instead of jumping."
    ),
]
RefitNoiseOpt = Annotated[
    bool,
    typer.Option(
        help="Re-estimate each channel's noise from the residuals of a first cut (never below "
        "its frame-to-frame jitter) and cut again."
    ),
]
ContinuousRotationsOpt = Annotated[
    bool,
    typer.Option(
        help="Read angles that wrapped past +-pi (or +-180) and quaternions whose sign flipped "
        "as the continuous rotations they are (a turn past the edge is no event)."
    ),
]
ReadHeldSamplesOpt = Annotated[
    bool,
    typer.Option(
        help="Cut a command stream held over several frames (slower than the frames) on its "
        "own samples, so its stairs are no events (a model in time; a law on the state reads "
        "the frames), read a row stored twice by a late recorder as a missed sample, and "
        "frames dropped (gaps in the timestamps) on the time axis."
    ),
]
SharedGainOpt = Annotated[
    bool,
    typer.Option(
        help="Let a state-feedback event's commands keep the episode's gain (their line's "
        "slope on the state) and pay for a slope of their own only where they need one: a new "
        "sub-goal at the same gain costs one parameter a command, not two."
    ),
]
MendGlitchesOpt = Annotated[
    bool,
    typer.Option(
        help="Read a command off its neighbours for one frame only (a device or packet "
        "glitch) as their mean, where a model in time reads the commands."
    ),
]
MinEventOpt = Annotated[float, typer.Option(help="Shortest event, seconds.")]
MaxEventOpt = Annotated[float, typer.Option(help="Longest event, seconds (longer are split).")]


def _segment_config(
    method: str,
    chunk_len: int,
    penalty: float,
    min_event_s: float,
    max_event_s: float,
    action_model: str = "auto",
    merge_bends: bool = True,
    refit_noise: bool = True,
    noise_model: str = "auto",
    merge_disturbances: bool = True,
    action_form: str = "auto",
    continuous_rotations: bool = True,
    read_held_samples: bool = True,
    mend_glitches: bool = True,
    shared_gain: bool = True,
) -> SegmentConfig:
    from pydantic import ValidationError

    from wallwm.pipeline.segmentation import SegmentConfig

    try:
        return SegmentConfig(
            method=method,
            chunk_len=chunk_len,
            penalty=penalty,
            action_model=action_model,  # type: ignore[arg-type]
            noise_model=noise_model,  # type: ignore[arg-type]
            action_form=action_form,  # type: ignore[arg-type]
            merge_bends=merge_bends,
            merge_disturbances=merge_disturbances,
            refit_noise=refit_noise,
            continuous_rotations=continuous_rotations,
            read_held_samples=read_held_samples,
            mend_glitches=mend_glitches,
            shared_gain=shared_gain,
            min_event_s=min_event_s,
            max_event_s=max_event_s,
        )
    except ValidationError as exc:
        err_console.print(f"[red]invalid segmenter options:[/] {validation_message(exc)}")
        raise typer.Exit(2) from exc


def print_model_choice(model: dict[str, Any]) -> None:
    """The within-event model of the segment run, where it came from and what it weighed."""
    events = model.get("events") or {}
    costs = ", ".join(
        f"{k} {v:,.0f}" + (f" ({events[k]:.1f} events an episode)" if k in events else "")
        for k, v in model["costs"].items()
    )
    if costs and model.get("noise_floor"):
        costs += f"; noise floor {model['noise_floor']:,.0f}"
    basis = model["basis"]
    count = int(model.get("episodes") or 0)
    episodes = f"{count} episode{'' if count == 1 else 's'}"
    if basis == "data":
        every = int(model.get("read_every") or 1)
        read = f", reading one frame in {every}" if every > 1 else ""
        how = f"chosen on {episodes}{read} (penalised cost: {costs})"
    elif basis == "stated":  # the smooth model's form is still the data's to choose
        how = "as stated" + (
            f"; with or without the states chosen on {episodes} (penalised cost: {costs})"
            if costs
            else ""
        )
    else:
        how = "the dataset's recorded choice (--reselect chooses again)"
    from wallwm.pipeline.segmentation.channels import POSITION_TARGET_NOISE
    from wallwm.pipeline.segmentation.selection import (
        POSITION_TARGET_SHARE,
        TIE_SE,
        pairing_text,
    )

    paired = pairing_text(model["action_model"], model.get("pairing"))
    console.print(f"within an event: {model['action_model']}{paired} -- {how}")
    share = model.get("motion_share")
    feedback = model["action_model"] == "state_feedback"
    if feedback and share is not None and share >= POSITION_TARGET_SHARE:
        console.print(
            f"commands move with their states (position targets, share {share:.2f}): "
            "noise measured as the law's misfit over an event "
            f"(x{POSITION_TARGET_NOISE:g} its local variance)"
        )
    tied = model.get("tied") or []
    if tied:
        console.print(
            f"{' and '.join(tied)} explain the sample alike (totals within "
            f"{TIE_SE:g} standard errors): the one that cuts fewest events is chosen"
        )
    _print_action_form(model)
    quiet = model.get("quiet_dims") or []
    if quiet:
        dims = ", ".join(str(j) for j in quiet)
        console.print(f"left out of the cut: action dims {dims} (noise alone over the sample)")


def _print_action_form(model: dict[str, Any]) -> None:
    """Whether the cut read the commands' rates, and the clearance that decided it."""
    from wallwm.pipeline.segmentation.forms import RATES_CLEARANCE

    clearance = model.get("rates_clearance")
    if model.get("action_form") == "rates":
        why = ""
        if clearance is not None:
            why = (
                f": position targets whose rates stand {clearance:.1f}x above their noise "
                f"(rates from {RATES_CLEARANCE:g}x)"
            )
        console.print(f"cut on the commands' rates of change{why}")
    elif clearance is not None:
        console.print(
            f"cut on the commands' values: position targets whose rates stand only "
            f"{clearance:.1f}x above their noise (rates from {RATES_CLEARANCE:g}x)"
        )


def _run_segment_with_progress(
    dataset: str,
    seg: SegmentConfig,
    force: bool,
    local: bool,
    ray_address: str | None,
    reselect: bool = False,
    after_fused: bool = False,
) -> int:
    """Run the segment stage with a progress bar; returns the exit code.

    ``after_fused``: ingest has just cut the episodes it wrote (``wallwm run``) and said so;
    a stage that then finds nothing to do says nothing more.
    """
    from wallwm.pipeline.segmentation.stage import SegmentStageConfig, run_segment

    cfg = SegmentStageConfig(
        dataset=dataset,
        segment=seg,
        force=force,
        reselect=reselect,
        executor="local" if local else "ray",
        ray_address=ray_address,
    )
    with progress_bar("segment") as progress:
        task = progress.add_task("segment", total=None)

        def on_episode(res: dict[str, object]) -> None:
            progress.advance(task)
            if not res["ok"]:
                progress.console.print(
                    f"[red]failed[/] {res['episode_key']}: {res['file']}: {res['message']}",
                    soft_wrap=True,
                )
            elif res["warning"]:
                progress.console.print(
                    f"[yellow]warning[/] {res['episode_key']}: "
                    f"{res['warning_file']}: {res['warning']}",
                    soft_wrap=True,
                )

        summary = run_segment(
            cfg, on_start=lambda n: progress.update(task, total=n), on_episode=on_episode
        )
    if after_fused and not summary.segmented and not summary.failed:
        return 0
    console.print(
        f"[bold]segment[/] ({seg.method}): {summary.segmented} episodes segmented into "
        f"{summary.events} events, {summary.up_to_date} up to date, "
        f"[red]{summary.failed} failed[/] in {summary.seconds:.1f} s; "
        f"events table version {summary.events_version}",
        soft_wrap=True,
    )
    if summary.model:
        print_model_choice(summary.model)
    print_readings(summary.readings, summary.segmented)
    return 1 if summary.failed and not summary.segmented and not summary.up_to_date else 0


def segment_cmd(
    dataset: DatasetOpt,
    method: MethodOpt = "events",
    chunk_len: ChunkOpt = 16,
    penalty: PenaltyOpt = 0.85,
    action_model: ActionModelOpt = "auto",
    noise_model: NoiseModelOpt = "auto",
    action_form: ActionFormOpt = "auto",
    merge_bends: MergeBendsOpt = True,
    shared_gain: SharedGainOpt = True,
    merge_disturbances: MergeDisturbancesOpt = True,
    refit_noise: RefitNoiseOpt = True,
    continuous_rotations: ContinuousRotationsOpt = True,
    read_held_samples: ReadHeldSamplesOpt = True,
    mend_glitches: MendGlitchesOpt = True,
    min_event_s: MinEventOpt = 0.0,
    max_event_s: MaxEventOpt = 30.0,
    force: Annotated[bool, typer.Option(help="Re-segment episodes that are up to date.")] = False,
    reselect: Annotated[
        bool, typer.Option(help="Choose the within-event model from the data again.")
    ] = False,
    local: Annotated[bool, typer.Option(help="Run without Ray (debugging).")] = False,
    ray_address: RayAddressOpt = None,
) -> None:
    """Cut every episode into events at its event joints and write the events table."""
    seg = _segment_config(
        method,
        chunk_len,
        penalty,
        min_event_s,
        max_event_s,
        action_model,
        merge_bends,
        refit_noise,
        noise_model,
        merge_disturbances,
        action_form,
        continuous_rotations,
        read_held_samples,
        mend_glitches,
        shared_gain,
    )
    raise typer.Exit(_run_segment_with_progress(dataset, seg, force, local, ray_address, reselect))


def run_cmd(
    source: SourceArg,
    dataset: NewDatasetOpt,
    fmt: FormatOpt = "auto",
    instruction: InstructionOpt = None,
    fps: FpsOpt = None,
    robot: RobotOpt = None,
    action_topic: ActionTopicOpt = None,
    episode_topic: EpisodeTopicOpt = None,
    gripper_open: GripperOpenOpt = "auto",
    camera_map_items: CameraMapOpt = None,
    method: MethodOpt = "events",
    chunk_len: ChunkOpt = 16,
    penalty: PenaltyOpt = 0.85,
    action_model: ActionModelOpt = "auto",
    noise_model: NoiseModelOpt = "auto",
    action_form: ActionFormOpt = "auto",
    merge_bends: MergeBendsOpt = True,
    shared_gain: SharedGainOpt = True,
    merge_disturbances: MergeDisturbancesOpt = True,
    refit_noise: RefitNoiseOpt = True,
    continuous_rotations: ContinuousRotationsOpt = True,
    read_held_samples: ReadHeldSamplesOpt = True,
    mend_glitches: MendGlitchesOpt = True,
    caption_backend: Annotated[str, typer.Option(help="signals | openai | vllm")] = "signals",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible server URL.")] = None,
    model: Annotated[str | None, typer.Option(help="Caption model (openai/vllm).")] = None,
    cluster: Annotated[bool, typer.Option(help="Also embed and cluster the events.")] = True,
    local: Annotated[bool, typer.Option(help="Run without Ray (debugging).")] = False,
    ray_address: RayAddressOpt = None,
) -> None:
    """Run the pipeline end to end: ingest + segment (one decode pass), caption, embed, cluster.

    Every stage skips work that is already up to date; once clusters exist, re-runs place new
    events in them (--assign-only) so curated weights are kept.
    """
    from wallwm.cli.pipeline import ingest_with_progress
    from wallwm.pipeline.ingest import IngestConfig

    seg = _segment_config(
        method,
        chunk_len,
        penalty,
        0.0,
        30.0,
        action_model,
        merge_bends,
        refit_noise,
        noise_model,
        merge_disturbances,
        action_form,
        continuous_rotations,
        read_held_samples,
        mend_glitches,
        shared_gain,
    )
    from pydantic import ValidationError

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
            gripper_open=gripper_open,  # type: ignore[arg-type]
            camera_map=camera_map(camera_map_items),
            executor="local" if local else "ray",
            ray_address=ray_address,
            segment=seg,
        )
    except ValidationError as exc:
        err_console.print(f"[red]invalid options:[/] {validation_message(exc)}", soft_wrap=True)
        raise typer.Exit(2) from exc
    from wallwm.cli.caption import backend_config, caption_with_progress

    backend = backend_config(caption_backend, base_url, model, 64, 128)
    code, ingested = ingest_with_progress(cfg)
    code = code or _run_segment_with_progress(
        dataset, seg, False, local, ray_address, after_fused=ingested.events > 0
    )
    if code:
        raise typer.Exit(code)
    code = caption_with_progress(dataset, backend)
    if code or not cluster:
        raise typer.Exit(code)
    from wallwm.cli.clustering import cluster_cmd, embed_cmd

    embed_cmd(dataset)
    if _needs_recluster(dataset):
        cluster_cmd(dataset)
    else:  # keep the curated hierarchy: place new events, report drift
        cluster_cmd(dataset, assign_only=True)


def _needs_recluster(dataset: str) -> bool:
    """A first clustering (or one whose embedding size changed); otherwise assign only."""
    from wallwm.pipeline.tables import schemas
    from wallwm.pipeline.tables.store import LanceStore

    store = LanceStore(dataset)
    if not store.exists(schemas.CLUSTERS):
        return True
    clusters_schema = store.schema(schemas.CLUSTERS)
    events_schema = store.schema(schemas.EVENTS)
    assert clusters_schema is not None and events_schema is not None
    dim = clusters_schema.field("centroid").type.list_size
    return bool(events_schema.field("embedding").type.list_size != dim)


@events_app.command("list")
def events_list(
    dataset: DatasetOpt,
    episode: Annotated[
        str | None, typer.Option(help="Only this episode (its id, or its key).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List events (frame ranges, seconds, confidence, cues, captions when present)."""
    from rich.table import Table

    from wallwm.pipeline.inspect import list_events
    from wallwm.pipeline.segmentation.stage import resolve_episode_id
    from wallwm.pipeline.sources.base import EpisodeError
    from wallwm.pipeline.tables.store import LanceStore

    store = LanceStore(dataset)
    if episode is not None:
        try:
            episode = resolve_episode_id(store, episode)
        except EpisodeError as exc:
            err_console.print(f"[red]--episode {episode}: {exc.problem} in {dataset}[/]")
            raise typer.Exit(1) from exc
    rows = list_events(store, episode)
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} events")
    for col in ("event_id", "episode", "#", "frames", "seconds", "conf", "cues", "caption"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["event_id"][:8],
            r["episode_id"][:8],
            f"{r['event_index'] + 1}/{r['num_events']}",
            f"{r['start_frame']}-{r['end_frame']}",
            f"{r['start_s']:.2f}-{r['end_s']:.2f}",
            f"{r['confidence']:.2f}",
            ",".join(r["cues"]),
            r["caption"] or "",
        )
    console.print(table)


@events_app.command("show")
def events_show(
    event_id: Annotated[str, typer.Argument(help="Event id (from `wallwm events list --json`).")],
    dataset: DatasetOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="PNG to write.")] = "event.png",
) -> None:
    """Write a PNG grid of an event's keyframes (with its caption when present)."""
    from wallwm.pipeline.inspect import event_grid, get_event
    from wallwm.pipeline.tables.store import LanceStore

    try:
        event = get_event(LanceStore(dataset), event_id)
    except KeyError as exc:
        err_console.print(f"[red]{exc.args[0]}[/]")
        raise typer.Exit(1) from exc
    console.print(f"wrote {event_grid(event, out)}")


@episode_app.command("plot")
def episode_plot(
    episode_id: Annotated[str, typer.Argument(help="Episode id, or its key (e.g. ep_0003).")],
    dataset: DatasetOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="PNG to write.")] = "episode.png",
) -> None:
    """Plot an episode's signals, cue traces, chosen boundaries and ground truth."""
    from wallwm.pipeline.inspect import plot_episode
    from wallwm.pipeline.sources.base import EpisodeError
    from wallwm.pipeline.tables.store import LanceStore

    try:
        path = plot_episode(LanceStore(dataset), episode_id, out)
    except EpisodeError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"wrote {path}")


@eval_app.command("segmentation")
def eval_segmentation(
    dataset: DatasetOpt,
    tolerance_frames: Annotated[int, typer.Option(help="Match window, frames.")] = 3,
    until_success: Annotated[
        bool,
        typer.Option(
            "--until-success",
            help="Score each episode only before the first frame its source marks successful "
            "(episodes without one whole): ground truth that stops at the task's success.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Boundary precision, recall, F1 and mean offset against the ground truth.

    Per robot (the recorded robot, else the source), per task and overall; then the recall per
    ground-truth event (which kinds of boundary the cut misses).
    """
    from rich.table import Table

    from wallwm.pipeline.inspect import evaluate_segmentation
    from wallwm.pipeline.tables.store import LanceStore

    result = evaluate_segmentation(LanceStore(dataset), tolerance_frames, until_success)
    if as_json:
        print_json(result)
        return
    if not result["episodes"]:  # a score of nothing is no score (the table read 1.000)
        err_console.print(
            f"[red]{dataset}: nothing to score -- no episode has both ground-truth events and "
            f"events ({result['episodes_without_ground_truth_or_events']} without); "
            "run `wallwm segment` first, or ingest a source with ground truth[/]",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    until = (
        f"; {result['episodes_until_success']} scored until their success frame"
        if until_success
        else ""
    )
    table = Table(
        title=f"segmentation vs ground truth (tolerance {tolerance_frames} frames, "
        f"{result['episodes']} episodes{until})"
    )
    for col in ("robot / task", "episodes", "precision", "recall", "F1", "mean offset"):
        table.add_column(col, overflow="fold")
    rows = [
        *((f"robot {k}", m) for k, m in result["per_robot"].items()),
        *result["per_task"].items(),
        ("overall", {**result["overall"], "episodes": result["episodes"]}),
    ]
    for name, m in rows:
        table.add_row(
            name,
            str(m["episodes"]),
            f"{m['precision']:.3f}",
            f"{m['recall']:.3f}",
            f"{m['f1']:.3f}",
            "-" if m["mean_offset_frames"] is None else f"{m['mean_offset_frames']:.2f}",
        )
    console.print(table)
    _show_event_recall(result["per_event"])


#: Ground-truth events listed by ``eval segmentation`` (the least found first).
EVENT_ROWS = 20


def _show_event_recall(per_event: dict[str, dict[str, float]]) -> None:
    """The recall of each ground-truth event's starting boundary, the least found first."""
    from rich.table import Table

    if not per_event:
        return
    worst = sorted(per_event.items(), key=lambda kv: (kv[1]["recall"], -kv[1]["boundaries"]))
    more = len(worst) - EVENT_ROWS
    table = Table(
        title="recall by ground-truth event (the boundary where it starts)"
        + (f"; the {EVENT_ROWS} least found of {len(worst)} (--json: all)" if more > 0 else "")
    )
    for col in ("event", "boundaries", "found", "recall"):
        table.add_column(col, overflow="fold")
    for name, m in worst[:EVENT_ROWS]:
        table.add_row(name, str(m["boundaries"]), str(m["found"]), f"{m['recall']:.3f}")
    console.print(table)
