"""Simulator commands: ``wallwm sim synth`` (built-in) records episodes in the folder format."""

from __future__ import annotations

from typing import Annotated

import typer

from wallwm.cli.common import console

app = typer.Typer(no_args_is_help=True)


@app.command("synth")
def synth(
    out: Annotated[str, typer.Option("--out", "-o", help="Output folder (folder source format).")],
    episodes: Annotated[int, typer.Option(help="Number of episodes.")] = 6,
    task: Annotated[
        list[str] | None, typer.Option("--task", help="pick-place | push | reach (repeatable).")
    ] = None,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 96,
    fps: Annotated[float, typer.Option(help="Recording frame rate.")] = 20.0,
    camera: Annotated[
        list[str] | None, typer.Option("--camera", help="top | side (repeatable).")
    ] = None,
    action_noise: Annotated[float, typer.Option(help="Relative action noise.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
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
