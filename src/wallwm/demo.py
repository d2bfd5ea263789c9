"""``make demo``: the main job end to end on built-in defaults.

Records simulated robot episodes (MetaWorld's scripted experts: 3 tasks x 5 episodes), then runs
every stage that exists on a local Ray and a local Lance dataset under ``./demo``: ingest +
segment in one decode pass, captions (signal fallback), embeddings, clusters and the HTML report,
a curated tag, the training view, a short training run and a closed-loop evaluation, in-process
and through the policy server (on 127.0.0.1, a free port, with a token); it shows
the status table and the segmentation quality against the recorder's ground truth. Each stage
joins here as it lands.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.inspect import list_events
from wallwm.pipeline.tables.store import LanceStore

TASKS = ("pick-place", "drawer-open", "button-press-topdown")


def _run(args: list[str]) -> str:
    typer.echo(f"\n$ wallwm {' '.join(args)}")
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    typer.echo(result.output, nl=False)
    if result.exit_code != 0:
        sys.exit(f"demo step failed (exit {result.exit_code}): wallwm {' '.join(args)}")
    return result.output


def main(root: str = "demo") -> None:
    """Run the demo under ``root`` (recreated from scratch)."""
    base = Path(root)
    shutil.rmtree(base, ignore_errors=True)
    source, dataset = str(base / "source"), str(base / "dataset")
    tasks = [arg for t in TASKS for arg in ("--task", t)]
    _run(["sim", "record", "--out", source, *tasks, "--episodes", "5", "--size", "128"])
    _run(["run", source, "--dataset", dataset])
    typer.echo("\nre-running is a no-op (nothing changed, nothing written):")
    _run(["run", source, "--dataset", dataset])
    _run(["status", "--dataset", dataset])
    _run(["eval", "segmentation", "--dataset", dataset, "--tolerance-frames", "3"])
    events = list_events(LanceStore(dataset))
    episode = events[0]["episode_id"]
    _run(["events", "list", "--dataset", dataset, "--episode", episode])
    _run(["episode", "plot", episode, "--dataset", dataset, "--out", str(base / "episode.png")])
    _run(
        [
            "events",
            "show",
            events[1]["event_id"],
            "--dataset",
            dataset,
            "--out",
            str(base / "event.png"),
        ]
    )
    _run(["clusters", "list", "--dataset", dataset, "--level", "1"])
    _run(["quality", "--dataset", dataset])
    _run(["report", "--dataset", dataset, "--out", str(base / "report")])
    _run(["clusters", "tag", "demo-v1", "--dataset", dataset])
    _run(["materialize", "--dataset", dataset, "--tag", "demo-v1", "--size", "64"])
    export = ["export", "lerobot", "--dataset", dataset, "--tag", "demo-v1"]
    _run([*export, "--out", str(base / "lerobot"), "--overwrite"])
    run_dir = str(base / "run")
    _run(
        [
            "train",
            "--dataset",
            dataset,
            "--tag",
            "demo-v1",
            "--size",
            "64",
            "--preset",
            "debug",
            "--steps",
            "40",
            "--batch-size",
            "16",
            "--lr",
            "3e-3",
            "--out",
            run_dir,
            "--local",
        ]
    )
    _run(["train", "plot", run_dir, "--out", str(base / "loss.png")])
    _run(
        [
            "eval",
            "policy",
            "--checkpoint",
            f"{run_dir}/checkpoint.pt",
            "--task",
            "pick-place",
            "--episodes",
            "2",
            "--max-steps",
            "60",
        ]
    )
    _serve_and_evaluate(f"{run_dir}/checkpoint.pt")
    typer.echo(
        "\ncaptions here come from the signal-based fallback (no VLM on this machine); with a VLM "
        "server: wallwm caption --dataset demo/dataset --backend openai --base-url URL --model NAME"
    )
    typer.echo(
        f"\ndemo done: dataset in {dataset}, pictures in {base}/episode.png and "
        f"{base}/event.png, cluster report in {base}/report/index.html and episode browser in "
        f"{base}/report/episodes.html, the curated data as LeRobot v3.0 in {base}/lerobot, "
        "training curves in "
        f"{base}/loss.png (a 40-step debug model: the success rate shows the path works, "
        "not what training for an hour reaches)"
    )


def _serve_and_evaluate(checkpoint: str) -> None:
    """Serve the checkpoint, query it once, and run the same evaluation through the server."""
    import secrets

    from wallwm.trainer.serving.client import PolicyClient
    from wallwm.trainer.serving.server import ServeConfig, start_in_thread

    token = secrets.token_urlsafe(16)
    typer.echo(f"\n$ wallwm serve --checkpoint {checkpoint} --port 0 --token ***  (in a thread)")
    server = start_in_thread(ServeConfig(checkpoints=[checkpoint], port=0, token=token))
    try:
        client = PolicyClient(server.url, token=token)
        meta = client.metadata()
        typer.echo(f"serving {meta['modes']} on {server.url}; health: {client.health()}")
        os.environ["WALLWM_SERVE_TOKEN"] = token  # read by --token; keeps it off the screen
        _run(
            [
                *("eval", "policy", "--server", server.url),
                *("--task", "pick-place", "--episodes", "2", "--max-steps", "60"),
            ]
        )
        typer.echo("(the same plan follower as in-process: the same successes, through HTTP)")
    finally:
        os.environ.pop("WALLWM_SERVE_TOKEN", None)
        server.stop()


if __name__ == "__main__":
    main(*sys.argv[1:])
