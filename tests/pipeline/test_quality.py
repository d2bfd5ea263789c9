"""Episode quality flags: each planted problem gets its flag and nothing else does; the CLI lists
them, ``materialize --exclude-flag`` leaves them out, the report shows them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.quality import EpisodeSignals, assess
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic, simulate_episode

FPS = 20.0


def clean(i: int, rng) -> EpisodeSignals:
    cfg = SynthConfig(episodes=1, size=32, seed=i)
    ep = simulate_episode(cfg.tasks[i % len(cfg.tasks)], rng, cfg)
    t = len(ep["actions"])
    return EpisodeSignals(
        episode_id=f"id{i}",
        episode_key=f"ep{i}",
        fps=FPS,
        actions_TA=np.asarray(ep["actions"], np.float64),
        states_TS=np.asarray(ep["states"], np.float64),
        gripper_TG=np.asarray(ep["actions"], np.float64)[:, 3:4],
        timestamps_s=np.arange(t) / FPS,
        camera_frames={"top": t},
        success=True,
    )


def test_each_planted_problem_gets_its_flag_and_clean_episodes_none():
    rng = np.random.default_rng(0)
    episodes = [clean(i, rng) for i in range(12)]
    assert all(q.flags == [] for q in assess(episodes))

    def planted(i: int, **changes) -> EpisodeSignals:
        e = clean(100 + i, np.random.default_rng(i))
        for k, v in changes.items():
            setattr(e, k, v(e) if callable(v) else v)
        e.episode_key = f"planted-{i}"
        return e

    def drop(e):
        ts = e.timestamps_s.copy()
        ts[10:] += 3 / FPS  # three frames missing
        return ts

    def noise(shape):
        return np.random.default_rng(4).normal(0, 0.8, shape)

    def stored_twice(e, what):  # a late recorder: frames 10 and 21 repeat the one before
        x = getattr(e, what).copy()
        x[[10, 21]] = x[[9, 20]]
        return x

    def glitched(e):  # a packet glitch: one command off for frames 12 and 25
        x = e.actions_TA.copy()
        x[[12, 25], 0] += 0.5 * np.ptp(x[:, 0])
        return x

    def chatter(e):
        g = e.gripper_TG.copy()
        g[5:15:2] = g.max()
        g[6:16:2] = g.min()
        return g

    problems = {
        "frame_drops": planted(0, timestamps_s=drop),
        "camera_desync": planted(1, camera_frames=lambda e: {"top": len(e.actions_TA) - 5}),
        "still": planted(
            2,
            actions_TA=lambda e: np.repeat(e.actions_TA[:1], 40, 0),
            states_TS=lambda e: np.repeat(e.states_TS[:1], 40, 0),
            gripper_TG=lambda e: np.repeat(e.gripper_TG[:1], 40, 0),
            timestamps_s=np.arange(40) / FPS,
            camera_frames={"top": 40},
        ),
        "failed": planted(3, success=False),
        "jerky": planted(4, actions_TA=lambda e: e.actions_TA + noise(e.actions_TA.shape)),
        "gripper_chatter": planted(5, gripper_TG=chatter),
        "repeated_rows": planted(
            7,
            actions_TA=lambda e: stored_twice(e, "actions_TA"),
            states_TS=lambda e: stored_twice(e, "states_TS"),
        ),
        "glitches": planted(8, actions_TA=glitched),
        "near_duplicate": planted(6, **{  # a recording saved twice
            k: getattr(episodes[2], k) for k in
            ("actions_TA", "states_TS", "gripper_TG", "timestamps_s", "camera_frames")}),
    }  # fmt: skip
    results = {q.episode_key: q for q in assess([*episodes, *problems.values()])}
    for flag, e in problems.items():
        assert results[e.episode_key].flags == [flag], (flag, results[e.episode_key])
    assert results["planted-6"].details["duplicate_of"] == "ep2"
    assert results["planted-7"].details["repeated_rows"] == 2
    assert results["planted-8"].details["glitches"] == 2
    assert all(results[f"ep{i}"].flags == [] for i in range(12))


@pytest.mark.usefixtures("ray_local")
def test_quality_cli_exclude_flag_and_report(tmp_path):
    src, ds = tmp_path / "src", tmp_path / "ds"
    record_synthetic(src, SynthConfig(episodes=4, size=32, seed=2, cameras=("top",)))
    outcome = {d.name: json.loads((d / "meta.json").read_text())["success"] for d in src.iterdir()}
    failed = src / next(k for k, ok in sorted(outcome.items()) if ok)  # planted: fails, drops
    meta = json.loads((failed / "meta.json").read_text())
    (failed / "meta.json").write_text(json.dumps({**meta, "success": False}))
    steps = pq.read_table(failed / "steps.parquet").to_pylist()
    for r in steps[10:]:
        r["timestamp"] += 0.5  # a gap: dropped frames
    pq.write_table(pa.Table.from_pylist(steps), failed / "steps.parquet")
    run_ingest(IngestConfig(source=str(src), dataset=str(ds), segment=SegmentConfig()))
    runner = CliRunner()
    listed = runner.invoke(app, ["quality", "-d", str(ds), "--json"])
    assert listed.exit_code == 0, listed.output
    flags = {r["episode_key"]: set(r["flags"]) for r in json.loads(listed.output)}
    # the planted episode, and every attempt the simulator itself recorded as failed
    natural = {k for k, ok in outcome.items() if not ok}
    assert flags == {failed.name: {"failed", "frame_drops"}, **{k: {"failed"} for k in natural}}
    text = runner.invoke(app, ["quality", "-d", str(ds)])
    summary = f"4 episodes; 1 frame_drops, {len(natural) + 1} failed"
    assert summary in " ".join(text.output.split()), text.output

    args = ["materialize", "-d", str(ds), "--size", "32", "--exclude-flag", "failed"]
    view = runner.invoke(app, args)
    kept = 4 - len(natural) - 1
    assert view.exit_code == 0 and f"{kept} episodes" in view.output, view.output
    typo = runner.invoke(app, ["materialize", "-d", str(ds), "--exclude-flag", "faild"])
    assert typo.exit_code == 1 and "did you mean 'failed'" in typo.output

    from wallwm.clustering.report import _quality_section
    from wallwm.pipeline.tables.store import LanceStore

    section = "".join(_quality_section(LanceStore(str(ds))))
    assert failed.name in section and "frame_drops" in section
