"""``wallwm inspect``: a source looked at before ingest -- nothing decoded, nothing written."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.sources.base import EpisodeRef
from wallwm.pipeline.sources.peek import peek_source, spread


def test_spread_takes_first_last_and_between():
    refs = [EpisodeRef("s", "folder", f"e{i}", (), {}) for i in range(10)]
    assert [r.episode_key for r in spread(refs, 3)] == ["e0", "e4", "e9"]
    assert len(spread(refs, 20)) == 10 and spread(refs, 0) == [] and spread([], 3) == []


def test_a_source_is_described_and_its_problems_named(folder_source, tmp_path):
    src = folder_source(4, cameras=("top", "side"))
    eps = sorted(p for p in src.iterdir() if p.is_dir())
    steps = pq.read_table(eps[0] / "steps.parquet").to_pylist()
    steps[2]["action"][1] = float("nan")
    pq.write_table(pa.Table.from_pylist(steps), eps[0] / "steps.parquet")
    found = peek_source(str(src), sample=4)
    assert (found.format, found.listed, found.listing_failures) == ("folder", 4, [])
    bad, *good = found.sampled
    assert "steps.parquet" in bad.problem and "non-finite" in bad.problem
    assert {(e.action_dim, e.state_dim, tuple(e.cameras)) for e in good} == {
        (4, 4, ("side", "top"))
    }
    assert all(e.frames and e.fps == 20 and e.ground_truth_events for e in good)
    assert {e.robot for e in good} == {"wallwm-synthetic-gripper"}  # what --robot would not change

    out = CliRunner().invoke(app, ["inspect", str(src), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["listed"] == 4
    text = CliRunner().invoke(app, ["inspect", str(src), "--episodes", "2"])
    words = " ".join(text.output.split())
    assert text.exit_code == 0 and "(folder): 4 episodes listed" in words
    assert f"would fail {eps[0].name}" in words and "Traceback" not in words
    assert "robot: wallwm-synthetic-gripper" in words
    assert not (tmp_path / "ds").exists()


def test_a_source_that_does_not_open_is_one_line(tmp_path):
    (tmp_path / "junk").mkdir()
    out = CliRunner().invoke(app, ["inspect", str(tmp_path / "junk")])
    assert out.exit_code == 1 and "unknown source format" in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_a_sample_of_two_embodiments_is_pointed_out(folder_source):
    src = folder_source(3, cameras=("top",))
    odd = sorted(p for p in src.iterdir() if p.is_dir())[1]
    steps = pq.read_table(odd / "steps.parquet").to_pylist()
    for r in steps:
        r["action"] = [*r["action"], 0.0, 0.0, 0.0]
    pq.write_table(pa.Table.from_pylist(steps), odd / "steps.parquet")
    out = CliRunner().invoke(app, ["inspect", str(src)])
    words = " ".join(out.output.split())
    assert out.exit_code == 0 and "mixes embodiments (actions/states 4/4 x2, 7/4 x1)" in words


def test_inspect_says_what_the_cut_reads_differently(folder_source):
    """A command stream slower than the frames and an angle that wraps, in the sample: what
    the segmenter will read differently from what is stored is one line per episode."""
    import numpy as np

    src = folder_source(2, cameras=("top",))
    first = sorted(p for p in src.iterdir() if p.is_dir())[0]
    steps = pq.read_table(first / "steps.parquet").to_pylist()
    t_len = len(steps)
    roll = np.angle(np.exp(1j * (np.pi + np.linspace(-0.5, 0.5, t_len))))  # wraps at +-pi
    held = [list(steps[(t // 3) * 3]["action"]) for t in range(t_len)]  # a third of the rate
    for t, row in enumerate(steps):
        row["action"] = held[t]
        row["state"] = [*row["state"][:-1], float(roll[t])]
    pq.write_table(pa.Table.from_pylist(steps), first / "steps.parquet")
    found = peek_source(str(src), sample=2)
    notes = {e.key: e.reading for e in found.sampled}
    assert notes[first.name] == [
        "state dim 3: an angle that wrapped, in radians (read unwrapped)",
        "commands held 3 frames (6.67 Hz of 20): the models in time cut on their samples",
    ]
    text = CliRunner().invoke(app, ["inspect", str(src)])
    words = " ".join(text.output.split())
    assert f"read for the cut, {first.name}: state dim 3: an angle that wrapped" in words
