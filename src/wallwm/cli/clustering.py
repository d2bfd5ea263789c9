"""Clustering commands: ``embed``, ``cluster``, ``clusters ...``, ``events similar``, ``report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from wallwm.cli.common import (
    DatasetOpt,
    JsonOpt,
    console,
    err_console,
    out_folder,
    print_json,
    require_events,
    validation_message,
)

clusters_app = typer.Typer(no_args_is_help=True, help="Inspect and curate clusters.")
MessageOpt = Annotated[str, typer.Option("--message", "-m", help="Why (kept in lineage).")]


def _fail(exc: Exception) -> typer.Exit:
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    err_console.print(f"[red]{message}[/]", soft_wrap=True)
    return typer.Exit(1)


def embed_cmd(
    dataset: DatasetOpt,
    text_model: Annotated[str | None, typer.Option(help="Local sentence-transformers dir.")] = None,
    visual_weights: Annotated[str | None, typer.Option(help="TorchScript image encoder.")] = None,
    text_weight: Annotated[float, typer.Option(help="Weight of the caption embedding.")] = 1.0,
    traj_weight: Annotated[float, typer.Option(help="Weight of the trajectory features.")] = 0.5,
    visual_weight: Annotated[float, typer.Option(help="Weight of the visual embedding.")] = 0.5,
    refit: Annotated[
        bool,
        typer.Option(
            help="Fit the trajectory normaliser again on today's episodes (re-embeds every event)."
        ),
    ] = False,
) -> None:
    """Embed the events that are new or changed (caption text, trajectory, optional visual).

    Incremental: events whose inputs, models and weights are unchanged keep their vectors; the
    vector index is rebuilt only when vectors changed.
    """
    from pydantic import ValidationError

    from wallwm.clustering.embed import EmbedConfig
    from wallwm.clustering.embed_stage import run_embed

    require_events(dataset)

    try:
        cfg = EmbedConfig(
            text_model=text_model,
            visual_weights=visual_weights,
            weights={"text": text_weight, "traj": traj_weight, "visual": visual_weight},
        )
    except ValidationError as exc:
        err_console.print(f"[red]invalid options:[/] {validation_message(exc)}", soft_wrap=True)
        raise typer.Exit(2) from exc
    try:
        with console.status("embedding events"):
            s = run_embed(dataset, cfg, refit=refit)
    except (ValueError, OSError) as exc:
        raise _fail(exc) from exc
    rate = f" ({s.captions_per_s:.0f} captions/s)" if s.embedded else ""
    norm = "fitted on" if s.norm_fitted else "recorded, fitted on"
    console.print(
        f"[bold]embed[/]: {s.embedded} of {s.events} events embedded, {s.up_to_date} up to "
        f"date, {s.failed} failed; dims {s.dims}; index "
        f"{'rebuilt' if s.indexed else 'unchanged'}; trajectory normaliser {norm} "
        f"{s.norm_frames} frames; {s.seconds:.1f} s{rate}",
        soft_wrap=True,
    )


def cluster_cmd(
    dataset: DatasetOpt,
    levels: Annotated[int, typer.Option(help="Levels of the hierarchy.")] = 2,
    k: Annotated[str, typer.Option(help="Clusters per level, finest first, e.g. 64,8.")] = "64,8",
    assign_only: Annotated[bool, typer.Option(help="Place events in existing clusters.")] = False,
    strategy: Annotated[str, typer.Option(help="uniform | power")] = "uniform",
    alpha: Annotated[float, typer.Option(help="Exponent of --strategy power.")] = 0.5,
    dedup: Annotated[
        str,
        typer.Option(
            help="trajectory (default): an event repeating a kept one's action/state trajectory "
            "within --dedup-rms is a duplicate (the same motion recorded twice); embedding: "
            "SemDeDup on the combined embedding at --dedup-threshold; off."
        ),
    ] = "trajectory",
    dedup_threshold: Annotated[
        float, typer.Option(help="Cosine similarity of duplicates (--dedup embedding).")
    ] = 0.98,
    dedup_rms: Annotated[
        float,
        typer.Option(
            help="RMS trajectory difference, in dataset std, of duplicates (--dedup trajectory)."
        ),
    ] = 0.01,
) -> None:
    """Hierarchical k-means over event embeddings, dedup, and cluster-balanced weights."""
    from pydantic import ValidationError

    from wallwm.clustering.stage import ClusterConfig, run_cluster

    try:
        ks = [int(v) for v in k.split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(f"--k must be integers like 64,8, got {k!r}") from exc
    if any(v < 1 for v in ks):
        raise typer.BadParameter(f"--k must be positive integers like 64,8, got {k!r}")
    if len(ks) != levels:
        raise typer.BadParameter(f"--k gives {len(ks)} levels but --levels is {levels}")
    try:
        cfg = ClusterConfig(
            ks=ks,
            assign_only=assign_only,
            strategy=strategy,  # type: ignore[arg-type]
            alpha=alpha,
            dedup=dedup,  # type: ignore[arg-type]
            dedup_threshold=dedup_threshold,
            dedup_rms=dedup_rms,
        )
        with console.status("clustering"):
            s = run_cluster(dataset, cfg)
    except ValidationError as exc:
        raise typer.BadParameter(validation_message(exc)) from exc
    except ValueError as exc:
        raise _fail(exc) from exc
    mode = "assigned to existing clusters" if assign_only else "clustered"
    console.print(
        f"[bold]cluster[/]: {s.events} events {mode}; clusters per level {s.clusters}; "
        f"{s.duplicates} near-duplicates; {s.seconds:.1f} s",
        soft_wrap=True,
    )
    if s.drift:
        console.print(
            f"drift of the {int(s.drift['new_events'])} new events: mean distance "
            f"{s.drift['mean_distance_ratio']:.2f}x the clustered events', "
            f"{s.drift['fraction_beyond_p95']:.0%} beyond their 95th percentile"
        )
    if s.replaced_curated:
        console.print(
            f"[yellow]note[/]: a full re-cluster replaced {s.replaced_curated} curated "
            "clusters (use --assign-only to keep curation)"
        )


def _store(dataset: str) -> Any:
    from wallwm.pipeline.tables.store import LanceStore

    return LanceStore(dataset)


@clusters_app.command("list")
def clusters_list(
    dataset: DatasetOpt,
    level: Annotated[int | None, typer.Option(help="Only this level (1 = finest).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Clusters with sizes, duplicates, labels and curated weights."""
    from rich.table import Table

    from wallwm.clustering.curation import CurationError, list_clusters

    try:
        rows = list_clusters(_store(dataset), level)
    except CurationError as exc:
        raise _fail(exc) from exc
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"{len(rows)} clusters")
    for col in ("cluster", "level", "parent", "size", "dups", "label", "weight", "excluded"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["cluster_id"],
            str(r["level"]),
            r["parent_id"] or "",
            str(r["size"]),
            str(r["duplicates"]),
            r["label"],
            f"{r['weight']:g}",
            "yes" if r["excluded"] else "",
        )
    console.print(table)


@clusters_app.command("show")
def clusters_show(cluster_id: str, dataset: DatasetOpt, as_json: JsonOpt = False) -> None:
    """One cluster: children, representatives and example captions."""
    from wallwm.clustering.curation import CurationError, show_cluster

    try:
        info = show_cluster(_store(dataset), cluster_id)
    except CurationError as exc:
        raise _fail(exc) from exc
    if as_json:
        print_json(info)
        return
    console.print(
        f"[bold]{info['cluster_id']}[/] level {info['level']} '{info['label']}': "
        f"{info['size']} events, {info['duplicates']} duplicates, weight {info['weight']:g}"
        f"{' (excluded)' if info['excluded'] else ''}"
    )
    for e in info.get("examples", []):
        console.print(
            f"  {e['event_id'][:8]} {e['caption'] or '(no caption)'}"
            f"{'  [duplicate]' if e['is_duplicate'] else ''}"
        )
    if info["children"]:
        console.print(f"  children: {', '.join(info['children'])}")


@clusters_app.command("set-weight")
def clusters_set_weight(
    cluster_id: str, weight: float, dataset: DatasetOpt, message: MessageOpt = ""
) -> None:
    """Multiply a cluster's sampling mass by WEIGHT (0 drops it); events are reweighted."""
    from wallwm.clustering.curation import CurationError, set_weight

    try:
        r = set_weight(_store(dataset), cluster_id, weight, message)
    except CurationError as exc:
        raise _fail(exc) from exc
    console.print(f"{cluster_id}: weight {weight:g} (clusters version {r.version_after})")


@clusters_app.command("exclude")
def clusters_exclude(
    cluster_id: str,
    dataset: DatasetOpt,
    message: MessageOpt = "",
    undo: Annotated[bool, typer.Option(help="Include it again.")] = False,
) -> None:
    """Exclude a cluster from sampling (or --undo)."""
    from wallwm.clustering.curation import CurationError, exclude

    try:
        r = exclude(_store(dataset), cluster_id, message, excluded=not undo)
    except CurationError as exc:
        raise _fail(exc) from exc
    console.print(
        f"{cluster_id}: {'included' if undo else 'excluded'} (clusters version {r.version_after})"
    )


@clusters_app.command("export")
def clusters_export(file: str, dataset: DatasetOpt) -> None:
    """Write the curation state as JSON (edit it, then `clusters import`)."""
    from wallwm.clustering.curation import CurationError, export_clusters

    try:
        n = export_clusters(_store(dataset), file)
    except CurationError as exc:
        raise _fail(exc) from exc
    console.print(f"wrote {n} clusters to {file}")


@clusters_app.command("import")
def clusters_import(file: str, dataset: DatasetOpt, message: MessageOpt = "") -> None:
    """Apply weights, exclusions and notes from an exported JSON file."""
    from wallwm.clustering.curation import CurationError, import_clusters

    try:
        n = import_clusters(_store(dataset), file, message)
    except CurationError as exc:
        raise _fail(exc) from exc
    console.print(f"applied {n} clusters from {file}")


@clusters_app.command("learn-weights")
def clusters_learn_weights(
    dataset: DatasetOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="Proposal file to review.")],
    tag: Annotated[
        str | None, typer.Option(help="Snapshot to learn on (default: current).")
    ] = None,
    preset: Annotated[str, typer.Option(help="Model preset of reference and proxy.")] = "small",
    steps: Annotated[int, typer.Option(help="Steps of the reference and of the proxy.")] = 500,
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 32,
    size: Annotated[int, typer.Option(help="Frame side in pixels.")] = 96,
    eta: Annotated[float, typer.Option(help="Step size of the weights' update.")] = 1.0,
    probes: Annotated[int, typer.Option(help="Weight updates (excess measured each).")] = 5,
    probe_repeats: Annotated[
        int, typer.Option(help="Fixed samples per probe event (more: a steadier proposal).")
    ] = 8,
    reference: Annotated[
        str | None, typer.Option(help="Reference checkpoint (default: train one).")
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(help="Reference and proxy on this local VLM (see `wallwm train --backbone`)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Propose cluster weights by group DRO (excess loss over a reference); apply with import."""
    from pydantic import ValidationError

    from wallwm.trainer.learn_weights import LearnWeightsConfig, learn_weights

    try:
        cfg = LearnWeightsConfig(
            dataset=dataset, tag=tag, out=out, preset=preset, steps=steps,
            batch_size=batch_size, size=size, eta=eta, probes=probes, probe_repeats=probe_repeats,
            reference=reference, backbone=backbone,
        )  # fmt: skip
    except ValidationError as exc:
        err_console.print(f"[red]invalid options:[/] {validation_message(exc)}")
        raise typer.Exit(2) from exc
    try:
        with console.status(f"reference and proxy runs ({steps} steps each)"):
            result = learn_weights(cfg)
    except ValueError as exc:
        raise _fail(exc) from exc
    if as_json:
        print_json(result.clusters)
        return
    from rich.table import Table

    table = Table(title=f"proposed weights -> {result.path} (apply: wallwm clusters import)")
    for col in ("cluster", "label", "current", "proposed", "learned", "mean excess loss"):
        table.add_column(col)
    for c in sorted(result.clusters, key=lambda c: -c["weight"]):
        table.add_row(
            c["cluster_id"], c["label"], f"{c['current_weight']:g}", f"{c['weight']:g}",
            f"{c['learned_weight']:g}", f"{c['mean_excess_loss']:.4f}",
        )  # fmt: skip
    console.print(table)
    if result.agreement is None:
        console.print(
            "reliability unknown (under three clusters with two events): proposed = learned"
        )
    else:
        console.print(
            f"split-half agreement {result.agreement:.2f} -> reliability {result.reliability:.2f}:"
            f" each weight moves {result.reliability:.0%} of the way from current to learned"
            + ("" if result.reliability >= 0.5 else
               " (mostly noise: more --steps or --probe-repeats, or keep the current weights)")
        )  # fmt: skip


@clusters_app.command("tag")
def clusters_tag(name: str, dataset: DatasetOpt) -> None:
    """Freeze the curated snapshot (episodes, events, clusters) under NAME for training."""
    from wallwm.clustering.curation import CurationError, tag_snapshot

    try:
        versions = tag_snapshot(_store(dataset), name)
    except CurationError as exc:
        raise _fail(exc) from exc
    console.print(f"tagged {name}: " + ", ".join(f"{t} v{v}" for t, v in versions.items()))


@clusters_app.command("diff")
def clusters_diff(a: str, b: str, dataset: DatasetOpt, as_json: JsonOpt = False) -> None:
    """What changed between two tags (or version numbers) of the clusters."""
    from wallwm.clustering.curation import CurationError, diff_clusters

    try:
        d = diff_clusters(_store(dataset), a, b)
    except CurationError as exc:
        raise _fail(exc) from exc
    if as_json:
        print_json(d)
        return
    console.print(
        f"{a} -> {b}: {len(d['added'])} added, {len(d['removed'])} removed, "
        f"{len(d['changed'])} changed"
    )
    for c in d["changed"]:
        fields = ", ".join(
            f"{k} {v['from']} -> {v['to']}" for k, v in c.items() if k != "cluster_id"
        )
        console.print(f"  {c['cluster_id']}: {fields}")


def events_similar(
    event_id: str,
    dataset: DatasetOpt,
    k: Annotated[int, typer.Option("-k", help="Neighbours.")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Events nearest to EVENT_ID (cosine distance of the combined embedding)."""
    from wallwm.clustering.embed_stage import similar_events

    try:
        rows = similar_events(_store(dataset), event_id, k)
    except KeyError as exc:
        raise _fail(Exception(exc.args[0])) from exc
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"{r['distance']:.3f}  {r['event_id'][:8]}  {r['cluster_id'] or '-'}  "
            f"{r['caption'] or '(no caption)'}"
        )


def report_cmd(
    dataset: DatasetOpt,
    out: Annotated[
        str, typer.Option("--out", "-o", help="Output folder.", callback=out_folder)
    ] = "report",
    rollouts: Annotated[
        str | None,
        typer.Option(help="An `eval policy --json` result: each cluster's share of the failures."),
    ] = None,
) -> None:
    """Write a static HTML report of the clusters (sizes, examples, balancing, dedup)."""
    from wallwm.clustering.curation import CurationError
    from wallwm.clustering.report import write_report

    result = None
    if rollouts is not None:
        try:
            result = json.loads(Path(rollouts).read_text())
            if not isinstance(result, dict) or "per_task" not in result:
                raise ValueError("not an `eval policy --json` result (no per_task)")
        except (OSError, ValueError) as exc:
            err_console.print(f"[red]--rollouts {rollouts}: {exc}[/]")
            raise typer.Exit(2) from exc
    try:
        path = write_report(_store(dataset), out, rollouts=result)
    except CurationError as exc:
        raise _fail(exc) from exc
    console.print(f"wrote {path} and {path.parent / 'episodes.html'} (the episode browser)")
