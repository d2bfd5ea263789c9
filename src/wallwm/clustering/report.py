"""A static HTML report of the clusters (one self-contained file; no server needed).

Cluster table (sizes, duplicates, curated weights), keyframe thumbnails and example captions per
cluster, plots of cluster sizes and of the sampled distribution before and after balancing, dedup
counts, and the episodes with quality flags. Images are embedded as data URLs so the page can be
mailed or archived as is.
"""

from __future__ import annotations

import base64
import html
import io
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from wallwm.clustering.attribution import failure_attribution
from wallwm.clustering.curation import list_clusters
from wallwm.clustering.kmeans import normalised_entropy
from wallwm.pipeline.browser import write_episode_browser
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import TableStore

STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:12px 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f2f2f2}.thumbs img{height:72px;margin:2px;border:1px solid #ddd}
.excluded{color:#999;text-decoration:line-through}
.cluster{margin:18px 0;padding:8px;border-left:4px solid #4a7}
.stats span{display:inline-block;margin-right:24px;font-size:18px}
"""


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plots(
    leaves: list[dict[str, Any]], events: list[dict[str, Any]]
) -> tuple[str, str, dict[str, float]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = [c["cluster_id"] for c in leaves]
    sizes = [c["size"] for c in leaves]
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.bar(range(len(ids)), sorted(sizes, reverse=True), color="#4a7")
    ax.set_xlabel("cluster (by size)")
    ax.set_ylabel("events")
    ax.set_title("cluster sizes")
    sizes_png = _png(fig)
    plt.close(fig)
    by_id = {cid: i for i, cid in enumerate(ids)}
    labels = np.array([by_id[e["cluster_id"]] for e in events if e["cluster_id"] in by_id])
    weights = np.array(
        [e["weight"] or 0.0 for e in events if e["cluster_id"] in by_id], dtype=np.float64
    )
    before = np.bincount(labels, minlength=len(ids)) / max(len(labels), 1)
    after = np.bincount(labels, weights=weights, minlength=len(ids))
    after = after / after.sum() if after.sum() > 0 else after
    order = np.argsort(-before)
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.bar(np.arange(len(ids)) - 0.2, before[order], width=0.4, label="uniform over events")
    ax.bar(np.arange(len(ids)) + 0.2, after[order], width=0.4, label="balanced (curated weights)")
    ax.set_xlabel("cluster (by size)")
    ax.set_ylabel("sampling share")
    ax.legend()
    ax.set_title("sampled distribution before and after balancing")
    dist_png = _png(fig)
    plt.close(fig)
    stats = {
        "entropy_before": normalised_entropy(before * 1e6),
        "entropy_after": normalised_entropy(after * 1e6),
    }
    return sizes_png, dist_png, stats


def _quality_section(store: TableStore) -> list[str]:
    """The episodes with quality flags (``wallwm quality``), flag counts first."""
    from wallwm.pipeline.quality import FLAGS, dataset_quality

    esc = html.escape
    results = dataset_quality(store)
    counts = Counter(f for r in results for f in r.flags)
    out = [
        f"<h2 id='quality'>Episode quality</h2><p>{len(results)} episodes; "
        + (", ".join(f"{counts[f]} {f}" for f in FLAGS if counts[f]) or "no flags")
        + "</p>"
    ]
    flagged = [r for r in results if r.flags]
    if flagged:
        out.append("<table><tr><th>episode</th><th>flags</th><th>details</th></tr>")
        for r in flagged:
            details = ", ".join(f"{k}={v}" for k, v in r.details.items())
            out.append(
                f"<tr><td>{esc(r.episode_key)}</td><td>{esc(', '.join(r.flags))}</td>"
                f"<td>{esc(details)}</td></tr>"
            )
        out.append("</table>")
    return out


def _cluster_rows(
    clusters: list[dict[str, Any]],
    events: list[dict[str, Any]],
    failure: dict[str, float] | None,
) -> list[str]:
    """One table row per cluster (its share of the failures when rollouts were given)."""
    esc = html.escape
    share: Counter[str] = Counter()
    for e in events:
        share[e["cluster_id"]] += float(e["weight"] or 0.0)  # type: ignore[assignment]
    rows = []
    for c in clusters:
        cls = " class='excluded'" if c["excluded"] else ""
        s = f"{share.get(c['cluster_id'], 0.0):.3f}" if c["level"] == 1 else ""
        failed = ""
        if failure is not None:
            failed = f"<td>{failure.get(c['cluster_id'], 0.0):.3f}</td>" if c["level"] == 1 else ""
            failed = failed or "<td></td>"
        rows.append(
            f"<tr{cls}><td>{esc(c['cluster_id'])}</td><td>{c['level']}</td>"
            f"<td>{esc(c['parent_id'] or '')}</td><td>{c['size']}</td><td>{c['duplicates']}</td>"
            f"<td>{esc(c['label'])}</td><td>{c['weight']:g}</td><td>{s}</td>{failed}</tr>"
        )
    return rows


def _examples(
    leaves: list[dict[str, Any]], by_cluster: dict[str, list[dict[str, Any]]], examples: int
) -> list[str]:
    """Each leaf cluster's first keyframes and captions (near-duplicates left out)."""
    esc = html.escape
    parts = []
    for c in sorted(leaves, key=lambda c: -c["size"]):
        members = [e for e in by_cluster.get(c["cluster_id"], []) if not e["is_duplicate"]]
        members = members[:examples]
        thumbs = "".join(
            f"<img alt='{esc(e['caption'] or '')}' src='data:image/jpeg;base64,"
            f"{base64.b64encode(k['jpeg']).decode()}'>"
            for e in members
            for k in e["keyframes"][:1]
        )
        captions = "".join(f"<li>{esc(e['caption'] or '(no caption)')}</li>" for e in members)
        parts.append(
            f"<div class='cluster'><b>{esc(c['cluster_id'])}</b> &mdash; {esc(c['label'])}"
            f" ({c['size']} events, weight {c['weight']:g}"
            f"{', excluded' if c['excluded'] else ''})<div class='thumbs'>{thumbs}</div>"
            f"<ul>{captions}</ul></div>"
        )
    return parts


def write_report(
    store: TableStore,
    out_dir: str | Path,
    examples: int = 4,
    rollouts: dict[str, Any] | None = None,
) -> Path:
    """Write ``index.html`` (and the episode browser, ``episodes.html``) under ``out_dir``.

    ``rollouts``: an ``eval policy --json`` result; each cluster then shows its share of the
    failures next to its weight. Returns the path of ``index.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clusters = list_clusters(store)
    leaves = [c for c in clusters if c["level"] == 1]
    events = store.read(
        schemas.EVENTS,
        columns=["event_id", "cluster_id", "caption", "weight", "is_duplicate", "keyframes"],
    ).to_pylist()
    sizes_png, dist_png, stats = _plots(leaves, events)
    by_cluster: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_cluster.setdefault(e["cluster_id"], []).append(e)
    dups = sum(bool(e["is_duplicate"]) for e in events)
    esc = html.escape
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>wallwm clusters</title>"
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Clusters of {esc(store.root)}</h1>",
        "<p><a href='episodes.html'>Browse every episode</a> (flags, events timeline, "
        "keyframes) &middot; <a href='#quality'>episode quality</a></p>",
        f"<div class='stats'><span>{len(events)} events</span><span>{len(leaves)} clusters"
        f"</span><span>{dups} near-duplicates</span><span>entropy of sampled clusters: "
        f"{stats['entropy_before']:.3f} &rarr; {stats['entropy_after']:.3f}</span></div>",
        f"<img alt='cluster sizes' src='{sizes_png}'><br><img alt='sampling' src='{dist_png}'>",
        "<h2>All clusters</h2><table><tr><th>cluster</th><th>level</th><th>parent</th>"
        "<th>size</th><th>duplicates</th><th>label</th><th>weight</th><th>sampling share</th>"
        + ("<th>failure share</th>" if rollouts else "")
        + "</tr>",
    ]
    failure = (
        {r["cluster_id"]: r["failure_share"] for r in failure_attribution(store, rollouts)}
        if rollouts
        else None
    )
    parts.extend(_cluster_rows(clusters, events, failure))
    parts.append("</table><h2>Examples per cluster</h2>")
    parts.extend(_examples(leaves, by_cluster, examples))
    parts.extend(_quality_section(store))
    parts.append("</body></html>")
    write_episode_browser(store, out)
    path = out / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
