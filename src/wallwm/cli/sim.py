"""Simulator commands: ``wallwm sim synth`` (built-in) records episodes in the folder format."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wallwm.cli.common import console, out_folder

#: Options the recorders share.
OutOpt = Annotated[
    str,
    typer.Option("--out", "-o", help="Output folder (folder source format).", callback=out_folder),
]
EpisodesOpt = Annotated[int, typer.Option(help="Episodes per task.", min=1)]
SizeOpt = Annotated[int, typer.Option(help="Image side in pixels.", min=16, max=1024)]
HesitationsOpt = Annotated[
    float,
    typer.Option(help="Share of motions that pause part-way (not decisions).", min=0.0, max=1.0),
]
CorrectionsOpt = Annotated[
    float,
    typer.Option(help="Share of motions with a few mm swerve (not decisions).", min=0.0, max=1.0),
]
OperatorOpt = Annotated[
    str,
    typer.Option(
        help="'scripted': the experts' own controllers; 'smooth': a person's minimum-jerk "
        "reaches to the same sub-goals (the decisions stay the expert's: teleoperation-like)."
    ),
]
WorkersOpt = Annotated[int, typer.Option(help="Episodes recorded in parallel processes.", min=1)]
SeedOpt = Annotated[int, typer.Option(help="Random seed.")]


app = typer.Typer(no_args_is_help=True)


@app.command("synth")
def synth(
    out: OutOpt,
    episodes: Annotated[int, typer.Option(help="Number of episodes.", min=1)] = 6,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="pick-place | push | reach (repeatable).")
    ] = None,
    size: SizeOpt = 96,
    fps: Annotated[float, typer.Option(help="Recording frame rate.", min=1.0, max=1000.0)] = 20.0,
    camera: Annotated[
        list[str] | None, typer.Option("--camera", help="top | side (repeatable).")
    ] = None,
    action_noise: Annotated[float, typer.Option(help="Relative action noise.", min=0.0)] = 0.1,
    seed: SeedOpt = 0,
) -> None:
    """Record episodes of the built-in top-down gripper simulator, with ground-truth events."""
    import difflib

    from wallwm.pipeline.sim.synthetic import TASKS, SynthConfig, record_synthetic

    tasks = tuple(task or TASKS)
    for t in tasks:
        if t not in TASKS:
            close = difflib.get_close_matches(t, TASKS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise typer.BadParameter(f"unknown task {t!r} (choose from {TASKS}){hint}")
    cfg = SynthConfig(
        episodes=episodes,
        tasks=tasks,
        size=size,
        fps=fps,
        seed=seed,
        action_noise=action_noise,
        cameras=tuple(camera or ("top",)),
    )
    paths = record_synthetic(out, cfg)
    console.print(f"recorded {len(paths)} episodes to {out}")


@app.command("record")
def record(
    out: OutOpt,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", help="MetaWorld v3 task, repeatable; 'mt10' for all ten."),
    ] = None,
    episodes: EpisodesOpt = 5,
    camera: Annotated[
        list[str] | None,
        typer.Option(help="MetaWorld camera name, repeatable (e.g. corner, corner2, gripperPOV)."),
    ] = None,
    size: SizeOpt = 128,
    action_noise: Annotated[
        float, typer.Option(help="Gaussian noise std on position deltas.", min=0.0)
    ] = 0.3,
    action_labels: Annotated[
        str,
        typer.Option(
            help="Record the 'executed' (noisy) actions, or the 'expert' clean commands while "
            "executing the noisy ones (DART-style noise injection, for training data)."
        ),
    ] = "executed",
    state: Annotated[
        str,
        typer.Option(
            help="Record 'proprio' (hand xyz + gripper) or MetaWorld's whole 39-D "
            "'observation' (object poses and goal too: privileged simulator state) as the state."
        ),
    ] = "proprio",
    max_steps: Annotated[int, typer.Option(help="Step limit per episode.", min=1)] = 200,
    hesitations: HesitationsOpt = 0.0,
    corrections: CorrectionsOpt = 0.0,
    operator: OperatorOpt = "scripted",
    workers: WorkersOpt = 1,
    seed: SeedOpt = 0,
) -> None:
    """Record MetaWorld scripted-expert episodes with ground-truth events (extra "sim")."""
    try:
        from wallwm.pipeline.sim.metaworld import MT10, MetaWorldConfig, record_metaworld
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise typer.BadParameter(
            f"MetaWorld is not installed ({exc}); pip install 'wallwm[sim]'"
        ) from exc
    if action_labels not in ("executed", "expert"):
        raise typer.BadParameter(
            f"--action-labels must be 'executed' or 'expert', not {action_labels!r}"
        )
    if state not in ("proprio", "observation"):
        raise typer.BadParameter(f"--state must be 'proprio' or 'observation', not {state!r}")
    _check_operator(operator)
    tasks: list[str] = []
    for t in task or ["pick-place-v3"]:
        tasks.extend(MT10 if t.lower() == "mt10" else [t if t.endswith("-v3") else f"{t}-v3"])
    cfg = MetaWorldConfig(
        tasks=tuple(tasks),
        episodes=episodes,
        cameras=tuple(camera or ["corner"]),
        size=size,
        action_noise=action_noise,
        action_labels=action_labels,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        max_steps=max_steps,
        hesitations=hesitations,
        corrections=corrections,
        operator=operator,  # type: ignore[arg-type]
        workers=workers,
        seed=seed,
    )
    _record_with_progress(
        out,
        len(tasks) * episodes,
        lambda on_episode: record_metaworld(out, cfg, on_episode),
        f" of {len(tasks)} tasks",
    )


def _check_operator(operator: str) -> None:
    if operator not in ("scripted", "smooth"):
        raise typer.BadParameter(f"--operator must be 'scripted' or 'smooth', not {operator!r}")


def _record_with_progress(
    out: str, total: int, record: Any, what: str = ""
) -> list[dict[str, Any]]:
    """Run a recorder with a progress bar; a bad task name is one line."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("recording", total=total)
        try:
            results: list[dict[str, Any]] = record(on_episode=lambda _s: progress.advance(bar))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
    done = [r for r in results if r["success"]]
    console.print(
        f"recorded {len(results)} episodes ({len(done)} successful){what} to {out}", soft_wrap=True
    )
    return results


@app.command("aloha")
def aloha(
    out: OutOpt,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="transfer-cube | insertion (repeatable).")
    ] = None,
    episodes: EpisodesOpt = 5,
    camera: Annotated[
        list[str] | None, typer.Option(help="Camera, repeatable (top, angle, left_wrist, ...).")
    ] = None,
    size: SizeOpt = 128,
    action_noise: Annotated[
        float,
        typer.Option(help="Pose jitter std, in units of the plan's median per-step move.", min=0.0),
    ] = 0.0,
    hesitations: HesitationsOpt = 0.0,
    corrections: CorrectionsOpt = 0.0,
    action_space: Annotated[
        str,
        typer.Option(help="ee: 16-D mocap targets; joint: 14-D joint positions reached (LeRobot)."),
    ] = "ee",
    operator: OperatorOpt = "scripted",
    workers: WorkersOpt = 1,
    seed: SeedOpt = 0,
) -> None:
    """Record bimanual ALOHA end-effector waypoint episodes with ground-truth events ("sim")."""
    try:
        from wallwm.pipeline.sim.aloha import TASKS, AlohaConfig, record_aloha
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise typer.BadParameter(
            f"gym-aloha is not installed ({exc}); pip install 'wallwm[sim]'"
        ) from exc
    try:
        cfg = AlohaConfig(
            tasks=tuple(task or TASKS),
            episodes=episodes,
            cameras=tuple(camera or ["top"]),
            size=size,
            action_noise=action_noise,
            hesitations=hesitations,
            corrections=corrections,
            workers=workers,
            seed=seed,
            action_space=action_space,
            operator=operator,
        )
    except ValueError as exc:  # the options AlohaConfig checks itself
        hint = "--operator" if str(exc).startswith("operator") else "--action-space"
        raise typer.BadParameter(str(exc), param_hint=hint) from exc
    _record_with_progress(
        out, len(cfg.tasks) * episodes, lambda on_episode: record_aloha(out, cfg, on_episode)
    )


@app.command("jaco")
def jaco(
    out: OutOpt,
    task: Annotated[list[str] | None, typer.Option("--task", help="lift | stack (repeatable).")] = (
        None
    ),
    episodes: EpisodesOpt = 5,
    size: SizeOpt = 128,
    action_noise: Annotated[
        float,
        typer.Option(help="Joint-velocity noise std, as a share of each joint's limit.", min=0.0),
    ] = 0.0,
    hesitations: HesitationsOpt = 0.0,
    operator: OperatorOpt = "scripted",
    workers: WorkersOpt = 1,
    seed: SeedOpt = 0,
) -> None:
    """Record Kinova Jaco joint-velocity episodes (dm_control) with ground-truth events."""
    try:
        from wallwm.pipeline.sim.jaco import TASKS, JacoConfig, record_jaco
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise typer.BadParameter(
            f"dm_control is not installed ({exc}); pip install 'wallwm[sim]'"
        ) from exc
    _check_operator(operator)
    cfg = JacoConfig(
        tasks=tuple(task or TASKS),
        episodes=episodes,
        size=size,
        action_noise=action_noise,
        hesitations=hesitations,
        operator=operator,  # type: ignore[arg-type]
        workers=workers,
        seed=seed,
    )
    _record_with_progress(
        out, len(cfg.tasks) * episodes, lambda on_episode: record_jaco(out, cfg, on_episode)
    )
