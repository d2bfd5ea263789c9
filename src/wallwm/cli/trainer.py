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


train_app = typer.Typer(help="Train on a curated snapshot; `wallwm train plot RUN` for curves.")


@train_app.callback(invoke_without_command=True)
def train_cmd(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset root.")] = None,
    tag: Annotated[str | None, typer.Option(help="Curated snapshot (wallwm clusters tag).")] = None,
    mode: Annotated[str, typer.Option(help="event | unified | chunk | chunk_text")] = "event",
    preset: Annotated[str, typer.Option(help="debug | small | base")] = "small",
    steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    size: Annotated[int, typer.Option(help="Frame side of the training view.")] = 96,
    out: Annotated[str, typer.Option(help="Run directory.")] = "runs/latest",
    resume: Annotated[bool, typer.Option(help="Continue from the run's checkpoint.")] = False,
    holdout: Annotated[
        float, typer.Option(help="Share of episodes held out for `wallwm eval offline`.")
    ] = 0.1,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop with a checkpoint after N steps (time-boxed jobs).")
    ] = None,
    num_workers: Annotated[int, typer.Option(help="Ray Train workers (DDP).")] = 1,
    use_gpu: Annotated[bool, typer.Option(help="One GPU per worker.")] = False,
    local: Annotated[bool, typer.Option(help="Train in this process, without Ray Train.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train the World Action Model on a curated tag (Ray Train TorchTrainer by default)."""
    if ctx.invoked_subcommand is not None:
        return
    if dataset is None:
        raise typer.BadParameter("--dataset is required")
    from pydantic import ValidationError

    from wallwm.trainer.train import TrainConfig, train, train_ray

    try:
        cfg = TrainConfig(
            dataset=dataset,
            tag=tag,
            mode=mode,
            preset=preset,
            steps=steps,  # type: ignore[arg-type]
            batch_size=batch_size,
            lr=lr,
            size=size,
            out=out,
            resume=resume,
            seed=seed,
            stop_after=stop_after,
            holdout=holdout,
        )
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        if local:
            history = train(cfg)
            last = history[-1] if history else {}
        else:
            last = train_ray(cfg, num_workers=num_workers, use_gpu=use_gpu)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(
        f"[bold]train[/] ({mode}, {preset}): step {last.get('step', steps)}, "
        f"loss {last.get('loss', float('nan')):.4f}; checkpoint in {out}",
        soft_wrap=True,
    )


@train_app.command("plot")
def train_plot(
    run: Annotated[str, typer.Argument(help="Run directory (holds metrics.jsonl).")],
    out: Annotated[str, typer.Option("--out", "-o", help="PNG to write.")] = "loss.png",
) -> None:
    """Write a run's loss curves as a PNG."""
    from wallwm.trainer.train import plot_run

    try:
        path = plot_run(run, out)
    except (OSError, ValueError) as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"wrote {path}")
