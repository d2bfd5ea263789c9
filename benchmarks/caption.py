"""Captioning throughput on one vLLM server: concurrent/batched vs one request at a time.

Starts ``vllm serve`` (the CPU build from ``.venv-vllm`` with the tiny random-weight Qwen2-VL the
tests build; pass ``--model-dir`` and ``--vllm-bin`` for a real model on a GPU machine), records a
small synthetic dataset, segments it, and measures on the same events and server:

- ``one at a time``: a loop sending one request, waiting for the answer, sending the next;
- ``concurrent (N in flight)``: the ``openai`` backend with N requests in flight (what the
  caption stage does inside each wave);
- ``wallwm caption (stage)``: the whole stage, wave by wave (event k of every episode at once,
  so each prompt can quote the previous event's caption), parsing and writing included.

Reports events/s, tokens/s (prompt + completion) and failures. The one-at-a-time loop is timed
on a sample of ``--sequential-sample`` events (its cost is per event). Usage:
``python benchmarks/caption.py [--episodes 64] [--concurrency 64]``
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from wallwm.captioner.backends import CaptionJob, OpenAIBackend, OpenAIBackendConfig
from wallwm.captioner.local_server import VllmServer
from wallwm.captioner.parsing import CaptionParseError, parse_caption
from wallwm.captioner.prompting import build_request, load_prompt
from wallwm.captioner.stage import CaptionStageConfig, _facts, _load, run_caption
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.pipeline.tables.store import LanceStore

ROOT = Path(__file__).resolve().parents[1]


def measure(backend: OpenAIBackend, jobs: list[CaptionJob]) -> tuple[float, int, int]:
    t = time.perf_counter()
    results = backend.generate(jobs)
    seconds = time.perf_counter() - t
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in results)
    failed = 0
    for r in results:
        try:
            if r.error:
                raise CaptionParseError(r.error)
            parse_caption(r.text)
        except CaptionParseError:
            failed += 1
    return seconds, tokens, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--sequential-sample",
        type=int,
        default=48,
        help="events timed in the one-at-a-time loop (its rate is per event)",
    )
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--model-dir", default=None, help="default: build the tiny test model")
    parser.add_argument("--vllm-bin", default=str(ROOT / ".venv-vllm" / "bin" / "vllm"))
    parser.add_argument("--root", default="bench-data/caption")
    args = parser.parse_args()
    root = Path(args.root)
    shutil.rmtree(root, ignore_errors=True)
    model_dir = args.model_dir
    if model_dir is None:
        model_dir = str(root / "tiny-qwen2vl")
        builder = ROOT / "tests" / "vllm_support" / "build_tiny_qwen2vl.py"
        subprocess.run(
            [str(Path(args.vllm_bin).parent / "python"), str(builder), model_dir],
            check=True,
            capture_output=True,
        )
    src, ds = root / "source", root / "dataset"
    record_synthetic(src, SynthConfig(episodes=args.episodes, size=96, cameras=("top",)))
    run_ingest(
        IngestConfig(source=str(src), dataset=str(ds), executor="local", segment=SegmentConfig())
    )
    store = LanceStore(str(ds))
    template = load_prompt()
    jobs = []
    for ep in _load(store):
        for event in ep.events:
            facts = _facts(ep, event, "move toward the block" if event["event_index"] else None)
            jobs.append(CaptionJob(facts, build_request(facts, template)))

    with VllmServer(
        model_dir,
        vllm_bin=args.vllm_bin,
        served_name="bench",
        log_path=root / "vllm.log",
        max_num_seqs=args.concurrency,
    ) as server:

        def backend(n: int) -> OpenAIBackend:
            return OpenAIBackend(
                OpenAIBackendConfig(
                    base_url=server.base_url,
                    model="bench",
                    concurrency=n,
                    max_tokens=args.max_tokens,
                )
            )

        backend(4).generate(jobs[:4])  # warm-up
        sample = jobs[: args.sequential_sample]
        secs, tokens, failed = measure(backend(1), sample)
        scale = len(jobs) / len(sample)  # report as if the loop had run over every event
        rows = {
            "one at a time": (secs * scale, int(tokens * scale), failed),
            f"concurrent ({args.concurrency} in flight)": measure(backend(args.concurrency), jobs),
        }
        t = time.perf_counter()
        summary = run_caption(
            CaptionStageConfig(dataset=str(ds)), backend=backend(args.concurrency)
        )
        rows["wallwm caption (stage, waves)"] = (
            time.perf_counter() - t,
            summary.prompt_tokens + summary.completion_tokens,
            summary.failed,
        )

    table = Table(
        title=f"captioning {len(jobs)} events of {args.episodes} episodes, 3 keyframes "
        f"each, on one vllm serve ({Path(model_dir).name})"
    )
    for col in ("path", "seconds", "events/s", "tokens/s", "failures", "vs one at a time"):
        table.add_column(col, justify="right")
    base = len(jobs) / rows["one at a time"][0]
    for name, (secs, tokens, failed) in rows.items():
        eps = len(jobs) / secs
        table.add_row(
            name,
            f"{secs:.2f}",
            f"{eps:.1f}",
            f"{tokens / secs:,.0f}",
            str(failed),
            f"{eps / base:.1f}x",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
