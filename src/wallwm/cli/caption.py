"""``wallwm caption``: caption every event with a VLM (or the signal fallback)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from wallwm.cli.common import DatasetOpt, console, err_console, progress_bar, require_events

if TYPE_CHECKING:
    from wallwm.captioner.backends import BackendConfig


def backend_config(
    backend: str, base_url: str | None, model: str | None, concurrency: int, max_tokens: int
) -> BackendConfig:
    """Typed backend config from CLI options (clear errors for missing pieces)."""
    import difflib

    from wallwm.captioner.backends import (
        OpenAIBackendConfig,
        SignalsBackendConfig,
        VllmBackendConfig,
    )

    kinds = ("signals", "openai", "vllm")
    if backend not in kinds:
        close = difflib.get_close_matches(backend, kinds, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise typer.BadParameter(f"unknown backend {backend!r} (choose from {kinds}){hint}")
    if backend == "signals":
        return SignalsBackendConfig()
    if not model:
        raise typer.BadParameter(f"--model is required with --backend {backend}")
    if backend == "openai":
        return OpenAIBackendConfig(
            base_url=base_url or "http://127.0.0.1:8000/v1",
            model=model,
            concurrency=concurrency,
            max_tokens=max_tokens,
        )
    if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
        # a path, not a hub name: the engine would start on every GPU and fail there, late
        raise typer.BadParameter(f"--model {model}: no such model directory")
    return VllmBackendConfig(model=model, max_tokens=max_tokens)


BackendOpt = Annotated[str, typer.Option(help="signals | openai | vllm")]
BaseUrlOpt = Annotated[
    str | None, typer.Option(help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
]
ModelOpt = Annotated[
    str | None, typer.Option(help="Model name (openai) or local model directory (vllm).")
]
ConcurrencyOpt = Annotated[int, typer.Option(help="Requests in flight (openai).")]
MaxTokensOpt = Annotated[int, typer.Option(help="Output token budget per caption.")]


def caption_with_progress(
    dataset: str,
    backend: BackendConfig,
    limit: int | None = None,
    prompt: str = "event_v1",
    max_images: int = 3,
    grid: bool = False,
) -> int:
    """Run the caption stage with a progress bar; returns the exit code."""
    from wallwm.captioner.backends import CaptionResult
    from wallwm.captioner.stage import SERVER_DOWN, CaptionStageConfig, run_caption

    cfg = CaptionStageConfig(
        dataset=dataset,
        backend=backend,
        limit=limit,
        prompt=prompt,
        max_images=max_images,
        grid=grid,
    )
    with progress_bar("caption", "{task.fields[rate]}") as progress:
        task = progress.add_task("caption", total=None, rate="")
        tokens = 0

        def on_result(r: CaptionResult) -> None:
            nonlocal tokens
            tokens += r.prompt_tokens + r.completion_tokens
            elapsed = progress.tasks[0].elapsed or 1e-9
            done = progress.tasks[0].completed + 1
            progress.update(
                task, advance=1, rate=f"{done / elapsed:.1f} events/s {tokens / elapsed:,.0f} tok/s"
            )

        try:
            summary = run_caption(
                cfg, on_start=lambda n: progress.update(task, total=n), on_result=on_result
            )
        except ValueError as exc:  # unknown prompt template and the like
            err_console.print(f"[red]{exc}[/]")
            return 2
    shown = [f for f in summary.failures if f.error_class != SERVER_DOWN]
    for f in shown[:20]:
        console.print(f"[red]failed[/] {f.file}: {f.error_class}: {f.problem}", soft_wrap=True)
    if len(shown) > 20:
        console.print(f"... and {len(shown) - 20} more (wallwm failures)")
    if summary.unsent:
        err_console.print(
            f"[red]caption: {summary.unsent} events {summary.unsent_reason}[/]; rerun "
            "`wallwm caption` once it is back (what was captioned is kept)",
            soft_wrap=True,
        )
    console.print(
        f"[bold]caption[/] ({backend.kind}): {summary.captioned} captioned, "
        f"{summary.cached} cached, {summary.reasked} re-asked, [red]{summary.failed} failed[/] "
        f"of {summary.events} events in {summary.seconds:.1f} s = "
        f"{summary.events_per_s:.1f} events/s, "
        f"{summary.tokens_per_s:,.0f} tokens/s",
        soft_wrap=True,
    )
    if summary.unsent:
        return 1  # the run stopped short: a scheduler must see it
    return 1 if summary.failed and not summary.captioned and not summary.cached else 0


def caption_cmd(
    dataset: DatasetOpt,
    backend: BackendOpt = "signals",
    base_url: BaseUrlOpt = None,
    model: ModelOpt = None,
    limit: Annotated[int | None, typer.Option(help="Caption at most N events.")] = None,
    concurrency: ConcurrencyOpt = 64,
    max_tokens: MaxTokensOpt = 128,
    prompt: Annotated[
        str, typer.Option(help="Prompt template (captioner/prompts/*.txt).")
    ] = "event_v1",
    max_images: Annotated[int, typer.Option(help="Keyframes per prompt.")] = 3,
    grid: Annotated[bool, typer.Option(help="Tile all keyframes into one image.")] = False,
) -> None:
    """Caption every event whose prompt, model or previous caption changed."""
    require_events(dataset)
    cfg = backend_config(backend, base_url, model, concurrency, max_tokens)
    raise typer.Exit(caption_with_progress(dataset, cfg, limit, prompt, max_images, grid))
