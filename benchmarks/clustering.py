"""Clustering benchmarks: balance, scale, embedding throughput, dedup quality.

1. Balanced sampling: normalised entropy of the cluster ids of 100k sampled events, with the
   ``uniform`` cluster-balanced weights vs plain uniform-over-events sampling, on imbalanced
   synthetic embeddings (a few dominant behaviours and a long tail).
2. Scale: hierarchical k-means (64, 8) with resampling on 1,000,000 x 384 float32 vectors, next to
   one-level MiniBatchKMeans(64) on the same data; seconds and peak RSS of each (child processes).
3. Embedding throughput: captions/s of the packaged all-MiniLM-L6-v2 through the Ray Data actor
   stage vs calling the model directly in-process.
4. Dedup: precision/recall of SemDeDup-style marking on planted near-duplicates.

Usage: ``python benchmarks/clustering.py [--n 1000000] [--skip-scale]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from rich.console import Console
from rich.table import Table


def imbalanced(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs whose sizes follow a power law (like robot behaviours)."""
    rng = np.random.default_rng(seed)
    k = 40
    sizes = (n * (np.arange(1, k + 1) ** -1.5) / (np.arange(1, k + 1) ** -1.5).sum()).astype(int)
    sizes[0] += n - sizes.sum()
    centers = rng.normal(size=(k, dim)).astype(np.float32) * 3.0
    x = np.empty((n, dim), dtype=np.float32)
    truth = np.repeat(np.arange(k), sizes)
    start = 0
    for c, s in enumerate(sizes):
        x[start : start + s] = centers[c] + rng.standard_normal((s, dim), dtype=np.float32)
        start += s
    return x, truth


SCALE_CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, "benchmarks")
from clustering import imbalanced
n, mode = int(sys.argv[1]), sys.argv[2]
x, _ = imbalanced(n, 384, 0)
t = time.perf_counter()
if mode == "hierarchical":
    from wallwm.clustering.kmeans import hierarchical_kmeans
    levels = hierarchical_kmeans(x, [64, 8], seed=0)
    sizes = np.bincount(levels[0].labels, minlength=64)
else:
    from sklearn.cluster import MiniBatchKMeans
    km = MiniBatchKMeans(n_clusters=64, random_state=0, batch_size=4096, n_init=1, max_iter=50)
    km.fit(x)
    sizes = np.bincount(km.labels_, minlength=64)
seconds = time.perf_counter() - t
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "smallest": int(sizes.min()),
                  "largest": int(sizes.max())}))
"""


def scale(n: int) -> dict[str, dict[str, float]]:
    out = {}
    for mode in ("minibatch", "hierarchical"):
        proc = subprocess.run(
            [sys.executable, "-c", SCALE_CHILD, str(n), mode],
            capture_output=True,
            text=True,
            check=True,
        )
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def balance() -> tuple[float, float, int]:
    from wallwm.clustering.kmeans import balanced_weights, hierarchical_kmeans, normalised_entropy

    x, _ = imbalanced(50_000, 64, 1)
    levels = hierarchical_kmeans(x, [32, 4], seed=0)
    labels = levels[0].labels
    k = len(levels[0].centroids)
    rng = np.random.default_rng(0)
    w = balanced_weights(labels, np.zeros(len(labels), bool), {}, "uniform")
    balanced = labels[rng.choice(len(labels), 100_000, p=w)]
    plain = labels[rng.integers(0, len(labels), 100_000)]
    return (
        normalised_entropy(np.bincount(balanced, minlength=k)),
        normalised_entropy(np.bincount(plain, minlength=k)),
        k,
    )


def embedding_throughput(n: int) -> tuple[float, float]:
    from wallwm.clustering.embed import SentenceTransformerEmbedder, embed_texts_ray
    from wallwm.pipeline.runtime import ensure_ray

    verbs = [
        "grasp",
        "move",
        "lift",
        "place",
        "push",
        "open",
        "close",
        "rotate",
        "press",
        "release",
    ]
    objects = ["red puck", "drawer handle", "blue block", "door", "button", "peg", "window", "mug"]
    rng = np.random.default_rng(0)
    texts = [
        f"{rng.choice(verbs)} the {rng.choice(objects)} {'toward the goal' if i % 3 else ''} "
        f"step {i}"
        for i in range(n)
    ]
    model = SentenceTransformerEmbedder()
    t = time.perf_counter()
    model.embed(texts)
    direct = n / (time.perf_counter() - t)
    ensure_ray()
    embed_texts_ray(["w"], ["warm up"], None, 256)
    t = time.perf_counter()
    embed_texts_ray([str(i) for i in range(n)], texts, None, 256)
    staged = n / (time.perf_counter() - t)
    return direct, staged


def dedup_quality() -> tuple[float, float, int]:
    from wallwm.clustering.kmeans import hierarchical_kmeans, semantic_dedup

    rng = np.random.default_rng(2)
    x, _ = imbalanced(20_000, 384, 3)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    planted = rng.choice(len(x), 1000, replace=False)
    copies = x[planted] + rng.normal(scale=0.004, size=(1000, 384)).astype(np.float32)
    data = np.concatenate([x, copies]).astype(np.float32)
    levels = hierarchical_kmeans(data, [32], seed=0)
    dup = semantic_dedup(data, levels[0].labels, levels[0].centroids, threshold=0.98)
    pair_flagged = dup[planted] | dup[len(x) :]  # one member of each pair should be flagged
    tp = int(pair_flagged.sum())
    false_pos = int(dup.sum()) - int((dup[planted] & dup[len(x) :]).sum()) - tp
    precision = tp / max(tp + false_pos, 1)
    return precision, tp / 1000, false_pos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--captions", type=int, default=3000)
    args = parser.parse_args()
    console = Console(width=140)

    ent_bal, ent_plain, k = balance()
    t = Table(title=f"balanced sampling: 100k samples, {k} clusters, 50k imbalanced events")
    for c in ("sampling", "normalised entropy of cluster ids"):
        t.add_column(c, justify="right")
    t.add_row("uniform over events (baseline)", f"{ent_plain:.3f}")
    t.add_row("wallwm uniform cluster weights", f"{ent_bal:.3f}")
    console.print(t)

    if not args.skip_scale:
        res = scale(args.n)
        t = Table(title=f"k-means on {args.n:,} x 384 float32 ({args.n * 384 * 4 / 2**30:.2f} GiB)")
        for c in ("method", "seconds", "peak RSS MiB", "smallest / largest cluster"):
            t.add_column(c, justify="right")
        names = {
            "minibatch": "MiniBatchKMeans(64), one level (baseline)",
            "hierarchical": "wallwm hierarchical (64, 8) + resampling",
        }
        for mode, r in res.items():
            t.add_row(
                names[mode],
                f"{r['seconds']:.1f}",
                f"{r['peak_mb']:,.0f}",
                f"{r['smallest']:,} / {r['largest']:,}",
            )
        console.print(t)

    direct, staged = embedding_throughput(args.captions)
    t = Table(title=f"caption embeddings, all-MiniLM-L6-v2 on CPU, {args.captions} captions")
    for c in ("path", "captions/s", "vs direct"):
        t.add_column(c, justify="right")
    t.add_row("model.encode in-process (baseline)", f"{direct:.0f}", "1.00x")
    t.add_row(
        "wallwm Ray Data actor stage (model load included)",
        f"{staged:.0f}",
        f"{staged / direct:.2f}x",
    )
    console.print(t)

    precision, recall, false_pos = dedup_quality()
    t = Table(title="dedup on 1,000 planted near-duplicates among 20,000 embeddings (cos > 0.98)")
    for c in ("precision", "recall", "false positives"):
        t.add_column(c, justify="right")
    t.add_row(f"{precision:.3f}", f"{recall:.3f}", str(false_pos))
    console.print(t)


if __name__ == "__main__":
    main()
