"""Segmentation commands through the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("ray_local")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_run_events_episode_eval(folder_source, tmp_path):
    src, ds = folder_source(4), tmp_path / "ds"
    result = invoke("run", src, "--dataset", ds)
    assert result.exit_code == 0, result.output
    assert "4 written" in result.output and "(fused with ingest)" in result.output
    words = " ".join(result.output.split())
    # the model chosen in this run, said with the fused cut; the catch-up pass found nothing
    # left to do and says nothing (it used to print "0 ... segmented, 4 up to date" and call
    # the choice just made "the dataset's recorded choice")
    assert "within an event: " in words and "chosen on 4 episodes" in words
    assert "segment (events)" not in words and "recorded choice" not in words
    rerun = " ".join(invoke("run", src, "--dataset", ds, "--no-cluster").output.split())
    assert "4 unchanged" in rerun and "4 up to date" in rerun and "recorded choice" in rerun

    events = json.loads(invoke("events", "list", "--dataset", ds, "--json").output)
    assert events and {"event_id", "start_frame", "cues", "confidence"} <= set(events[0])
    assert all("keyframes" not in e for e in events)
    one = events[0]["episode_id"]
    only = json.loads(invoke("events", "list", "--dataset", ds, "--episode", one, "--json").output)
    assert only and {e["episode_id"] for e in only} == {one}

    grid = tmp_path / "grid.png"
    assert (
        invoke("events", "show", events[1]["event_id"], "--dataset", ds, "--out", grid).exit_code
        == 0
    )
    assert grid.read_bytes()[:4] == b"\x89PNG"
    missing = invoke("events", "show", "nope", "--dataset", ds, "--out", grid)
    assert missing.exit_code == 1 and "no event 'nope'" in missing.output

    plot = tmp_path / "plot.png"
    assert invoke("episode", "plot", one, "--dataset", ds, "--out", plot).exit_code == 0
    assert plot.stat().st_size > 10_000
    # by the key the console prints ("failed ep_0003: ..."), not only by the id
    from wallwm.pipeline.tables import schemas
    from wallwm.pipeline.tables.store import LanceStore

    rows = LanceStore(str(ds)).read(schemas.EPISODES, columns=["episode_id", "episode_key"])
    key = next(r["episode_key"] for r in rows.to_pylist() if r["episode_id"] == one)
    by_key = tmp_path / "by_key.png"
    assert invoke("episode", "plot", key, "--dataset", ds, "--out", by_key).exit_code == 0
    assert by_key.read_bytes() == plot.read_bytes()
    listed = json.loads(invoke("events", "list", "-d", ds, "--episode", key, "--json").output)
    assert listed == only  # the same episode's events, named by key
    unknown = invoke("episode", "plot", "nope", "--dataset", ds, "--out", by_key)
    assert unknown.exit_code == 1 and "no episode has the id or key 'nope'" in unknown.output

    ev = json.loads(invoke("eval", "segmentation", "--dataset", ds, "--json").output)
    assert ev["episodes"] == 4 and 0 <= ev["overall"]["f1"] <= 1
    assert "overall" in invoke("eval", "segmentation", "--dataset", ds).output

    status = json.loads(invoke("status", "--dataset", ds, "--json").output)
    seg = next(s for s in status["stages"] if s["stage"] == "segment")
    assert seg["done"] == 4 and seg["total"] == 4

    again = invoke("segment", "--dataset", ds)
    assert again.exit_code == 0 and "4 up to date" in again.output
    fixed = invoke("segment", "--dataset", ds, "--method", "fixed", "--chunk-len", "8")
    assert fixed.exit_code == 0 and "(fixed)" in fixed.output
    in_time = invoke("segment", "--dataset", ds, "--action-model", "time")
    assert in_time.exit_code == 0 and "4 episodes segmented" in in_time.output
    unmerged = invoke("segment", "--dataset", ds, "--no-merge-bends")
    assert unmerged.exit_code == 0 and "4 episodes segmented" in unmerged.output
    # another config (each event's own slopes): cut again, not "up to date"
    own_slopes = invoke("segment", "--dataset", ds, "--no-merge-bends", "--no-shared-gain")
    assert own_slopes.exit_code == 0 and "4 episodes segmented" in own_slopes.output
    as_recorded = invoke(
        "segment", "--dataset", ds, "--no-continuous-rotations", "--no-read-held-samples"
    )
    assert as_recorded.exit_code == 0 and "4 episodes segmented" in as_recorded.output


def test_segment_option_defaults_are_the_segmenter_defaults():
    import inspect

    from wallwm.cli.segment import run_cmd, segment_cmd
    from wallwm.pipeline.segmentation import SegmentConfig

    want = SegmentConfig()
    for cmd in (segment_cmd, run_cmd):
        params = inspect.signature(cmd).parameters
        names = ("method", "penalty", "action_model", "merge_bends", "refit_noise")
        more = ("continuous_rotations", "read_held_samples", "mend_glitches", "shared_gain")
        for name in (*names, *more):
            assert params[name].default == getattr(want, name), (cmd.__name__, name)


def test_segment_rejects_bad_options(tmp_path):
    (tmp_path / "episodes.lance").mkdir()  # a dataset folder, so the options are what is judged
    bad = invoke("segment", "--dataset", tmp_path, "--method", "shots")
    assert bad.exit_code == 2 and "method" in bad.output
    bad = invoke("segment", "--dataset", tmp_path, "--action-model", "joints")
    assert bad.exit_code == 2 and "--action-model: Input should be 'auto'" in bad.output
    bad = invoke("segment", "--dataset", tmp_path, "--noise-model", "gauss")
    assert bad.exit_code == 2 and "--noise-model" in bad.output and "Traceback" not in bad.output


def test_caption_command_and_run_include_captions(folder_source, tmp_path):
    src, ds = folder_source(3, cameras=("top",)), tmp_path / "ds"
    result = invoke("run", src, "--dataset", ds)
    assert result.exit_code == 0, result.output
    assert "caption (signals)" in result.output and "0 failed" in result.output
    events = json.loads(invoke("events", "list", "--dataset", ds, "--json").output)
    assert events and all(e["caption"] and e["caption_backend"] == "signals" for e in events)
    again = invoke("caption", "--dataset", ds)
    assert again.exit_code == 0 and "0 captioned" in again.output and "cached" in again.output
    bad = invoke("caption", "--dataset", ds, "--backend", "opnai")
    assert bad.exit_code == 2 and "did you mean 'openai'" in bad.output
    missing = invoke("caption", "--dataset", ds, "--backend", "openai")
    assert missing.exit_code == 2 and "--model is required" in missing.output
    status = json.loads(invoke("status", "--dataset", ds, "--json").output)
    cap = next(s for s in status["stages"] if s["stage"] == "caption")
    assert cap["done"] == cap["total"] == len(events)


def test_the_segment_command_says_when_a_tie_chose_the_model():
    """A choice decided by the events two tied candidates cut says so, beside each
    candidate's events per episode (what the run's lineage records)."""
    from wallwm.cli.common import console
    from wallwm.cli.segment import print_model_choice

    model = {
        "action_model": "smooth",
        "costs": {"state_feedback": 71929.1, "time": 65049.0, "smooth": 65081.2},
        "events": {"state_feedback": 21.9, "time": 18.5, "smooth": 5.4},
        "tied": ["time", "smooth"],
        "noise_floor": 60300.0,
        "episodes": 16,
        "basis": "data",
        "pairing": [-1, -1],
    }
    with console.capture() as captured:
        print_model_choice(model)
    said = " ".join(captured.get().split())
    assert "time 65,049 (18.5 events an episode)" in said
    assert "time and smooth explain the sample alike (totals within 2 standard errors)" in said
    with console.capture() as captured:
        print_model_choice({**model, "tied": []})
    assert "explain the sample alike" not in captured.get()
