"""Position targets cut on their rates where the rates stand clear of their noise."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from wallwm.pipeline.segmentation import SegmentConfig, Signals, segment
from wallwm.pipeline.segmentation.evaluate import EMPTY, BoundaryScore, match_boundaries
from wallwm.pipeline.segmentation.forms import (
    RATES_CLEARANCE,
    command_rates,
    cut_signals,
    episode_clearance,
)
from wallwm.pipeline.segmentation.segment import hesitations_taken_out
from wallwm.pipeline.segmentation.selection import choose_model, resolve


def with_noise(episodes, sigma: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [
        (dataclasses.replace(s, actions_TA=s.actions_TA + rng.normal(0, sigma, s.actions_TA.shape)),
         truth)
        for s, truth in episodes
    ]  # fmt: skip


def scored(episodes, cfg: SegmentConfig) -> BoundaryScore:
    total = EMPTY
    for s, truth in episodes:
        total += match_boundaries(segment(s, cfg).starts, truth, len(s.actions_TA), 3)
    return total


def test_command_rates_are_the_change_into_each_frame_per_second():
    actions = np.array([[0.0, 1.0, 5.0], [0.5, 1.0, 5.0], [1.5, 0.0, 5.0], [1.5, 0.0, 5.0]])
    s = Signals(actions, 10.0, gripper_action_dims=[1])
    rates = command_rates(s).actions_TA
    # the first frame's rate continues the next three's quadratic: 3 * 5 - 3 * 10 + 0
    assert rates[:, 0] == pytest.approx([-15.0, 5.0, 10.0, 0.0])
    assert rates[:, 2] == pytest.approx([0.0, 0.0, 0.0, 0.0])
    assert rates[:, 1] == pytest.approx(actions[:, 1])  # the gripper command is cut as it is
    assert s.actions_TA[1, 0] == 0.5  # the input is left alone
    assert cut_signals(s, SegmentConfig(action_form="values")) is s


def test_position_targets_are_cut_on_their_rates_where_they_stand_clear(reached_joints):
    """A two-link arm's reached joint angles: the waypoints bend the path (no jump); on the
    rates each bend is a step. Noise-free, the rates stand far above their noise and cut
    better; with a little noise on the targets, differencing buries the steps and the values
    stay."""
    clean = [reached_joints(seed) for seed in range(6)]
    cfg, choice = resolve(SegmentConfig(), [s for s, _ in clean])
    assert (cfg.action_form, cfg.action_model, cfg.noise_model) == ("rates", "smooth", "local_fit")
    assert choice.position_targets and choice.rates_clearance is not None
    assert choice.rates_clearance >= RATES_CLEARANCE
    assert choice.as_dict()["action_form"] == "rates"
    values, _ = resolve(SegmentConfig(action_form="values"), [s for s, _ in clean])
    on_rates, on_values = scored(clean, cfg), scored(clean, values)
    assert on_rates.f1 >= on_values.f1 + 0.1 and on_rates.f1 >= 0.85, (on_rates, on_values)

    noisy = with_noise(clean, 0.002)  # ~0.2 % of a joint's travel
    cfg, choice = resolve(SegmentConfig(), [s for s, _ in noisy])
    assert choice.position_targets and cfg.action_form == "values"
    assert choice.rates_clearance is not None and choice.rates_clearance < RATES_CLEARANCE
    rates, _ = resolve(SegmentConfig(action_form="rates"), [s for s, _ in noisy])
    assert scored(noisy, cfg).f1 >= scored(noisy, rates).f1 + 0.1


def test_the_cut_on_rates_is_the_cut_of_the_rates(reached_joints):
    """The form is applied once, where the cut reads the signals: cutting a recording on its
    rates is cutting its rates as values (boundaries, confidences and hesitations alike)."""
    s, _ = reached_joints(1)
    cfg, _ = resolve(SegmentConfig(), [s])
    assert cfg.action_form == "rates"
    as_values = cfg.model_copy(update={"action_form": "values"})
    ours, theirs = segment(s, cfg), segment(command_rates(s), as_values)
    assert ours.starts == theirs.starts and ours.boundaries == theirs.boundaries
    assert hesitations_taken_out(s, cfg) == hesitations_taken_out(command_rates(s), as_values)


def test_velocity_commands_and_stated_line_models_read_the_values(reached_joints):
    s, _ = reached_joints(2)
    # velocity commands: the arm's own joint velocities, one step ahead (their changes are
    # decisions, not the motion): never differenced, nothing measured
    velocity = Signals(np.diff(s.states_TS, axis=0, append=s.states_TS[-1:]), s.fps, s.states_TS)
    choice = choose_model([velocity], SegmentConfig())
    assert choice.action_form == "values" and choice.rates_clearance is None
    # a stated line model reads the values it was made for
    for model in ("state_feedback", "time"):
        cfg, choice = resolve(SegmentConfig(action_model=model), [s])
        assert cfg.action_form == "values" and cfg.action_model == model
    # a stated form is kept, whatever the data say
    cfg, choice = resolve(SegmentConfig(action_form="rates"), [velocity])
    assert cfg.action_form == "rates" and choice.rates_clearance is None
    assert SegmentConfig(action_form="rates").resolved() is False


def test_the_clearance_needs_a_moving_command():
    still = Signals(np.ones((30, 2)), 20.0, np.ones((30, 2)))
    assert episode_clearance(still) is None
    short = Signals(np.arange(6.0)[:, None], 20.0)
    assert episode_clearance(short) is None


def test_a_dataset_keeps_its_form_and_older_runs_cut_the_values(tmp_path, write_source,
                                                               reached_joints):  # fmt: skip
    from wallwm.pipeline.ingest import IngestConfig, run_ingest
    from wallwm.pipeline.segmentation.stage import (
        SegmentStageConfig,
        recorded_model,
        run_segment,
        run_segment_config,
    )
    from wallwm.pipeline.tables import schemas
    from wallwm.pipeline.tables.lineage import StageRun
    from wallwm.pipeline.tables.store import LanceStore

    src, ds = tmp_path / "src", tmp_path / "ds"
    write_source(src, [reached_joints(seed) for seed in range(4)], "two-link")
    run_ingest(IngestConfig(source=str(src), dataset=str(ds), executor="local"))
    first = run_segment(SegmentStageConfig(dataset=str(ds), executor="local"))
    assert first.model is not None and first.model["action_form"] == "rates"
    again = run_segment(SegmentStageConfig(dataset=str(ds), executor="local"))
    assert again.model is not None and again.model["basis"] == "recorded"
    assert again.model["action_form"] == "rates" and again.segmented == 0
    store = LanceStore(str(ds))
    runs = store.read(schemas.RUNS, where="stage = 'segment'").to_pylist()
    assert json.loads(runs[0]["config_json"])["segment"]["action_form"] == "rates"

    # a run recorded before the form (and the quiet dims) existed: its request and config lack
    # the fields
    older = tmp_path / "older"
    run_ingest(IngestConfig(source=str(src), dataset=str(older), executor="local"))
    old = LanceStore(str(older))
    resolved = SegmentConfig(action_model="state_feedback", noise_model="position_targets",
                             state_pairing=[0, 1]).model_dump()  # fmt: skip
    requested = SegmentConfig().model_dump()
    for config in (resolved, requested):
        del config["action_form"], config["quiet_dims"]
    StageRun("segment", {"segment": resolved}, details={"requested": requested}).record_start(
        old, schemas.EVENTS
    )
    kept = recorded_model(old, SegmentConfig())
    assert kept is not None and kept.action_form == "values" and kept.resolved()
    assert run_segment_config(resolved) == kept  # what `wallwm episode plot` redraws with
    assert recorded_model(old, SegmentConfig(action_form="rates")) is None  # another request


def test_wallwm_segment_says_it_cut_on_rates(tmp_path, write_source, reached_joints):
    from typer.testing import CliRunner

    from wallwm.cli.main import app

    src, ds = tmp_path / "src", tmp_path / "ds"
    write_source(src, [reached_joints(seed) for seed in range(4)], "two-link")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(src), "--dataset", str(ds)]).exit_code == 0
    cut = runner.invoke(app, ["segment", "--dataset", str(ds)])
    assert cut.exit_code == 0, cut.output
    assert "cut on the commands' rates of change" in cut.output
    scored = runner.invoke(app, ["eval", "segmentation", "--dataset", str(ds), "--json"])
    assert json.loads(scored.output)["overall"]["f1"] >= 0.85, scored.output
    events = json.loads(runner.invoke(app, ["events", "list", "-d", str(ds), "--json"]).output)
    plot = tmp_path / "plot.png"
    args = ["episode", "plot", events[0]["episode_id"], "-d", str(ds), "--out", str(plot)]
    assert runner.invoke(app, args).exit_code == 0 and plot.stat().st_size > 10_000
    stated = runner.invoke(app, ["segment", "--dataset", str(ds), "--action-form", "values",
                                 "--force"])  # fmt: skip
    assert stated.exit_code == 0, stated.output
    assert "rates of change" not in stated.output
    bad = runner.invoke(app, ["segment", "--dataset", str(ds), "--action-form", "speed"])
    assert bad.exit_code == 2 and "--action-form" in bad.output and "Traceback" not in bad.output
