"""``make demo``: the main job end to end on built-in defaults.

Records simulated episodes, then runs every stage that exists on a local Ray and a local Lance
dataset under ``./demo``. Each stage joins here as it lands.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from wallwm.cli.main import app


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
    _run(
        [
            "sim",
            "synth",
            "--out",
            source,
            "--episodes",
            "15",
            "--camera",
            "top",
            "--camera",
            "side",
            "--seed",
            "7",
        ]
    )
    _run(["ingest", source, "--dataset", dataset])
    typer.echo("\nre-running ingest on the same source is a no-op:")
    _run(["ingest", source, "--dataset", dataset])
    _run(["status", "--dataset", dataset])


if __name__ == "__main__":
    main(*sys.argv[1:])
