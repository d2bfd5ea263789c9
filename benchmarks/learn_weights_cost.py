"""What `wallwm clusters learn-weights` costs against one training run (issue #29: <= 2x).

Same run, same dataset and tag, same preset, steps and batch: one `train` run (the baseline),
then `learn-weights` (reference run + proxy run + the probes), then `learn-weights` given the
baseline's checkpoint as its reference (what a user who already trained on the tag pays).
The view is materialised first, so no arm pays for it. The dataset must be clustered; the
curation benchmark builds one (`benchmarks/curation.py`, its `messy-ds` with the
`balanced-nodedup` tag):

    python benchmarks/learn_weights_cost.py --dataset bench-data/curation4/messy-ds \\
        --tag balanced-nodedup --steps 300
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from wallwm.trainer.learn_weights import LearnWeightsConfig, learn_weights
from wallwm.trainer.train import CHECKPOINT, TrainConfig, train


def main() -> None:
    """Time the three runs and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="bench-data/curation4/messy-ds")
    parser.add_argument("--tag", default="balanced-nodedup")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--results", default=None, help="Also write the timings here (JSON).")
    args = parser.parse_args()
    common = {"preset": args.preset, "steps": args.steps, "batch_size": args.batch_size,
              "size": args.size}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="wallwm-lw-cost-") as tmp:
        root = Path(tmp)
        # the view and the first-step compilation, paid by nobody below
        train(TrainConfig(dataset=args.dataset, tag=args.tag, out=str(root / "warm"),
                          **{**common, "steps": 2}))  # fmt: skip
        start = time.perf_counter()
        train(TrainConfig(dataset=args.dataset, tag=args.tag, out=str(root / "one"), **common))
        one_s = time.perf_counter() - start
        start = time.perf_counter()
        result = learn_weights(LearnWeightsConfig(
            dataset=args.dataset, tag=args.tag, out=str(root / "p.json"), **common))  # fmt: skip
        full_s = time.perf_counter() - start
        start = time.perf_counter()
        learn_weights(LearnWeightsConfig(
            dataset=args.dataset, tag=args.tag, out=str(root / "q.json"),
            reference=str(root / "one" / CHECKPOINT), **common))  # fmt: skip
        given_s = time.perf_counter() - start
    rows = [
        ("one training run (`train`)", one_s),
        ("`clusters learn-weights` (reference run + proxy run + probes)", full_s),
        ("`clusters learn-weights --reference CKPT` (proxy run + probes)", given_s),
    ]
    print(f"dataset {args.dataset} tag {args.tag}: {len(result.clusters)} leaf clusters, "
          f"{args.steps} steps of batch {args.batch_size}, preset {args.preset}, "
          f"reliability {result.reliability:.2f}")  # fmt: skip
    print("| run | seconds | vs one training run |\n|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / one_s:.2f}x |")
    if args.results:
        summary = {"settings": vars(args), "seconds": dict(rows),
                   "clusters": len(result.clusters), "reliability": result.reliability}  # fmt: skip
        Path(args.results).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
