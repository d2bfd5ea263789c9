"""Shared CLI helpers: options, console, JSON output."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(highlight=False)
#: Errors are one line each: never wrapped at the terminal width (a log or grep sees one line).
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def progress_bar(name: str, *extra: str) -> Progress:
    """The progress bar of a long command: its name, the bar, done of total, elapsed time.

    ``extra``: templates of columns shown before the time (``"{task.fields[rate]}"``). The bar
    is gone when the work is done (the command's summary line says the rest), and is not drawn
    where the output is no terminal (a log, a pipe): there it left an empty line behind.
    """
    return Progress(
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(column) for column in extra),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


#: ``wallwm eval``: each part registers the evaluation of what it makes (segmentation beside the
#: segmenter, policies beside the trainer).
eval_app = typer.Typer(no_args_is_help=True, help="Measure the pipeline against ground truth.")


def _refuse(message: str) -> typer.Exit:
    err_console.print(f"[red]{message}[/]", soft_wrap=True)
    return typer.Exit(2)


def existing_dataset(dataset: str | None) -> str | None:
    """``--dataset`` of a command that reads one: it must exist (only ingest/run create one).

    A missing or empty folder is one line on stderr and exit 2 -- before anything opens it (the
    table store would otherwise create the folder and answer with empty tables). An object-store
    URI must hold an ``episodes`` table.
    """
    if dataset and "://" in dataset:
        from wallwm.pipeline.tables import schemas
        from wallwm.pipeline.tables.store import LanceStore

        try:
            found = LanceStore(dataset).exists(schemas.EPISODES)
        except (OSError, RuntimeError, ValueError) as exc:  # credentials, network
            raise _refuse(f"--dataset {dataset}: cannot be read ({exc})") from exc
        if not found:
            raise _refuse(f"--dataset {dataset}: not a wallwm dataset (no episodes table there)")
    elif dataset:
        root = Path(dataset)
        if not root.is_dir():
            raise _refuse(
                f"--dataset {dataset}: no such folder (create a dataset with "
                "`wallwm ingest SOURCE --dataset DIR` or `wallwm run`)"
            )
        if not any(root.glob("*.lance")):
            raise _refuse(f"--dataset {dataset}: not a wallwm dataset (no Lance tables in it)")
    return dataset


def require_events(dataset: str) -> None:
    """A stage that reads events, run before any were written: one line and exit 1."""
    from wallwm.pipeline.tables import schemas
    from wallwm.pipeline.tables.store import LanceStore

    if not LanceStore(dataset).exists(schemas.EVENTS):
        err_console.print("[red]no events yet: run `wallwm segment` first[/]", soft_wrap=True)
        raise typer.Exit(1)


def folder_to_write(path: str, option: str) -> str:
    """A folder a command creates or writes into: refused in one line when it cannot be one."""
    if path and "://" not in path:
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise _refuse(f"{option} {path}: exists and is not a folder")
        parent = next((a for a in p.absolute().parents if a.exists()), None)
        if parent is not None and not parent.is_dir():
            raise _refuse(f"{option} {path}: {parent} is a file, not a folder")
    return path


def new_dataset(dataset: str) -> str:
    """``--dataset`` of ingest/run: created when missing, so it must be able to be a folder."""
    return folder_to_write(dataset, "--dataset")


def out_folder(path: str) -> str:
    """``--out`` folders (recordings, reports, training runs)."""
    return folder_to_write(path, "--out")


#: How to bring a remote SOURCE to disk, by URL scheme (sources are read from local files).
_COPY_COMMANDS = {
    "gs": "gcloud storage cp -r {url} DIR",  # Open X-Embodiment's RLDS datasets live there
    "s3": "aws s3 sync {url} DIR",
    "hf": "huggingface-cli download --repo-type dataset REPO --local-dir DIR",
}


def existing_source(source: str) -> str:
    """The SOURCE of ingest/run: a local path must exist (a typo must not create a dataset)."""
    scheme, sep, _ = source.partition("://")
    if sep and scheme != "file":
        command = _COPY_COMMANDS.get(scheme.lower())
        copy = f" (`{command.format(url=source)}`)" if command else " to a local DIR"
        raise _refuse(
            f"SOURCE {source}: sources are read from local disk (the --dataset may live on "
            f"object storage); copy it first{copy}, then ingest DIR"
        )
    source = source.removeprefix("file://") if sep else source
    if source and not Path(source).exists():
        hint = ""
        if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith("."):
            # a Hub repo id (lerobot/pusht): sources are read from disk, never downloaded
            hint = (
                f" (a Hugging Face dataset? download it first: `huggingface-cli download "
                f"--repo-type dataset {source} --local-dir DIR`, then ingest DIR)"
            )
        raise _refuse(f"SOURCE {source}: no such file or folder{hint}")
    return source


#: The SOURCE argument of ingest and run.
SourceArg = Annotated[
    str,
    typer.Argument(
        help="LeRobot dataset dir, folder source, HDF5 file/dir, Zarr replay buffer, RLDS "
        "dataset (TFDS directory), or ROS bag(s).",
        callback=existing_source,
    ),
]

#: ``--dataset`` of commands that read a dataset (it must exist).
DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="Dataset root directory (holds the Lance tables).",
        callback=existing_dataset,
    ),
]
#: ``--dataset`` of the commands that create one (ingest, run).
NewDatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="Dataset root directory (created, or added to when it exists).",
        callback=new_dataset,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
BackboneDirOpt = Annotated[
    str | None,
    typer.Option(
        "--backbone",
        help="Where a backbone checkpoint's VLM directory is on this machine (default: the "
        "path it trained with; its content must match).",
    ),
]


def reachable_ray(address: str | None) -> str | None:
    """``--ray-address``: a cluster must answer there (``ray.init`` would wait for minutes)."""
    if address:
        from wallwm.pipeline.runtime import check_ray_address

        try:
            check_ray_address(address)
        except ValueError as exc:
            raise _refuse(str(exc)) from exc
    return address


RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Join a running Ray cluster instead of a local Ray.",
        callback=reachable_ray,
    ),
]
#: The options that tell a reader what the source does not store (ingest, run, inspect).
FormatOpt = Annotated[
    str,
    typer.Option("--format", "-f", help="auto | lerobot | folder | hdf5 | zarr | rlds | rosbag"),
]
InstructionOpt = Annotated[
    str | None,
    typer.Option(help="Instruction for episodes that carry none (e.g. HDF5, Zarr, RLDS)."),
]
FpsOpt = Annotated[
    float | None,
    typer.Option(
        help="Frame rate for sources that store none (HDF5, Zarr, RLDS); a ROS bag is read at "
        "this rate (default: its first camera's)."
    ),
]
RobotOpt = Annotated[
    str | None,
    typer.Option(
        help="The robot's name for sources that store none (RLDS, HDF5, ROS bags): kept with "
        "every episode, the per-robot rows of `eval segmentation`, the LeRobot export's "
        "robot_type."
    ),
]
ActionTopicOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--action-topic",
        help="A ROS bag topic whose messages are the actions (repeat for several, concatenated "
        "in order; default: every command topic).",
    ),
]
EpisodeTopicOpt = Annotated[
    str | None,
    typer.Option(
        "--episode-topic",
        help="A ROS bag topic whose messages mark where its episodes begin: a std_msgs/Bool "
        "(true begins one, false ends it) or any other type (each message begins the next); "
        "default: one bag, one episode.",
    ),
]
GripperOpenOpt = Annotated[
    str,
    typer.Option(
        help="Which end of the source's gripper values is open: auto (LeRobot gripper commands: "
        "the end most episodes start at) | high | low (e.g. LIBERO/MetaWorld commands, +1 closes).",
    ),
]


CameraMapOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--camera-map",
        help="OLD=NEW: rename a source camera as it is read (repeatable), so sources merged "
        "into one dataset share camera names.",
    ),
]


def camera_map(items: list[str] | None) -> dict[str, str]:
    """``--camera-map`` items as a mapping; a malformed one is one line and exit 2."""
    from wallwm.pipeline.sources.merge import parse_camera_map

    try:
        return parse_camera_map(items or [])
    except ValueError as exc:
        raise _refuse(str(exc)) from exc


def validation_message(exc: Any) -> str:
    """A pydantic ``ValidationError`` as one line naming each option and what is wrong."""
    parts = []
    for error in exc.errors():
        loc = "-".join(str(x) for x in error["loc"]).replace("_", "-")
        name = f"--{loc}" if loc else ""
        parts.append(f"{name}: {error['msg']}" if name else error["msg"])
    return "; ".join(parts)


def print_readings(counts: dict[str, int], episodes: int | None = None) -> None:
    """What a run's cut read differently from the stored signals (a recorder's ways)."""
    from wallwm.pipeline.segmentation.forms import reading_summary

    for line in reading_summary(counts, episodes):
        console.print(f"read for the cut: {line}", soft_wrap=True)


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (no rich markup, so it pipes cleanly into jq).

    A NaN or infinite number is written as null: JSON has neither, and strict parsers (jq,
    JavaScript's ``JSON.parse``) refuse Python's ``NaN``.
    """
    typer.echo(json.dumps(_finite(obj), indent=2, default=str, allow_nan=False))


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
