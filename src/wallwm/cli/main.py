"""The root ``wallwm`` typer app. Sub-apps live next to it, one per part of the product.

Heavy libraries (Ray, Lance, torch, PyAV) are imported inside command bodies so that ``--help``
and shell completion stay instant.
"""

from __future__ import annotations

import re
from pathlib import Path

import typer

from wallwm.cli import caption as caption_cli
from wallwm.cli import clustering as clustering_cli
from wallwm.cli import export as export_cli
from wallwm.cli import pipeline as pipeline_cli
from wallwm.cli import segment as segment_cli
from wallwm.cli import sim as sim_cli
from wallwm.cli import trainer as trainer_cli
from wallwm.cli.common import err_console, eval_app

app = typer.Typer(
    name="wallwm",
    help="Event-grounded robot data engine: ingest, segment, caption, cluster, train, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("inspect")(pipeline_cli.inspect_cmd)
app.command("ingest")(pipeline_cli.ingest)
app.command("status")(pipeline_cli.status)
app.command("failures")(pipeline_cli.failures)
app.command("quality")(pipeline_cli.quality)
app.command("segment")(segment_cli.segment_cmd)
app.command("run")(segment_cli.run_cmd)
app.command("caption")(caption_cli.caption_cmd)
app.command("embed")(clustering_cli.embed_cmd)
app.command("cluster")(clustering_cli.cluster_cmd)
app.add_typer(clustering_cli.clusters_app, name="clusters")
app.command("report")(clustering_cli.report_cmd)
app.command("materialize")(trainer_cli.materialize_cmd)
app.add_typer(trainer_cli.train_app, name="train")
app.command("serve")(trainer_cli.serve_cmd)
app.add_typer(export_cli.app, name="export")
segment_cli.events_app.command("similar")(clustering_cli.events_similar)
app.add_typer(segment_cli.events_app, name="events")
app.add_typer(segment_cli.episode_app, name="episode")
app.add_typer(eval_app, name="eval")
app.add_typer(sim_cli.app, name="sim", help="Record simulated robot episodes (folder format).")


@app.command("version")
def version() -> None:
    """Print the wallwm version (with the git commit in a source checkout)."""
    from wallwm.pipeline.tables.lineage import code_version

    typer.echo(code_version())


def main() -> None:
    """The ``wallwm`` console script: the app, with a damaged dataset and Ctrl-C said in one line.

    A Lance table whose files were deleted, truncated or half-copied fails deep inside Lance or
    Arrow, in whichever command reads it first; every command answers the same way instead of
    with a traceback: the file, and that the table is damaged. Ctrl-C exits 130 (typer's) with
    a line saying what was kept; Ray started by the command is shut down here, where a second
    Ctrl-C is caught, not in its exit hook (which printed a traceback for it).
    """
    had_ray = _ray_running()
    try:
        app()
    except SystemExit as exc:
        if exc.code == INTERRUPTED:
            err_console.print(INTERRUPTED_LINE, soft_wrap=True)
        raise
    except Exception as exc:
        problem = damaged_table(exc)
        if problem is None:
            raise
        err_console.print(f"[red]{problem}[/]", soft_wrap=True)
        raise SystemExit(1) from None
    finally:
        if not had_ray:
            _stop_ray()


#: The exit code of a command stopped by Ctrl-C (typer's, the shell's 128 + SIGINT).
INTERRUPTED = 130
INTERRUPTED_LINE = (
    "[yellow]interrupted: what was written before it is kept -- run the same command again to "
    "finish (stages skip what is done; `train` takes --resume)[/]"
)


def _ray_running() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _stop_ray() -> None:
    """Shut down the Ray this command started (a no-op where it started none)."""
    if not _ray_running():
        return
    import ray

    try:
        ray.shutdown()
    except KeyboardInterrupt:  # Ctrl-C while Ray stops its workers (it takes seconds)
        err_console.print(INTERRUPTED_LINE, soft_wrap=True)
        raise SystemExit(INTERRUPTED) from None


#: Lance's and Arrow's words for a table file that is gone or unreadable.
_DAMAGE = re.compile(
    r"not found|no such file|corrupt|invalid (?:file|manifest)|unexpected eof", re.I
)


#: The command that writes each table anew (a damaged one is re-created by running it again).
_WRITTEN_BY = {"episodes": "ingest", "events": "segment", "clusters": "cluster"}


def damaged_table(exc: BaseException) -> str | None:
    """One line for an error that is a damaged Lance table (in ``exc`` or its causes), else None."""
    seen: BaseException | None = exc
    while seen is not None:
        text = re.sub(r",?\s*\S+\.rs:\d+:\d+", "", str(seen))  # Lance's own source lines
        path = re.search(r"(\S*?\.lance)(?:/\S*)?", text)
        if path and _DAMAGE.search(text):
            table = path.group(1).rstrip(",")
            if not table.startswith("/") and Path("/" + table).exists():
                table = "/" + table  # Lance drops the leading slash of a local path
            name = Path(table).name.removesuffix(".lance")
            again = f"`wallwm {_WRITTEN_BY[name]}`" if name in _WRITTEN_BY else "its stage"
            first = text.strip().splitlines()[0][:300]
            return (
                f"{table}: the table is damaged ({first}); restore the dataset folder from a "
                f"copy, or write this table again with {again} into a new dataset"
            )
        seen = seen.__cause__ or seen.__context__
    return None


if __name__ == "__main__":
    main()
