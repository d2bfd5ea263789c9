"""Trainer commands: ``materialize``, ``train`` (+ ``plot``), ``serve``, ``eval policy|offline``.

``eval policy`` runs a trained policy closed loop in MetaWorld, ``eval offline`` scores it on
held-out events: beside the trainer they evaluate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wallwm.cli.common import (
    BackboneDirOpt,
    DatasetOpt,
    JsonOpt,
    RayAddressOpt,
    console,
    err_console,
    eval_app,
    existing_dataset,
    out_folder,
    print_json,
    validation_message,
)

if TYPE_CHECKING:
    from rich.table import Table

    from wallwm.trainer.policy import ChunkPolicy

TrimOpt = Annotated[
    bool,
    typer.Option(
        "--trim/--no-trim", help="Leave out each episode's idle start and end (stored at ingest)."
    ),
]
ExcludeFlagOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude-flag",
        help="Leave out episodes with this quality flag (repeatable; see `wallwm quality`).",
    ),
]
CameraOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--camera", help="Camera stream the model sees, repeatable (default: every camera)."
    ),
]


def materialize_cmd(
    dataset: DatasetOpt,
    tag: Annotated[str | None, typer.Option(help="Curated snapshot (wallwm clusters tag).")] = None,
    size: Annotated[int, typer.Option(help="Frame side in pixels.", min=16, max=1024)] = 96,
    force: Annotated[bool, typer.Option(help="Rewrite an existing view.")] = False,
    camera: CameraOpt = None,
    trim: TrimOpt = True,
    exclude_flag: ExcludeFlagOpt = None,
) -> None:
    """Write the training view (resized frames, events, signals, norm stats) of a tag."""
    from wallwm.trainer.view import materialize

    try:
        with console.status("materialising"):
            s = materialize(
                dataset, tag, size, force, camera, trim=trim, exclude_flags=exclude_flag
            )
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(
        f"[bold]materialize[/]: {s.episodes} episodes, {s.events} events, {s.frames} "
        f"frames at {size}px -> {s.path} ({s.seconds:.1f} s"
        + (", frames of the previous view reused)" if s.frames_reused else ")"),
        soft_wrap=True,
    )


train_app = typer.Typer(help="Train on a curated snapshot; `wallwm train plot RUN` for curves.")

DeviceOpt = Annotated[
    str,
    typer.Option(
        help="auto (the GPU Ray assigns, else CUDA if present, else CPU) | cpu | cuda | cuda:N."
    ),
]
PrecisionOpt = Annotated[
    str, typer.Option(help="auto (bf16 autocast on GPUs, fp32 elsewhere) | fp32 | bf16.")
]


@train_app.callback(invoke_without_command=True)
def train_cmd(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Dataset root.")] = None,
    tag: Annotated[str | None, typer.Option(help="Curated snapshot (wallwm clusters tag).")] = None,
    mode: Annotated[str, typer.Option(help="event | unified | chunk | chunk_text")] = "event",
    preset: Annotated[str, typer.Option(help="debug | small | base | large")] = "small",
    steps: Annotated[int, typer.Option(help="Optimisation steps.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Samples per step, all workers together.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 50,
    weight_decay: Annotated[float, typer.Option(help="Decoupled weight decay.")] = 0.1,
    grad_clip: Annotated[float, typer.Option(help="Gradient norm clip.")] = 1.0,
    ema_decay: Annotated[float, typer.Option(help="EMA decay of the evaluation weights.")] = 0.999,
    h_max: Annotated[int, typer.Option(help="Event mode: longest action horizon, steps.")] = 8,
    chunk_len: Annotated[int, typer.Option(help="Chunk/unified modes: chunk length.")] = 8,
    caption_dropout: Annotated[
        float, typer.Option(help="Share of samples trained without their event text.")
    ] = 0.15,
    size: Annotated[int, typer.Option(help="Frame side of the training view.")] = 96,
    camera: CameraOpt = None,
    trim: TrimOpt = True,
    exclude_flag: ExcludeFlagOpt = None,
    out: Annotated[str, typer.Option(help="Run directory.", callback=out_folder)] = "runs/latest",
    resume: Annotated[bool, typer.Option(help="Continue from the run's checkpoint.")] = False,
    holdout: Annotated[
        float, typer.Option(help="Share of episodes held out for `wallwm eval offline`.")
    ] = 0.1,
    stop_after: Annotated[
        int | None, typer.Option(help="Stop with a checkpoint after N steps (time-boxed jobs).")
    ] = None,
    log_every: Annotated[int, typer.Option(help="Steps between logged metrics.")] = 10,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 100,
    loader_workers: Annotated[int, typer.Option(help="DataLoader processes per worker.")] = 0,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile every transformer block.")
    ] = False,
    num_workers: Annotated[int, typer.Option(help="Data-parallel Ray Train workers.")] = 1,
    ray_address: RayAddressOpt = None,
    local: Annotated[bool, typer.Option(help="Train in this process, without Ray Train.")] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="Local Hugging Face VLM directory (Qwen2-VL / Qwen2.5-VL) to train on; "
            "--preset then sizes the action expert."
        ),
    ] = None,
    lora_rank: Annotated[
        int, typer.Option(help="Backbone: LoRA rank of the language model (0: full fine-tune).")
    ] = 16,
    train_vision: Annotated[
        bool, typer.Option(help="Backbone: also train the vision tower.")
    ] = False,
    gradient_checkpointing: Annotated[
        bool, typer.Option(help="Backbone: recompute activations in the backward pass.")
    ] = False,
    backbone_lr_scale: Annotated[
        float, typer.Option(help="Backbone: learning rate relative to --lr.")
    ] = 0.1,
) -> None:
    """Train the World Action Model on a curated tag (Ray Train TorchTrainer by default)."""
    if ctx.invoked_subcommand is not None:
        return
    if dataset is None:
        raise typer.BadParameter("--dataset is required")
    existing_dataset(dataset)
    from pydantic import ValidationError

    from wallwm.trainer.train import TrainConfig, train

    try:
        cfg = TrainConfig(
            dataset=dataset,
            tag=tag,
            mode=mode,  # type: ignore[arg-type]
            preset=preset,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            warmup_steps=warmup_steps,
            weight_decay=weight_decay,
            grad_clip=grad_clip,
            ema_decay=ema_decay,
            h_max=h_max,
            chunk_len=chunk_len,
            caption_dropout=caption_dropout,
            size=size,
            cameras=camera,
            trim=trim,
            exclude_flags=exclude_flag or [],
            out=out,
            resume=resume,
            seed=seed,
            stop_after=stop_after,
            holdout=holdout,
            log_every=log_every,
            checkpoint_every=checkpoint_every,
            loader_workers=loader_workers,
            device=device,  # type: ignore[arg-type]
            precision=precision,  # type: ignore[arg-type]
            compile=compile_model,
            backbone=backbone,
            lora_rank=lora_rank,
            train_vision=train_vision,
            gradient_checkpointing=gradient_checkpointing,
            backbone_lr_scale=backbone_lr_scale,
        )
    except ValidationError as exc:
        err_console.print(f"[red]invalid options:[/] {validation_message(exc)}", soft_wrap=True)
        raise typer.Exit(2) from exc
    if local and (num_workers != 1 or ray_address):
        err_console.print("[red]--local trains in this process: no --num-workers/--ray-address[/]")
        raise typer.Exit(2)

    def run() -> dict[str, Any]:
        if local:
            history = train(cfg)
            return history[-1] if history else {}
        from wallwm.trainer.launch import train_ray

        return train_ray(cfg, num_workers=num_workers, ray_address=ray_address)

    from wallwm.trainer.lineage import recorded_training

    try:
        last = recorded_training(cfg, run, num_workers)
    except (ValueError, OSError) as exc:
        err_console.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(1) from exc
    model_name = f"{preset} expert on {Path(backbone).name}" if backbone else preset
    console.print(
        f"[bold]train[/] ({mode}, {model_name}): step {last.get('step', steps)}, "
        f"loss {last.get('loss', float('nan')):.4f}; checkpoint in {out}",
        soft_wrap=True,
    )


@train_app.command("plot")
def train_plot(
    run: Annotated[str, typer.Argument(help="Run directory (holds metrics.jsonl).")],
    out: Annotated[str, typer.Option("--out", "-o", help="PNG to write.")] = "loss.png",
) -> None:
    """Write a run's loss curves as a PNG."""
    from wallwm.trainer.logs import plot_run

    if not (Path(run) / "metrics.jsonl").is_file():
        err_console.print(f"[red]{run}: not a training run (no metrics.jsonl in it)[/]")
        raise typer.Exit(2)
    try:
        path = plot_run(run, out)
    except (OSError, ValueError) as exc:
        err_console.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(1) from exc
    console.print(f"wrote {path}")


def serve_cmd(
    checkpoint: Annotated[
        list[str], typer.Option("--checkpoint", help="Checkpoint to serve; repeat: one per mode.")
    ],
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token for /metadata and /infer.", envvar="WALLWM_SERVE_TOKEN"),
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="Largest micro-batch.")] = 32,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            help="Longest wait for batch-mates the recent load says are coming (0: never)."
        ),
    ] = 5.0,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, MiB.")] = 4.0,
    max_queue: Annotated[
        int, typer.Option(help="Requests waiting for the model at most (more: 503).")
    ] = 256,
    max_connections: Annotated[
        int, typer.Option(help="Open connections at most (more: 503).")
    ] = 512,
    flow_steps: Annotated[int, typer.Option(help="Euler steps of the action flow.")] = 10,
    noise_scale: Annotated[
        float, typer.Option(help="Temperature of the flow's starting noise (0: deterministic).")
    ] = 1.0,
    replicas: Annotated[
        int, typer.Option(help="0: serve from this process; N: a Ray Serve deployment.")
    ] = 0,
    ray_address: RayAddressOpt = None,
    device: Annotated[
        str, typer.Option(help="auto (CUDA if present) | cpu | cuda | cuda:N; replicas: a GPU each")
    ] = "auto",
    precision: PrecisionOpt = "auto",
    backbone: BackboneDirOpt = None,
) -> None:
    """Serve checkpoints as a policy server (HTTP; msgpack or JSON bodies)."""
    from pydantic import ValidationError

    from wallwm.trainer.serving.server import (
        ServeConfig,
        run_ray_serve,
        run_server,
        warn_if_exposed,
    )

    try:
        cfg = ServeConfig(
            checkpoints=checkpoint,
            host=host,
            port=port,
            token=token,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_body_bytes=int(max_body_mb * (1 << 20)),
            max_queue=max_queue,
            max_connections=max_connections,
            flow_steps=flow_steps,
            noise_scale=noise_scale,
            replicas=replicas,
            ray_address=ray_address,
            device=device,
            precision=precision,  # type: ignore[arg-type]
            backbone=backbone,
        )
    except ValidationError as exc:
        raise typer.BadParameter(validation_message(exc)) from exc
    warning = warn_if_exposed(cfg)
    if warning:
        err_console.print(f"[yellow]warning: {warning}[/]")

    def ready(url: str, app: Any) -> None:
        modes = ", ".join(app.metadata["modes"])
        console.print(f"[bold]serve[/]: {modes} on {url} (Ctrl-C stops)", soft_wrap=True)

    try:
        if replicas:
            run_ray_serve(
                cfg,
                on_ready=lambda url: console.print(
                    f"[bold]serve[/]: {replicas} Ray Serve replicas on {url} (Ctrl-C stops)"
                ),
            )
        else:
            run_server(cfg, on_ready=ready)
    except (ValueError, OSError) as exc:
        err_console.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(1) from exc


@eval_app.command("policy")
def eval_policy(
    task: Annotated[list[str], typer.Option("--task", help="MetaWorld task, repeatable; mt10.")],
    checkpoint: Annotated[
        str | None, typer.Option(help="Training checkpoint (checkpoint.pt), run in-process.")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="Policy server URL (wallwm serve), e.g. http://127.0.0.1:8000."),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Server bearer token.", envvar="WALLWM_SERVE_TOKEN")
    ] = None,
    mode: Annotated[str | None, typer.Option(help="Served mode (the server's default).")] = None,
    sim: Annotated[str, typer.Option(help="Simulator (metaworld).")] = "metaworld",
    episodes: Annotated[int, typer.Option(help="Episodes per task.")] = 50,
    max_steps: Annotated[
        int, typer.Option(help="Step limit per episode (MetaWorld's own limit is 500).")
    ] = 500,
    camera: Annotated[
        list[str] | None,
        typer.Option(
            help="MetaWorld camera(s) to render, in the model's order (default: a multi-camera "
            "model's own cameras, else corner)."
        ),
    ] = None,
    replan_every: Annotated[int, typer.Option(help="Executed steps between replans.")] = 8,
    noise_scale: Annotated[
        float,
        typer.Option(
            help="Temperature of the flow's starting noise, local checkpoints (0: deterministic)."
        ),
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Evaluation seed (held-out initial states).")] = 0,
    device: Annotated[
        str, typer.Option(help="Where a --checkpoint runs: auto (CUDA if present) | cpu | cuda.")
    ] = "auto",
    backbone: BackboneDirOpt = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            "-d",
            help="Attribute failures to this dataset's clusters (the events failed rollouts "
            "ended in, against each cluster's weight and share of the samples).",
            callback=existing_dataset,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Closed-loop success rate (95 % interval) in MetaWorld (extra "sim").

    The policy runs in this process (--checkpoint) or on a policy server (--server):
    both follow the same plan logic, so the served path can be checked against the local one.
    """
    if sim != "metaworld":
        raise typer.BadParameter(f"unknown simulator {sim!r} (metaworld)")
    if (checkpoint is None) == (server is None):
        raise typer.BadParameter("give exactly one of --checkpoint or --server")
    if server is not None and noise_scale != 1.0:  # never silently ignored
        raise typer.BadParameter("--noise-scale applies to --checkpoint; a server has its own")
    if server is not None and device != "auto":
        raise typer.BadParameter("--device applies to --checkpoint; a server has its own")
    from wallwm.pipeline.sim.metaworld import MT10
    from wallwm.trainer.evaluate import evaluate_metaworld

    tasks = [
        t2
        for t in task
        for t2 in (MT10 if t.lower() == "mt10" else [t if t.endswith("-v3") else f"{t}-v3"])
    ]
    try:
        policy = _load_policy(
            checkpoint, server, token, mode, replan_every, seed, noise_scale, device, backbone
        )
    except (OSError, KeyError, RuntimeError, ValueError) as exc:
        err_console.print(
            f"[red]cannot load the policy from {server or checkpoint}: {exc}[/]", soft_wrap=True
        )
        raise typer.Exit(1) from exc
    # a multi-camera model names the views it reads; one view is rendered from --camera
    multi = list(policy.spec.cameras) if len(policy.spec.cameras) > 1 else None
    cameras = camera or multi or ["corner"]
    try:
        with console.status(f"evaluating {len(tasks)} tasks x {episodes} episodes"):
            result = evaluate_metaworld(
                policy,
                tasks,
                episodes,
                policy.spec.image_size,
                cameras,
                max_steps,
                seed,
                state_dim=policy.spec.state_dim,
            )
    except ValueError as exc:  # an unknown camera, views or a state that do not fit the model
        err_console.print(
            f"[red]cannot evaluate in MetaWorld (cameras {cameras}): {exc}[/]", soft_wrap=True
        )
        raise typer.Exit(1) from exc
    attribution = _attribution(dataset, result) if dataset else None
    if as_json:
        print_json({**result, **({"attribution": attribution} if attribution else {})})
        return
    console.print(_success_table(result, f"{policy.mode} mode, {episodes} episodes per task"))
    if attribution:
        console.print(_attribution_table(attribution))


def _attribution(dataset: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    from wallwm.clustering.attribution import failure_attribution
    from wallwm.pipeline.tables.store import LanceStore

    try:
        return failure_attribution(LanceStore(dataset), result)
    except ValueError as exc:
        err_console.print(f"[red]--dataset {dataset}: {exc}[/]")
        raise typer.Exit(1) from exc


def _attribution_table(rows: list[dict[str, Any]]) -> Table:
    """Failures per cluster against its weight and sample share (clusters with either)."""
    from rich.table import Table

    table = Table(title="where the policy failed (the event each failed rollout ended in)")
    for col in ("cluster", "label", "weight", "sample share", "failures", "failure share"):
        table.add_column(col)
    for r in rows:
        if r["failures"] or r["sample_share"] > 0:
            table.add_row(
                r["cluster_id"], r["label"], f"{r['weight']:g}", f"{r['sample_share']:.1%}",
                str(r["failures"]), f"{r['failure_share']:.1%}",
            )  # fmt: skip
    return table


def _load_policy(
    checkpoint: str | None,
    server: str | None,
    token: str | None,
    mode: str | None,
    replan_every: int,
    seed: int,
    noise_scale: float,
    device: str = "auto",
    backbone: str | None = None,
) -> ChunkPolicy:
    """The policy ``eval policy`` runs: a local checkpoint or a client of a policy server."""
    if server is not None:
        from wallwm.trainer.serving.client import PolicyClient, RemotePolicy

        return RemotePolicy(PolicyClient(server, token), mode, replan_every=replan_every, seed=seed)
    from wallwm.trainer.policy import LocalPolicy

    assert checkpoint is not None  # the command checks exactly one of the two is given
    return LocalPolicy(
        checkpoint,
        replan_every=replan_every,
        seed=seed,
        noise_scale=noise_scale,
        device=device,
        backbone_path=backbone,
    )


def _success_table(result: dict[str, Any], title: str) -> Table:
    """Per-task and overall success with the 95 % interval, as ``eval policy`` prints it."""
    from rich.table import Table

    table = Table(title=f"closed-loop success ({title})")
    for col in ("task", "success", "95% interval"):
        table.add_column(col)
    for name, r in [*result["per_task"].items(), ("overall", result["overall"])]:
        table.add_row(
            name,
            f"{r['successes']}/{r['episodes']} = {r['success_rate']:.0%}",
            f"[{r['ci95'][0]:.0%}, {r['ci95'][1]:.0%}]",
        )
    return table


@eval_app.command("offline")
def eval_offline(
    checkpoint: Annotated[str, typer.Option(help="Training checkpoint (checkpoint.pt).")],
    batches: Annotated[int, typer.Option(help="Batches of held-out samples.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Samples per batch.")] = 32,
    device: Annotated[str, typer.Option(help="auto (CUDA if present) | cpu | cuda.")] = "auto",
    backbone: BackboneDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Losses, action error and next-event retrieval on the episodes held out of training."""
    from wallwm.trainer.evaluate import evaluate_offline

    try:
        result = evaluate_offline(
            checkpoint, batches, batch_size, device=device, backbone_path=backbone
        )
    except (ValueError, OSError, KeyError) as exc:
        err_console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    if as_json:
        print_json(result)
        return
    console.print(f"held-out events: {result['held_out_events']} ({result['batches']} batches)")
    for key, value in result["metrics"].items():
        console.print(f"  {key:>16}: {value:.4f}")
