"""The model and the training run: shapes per mode, exact resume, CLI, Ray Train."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.trainer.data import EventFrameDataset, make_loader
from wallwm.trainer.model import MODES, WorldActionModel, preset, tokenize
from wallwm.trainer.train import Run, TrainConfig, train
from wallwm.trainer.view import materialize


@pytest.fixture
def dataset(tmp_path, synth_dataset):
    return synth_dataset(tmp_path, episodes=6, size=32, seed=5)


def test_presets_and_tokenizer():
    assert (
        4.5e6
        < sum(p.numel() for p in WorldActionModel(preset("small"), "event").parameters())
        < 6e6
    )
    with pytest.raises(ValueError, match="did you mean 'small'"):
        preset("smal")
    ids = tokenize(["Grasp the red puck!", ""], vocab=512, length=4)
    assert ids.shape == (2, 4) and (ids[0] > 1).all() and ids[1].tolist() == [1, 0, 0, 0]
    assert torch.equal(tokenize(["grasp"], 512, 4), tokenize(["GRASP"], 512, 4))


def test_empty_texts_are_finite_in_eval_mode():
    model = WorldActionModel(preset("debug"), "event").eval()
    with torch.no_grad():
        out = model.text(["", "grasp the puck"])
    assert torch.isfinite(out).all()


def test_every_mode_trains_and_acts(dataset):
    view = materialize(str(dataset), None, size=32)
    data = EventFrameDataset(view.path, h_max=8, chunk_len=4)
    batch = next(iter(make_loader(data, batch_size=4)))
    for mode in MODES:
        cfg = preset("debug", image_size=32, action_dim=4, state_dim=4, h_max=8, chunk_len=4)
        model = WorldActionModel(cfg, mode, data.meta["stats"])
        losses = model.losses(batch)
        text_conditioned = mode in ("event", "chunk_text")
        assert set(losses) >= {"flow", "planner", "world"}
        assert ("end" in losses) == text_conditioned
        sum(losses.values()).backward()
        thoughts_grad = model.thoughts.grad
        # unified: the action loss reaches the thought slots (nothing sampled in between)
        assert (thoughts_grad is not None and thoughts_grad.abs().sum() > 0) == (mode == "unified")
        out = model.act(batch, steps=3)
        assert out["actions_BHA"].shape == (4, 8 if mode == "event" else 4, 4)
        assert ("end_of_event_B" in out) == text_conditioned
        if text_conditioned:
            horizon = out["actions_BHA"].shape[1]
            assert ((out["event_steps_B"] >= 1) & (out["event_steps_B"] <= horizon)).all()
        # a given noise makes sampling a pure function of the inputs
        noise = torch.randn(out["actions_BHA"].shape)
        a = model.act(batch, steps=3, noise_BHA=noise)["actions_BHA"]
        assert torch.equal(a, model.act(batch, steps=3, noise_BHA=noise)["actions_BHA"])
        assert model.plan_next(batch).shape == out["next_event_BD"].shape


@pytest.mark.parametrize("stop_after", [4, 6])  # one of them is mid-epoch (5 batches/epoch)
def test_resume_matches_an_uninterrupted_run(dataset, tmp_path, stop_after):
    common = {
        "dataset": str(dataset),
        "size": 32,
        "preset": "debug",
        "batch_size": 8,
        "h_max": 8,
        "chunk_len": 4,
        "warmup_steps": 2,
        "lr": 3e-3,
        "log_every": 1,
    }
    straight = train(TrainConfig(**common, steps=12, checkpoint_every=100, out=str(tmp_path / "a")))
    train(
        TrainConfig(
            **common, steps=12, stop_after=stop_after, checkpoint_every=100, out=str(tmp_path / "b")
        )
    )
    # Rows logged after the last checkpoint by a run that then died are trained again on resume.
    with (tmp_path / "b" / "metrics.jsonl").open("a") as log:
        log.write(json.dumps({"step": stop_after + 1, "loss": 9.9}) + "\n")
    resumed = train(
        TrainConfig(**common, steps=12, checkpoint_every=6, out=str(tmp_path / "b"), resume=True)
    )
    assert [m["loss"] for m in resumed] == [m["loss"] for m in straight[stop_after:]]  # bit-exact
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 12 and state["dataset"]["versions"]["events"] >= 1
    assert set(state) >= {"model", "optimizer", "ema", "sampler", "rng", "config", "stats"}
    assert Run(TrainConfig(**common, steps=12, out=str(tmp_path / "b"), resume=True)).step == 12
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 13))
    # training time runs on across the resume (not from zero again) and is kept in the checkpoint
    seconds = [json.loads(line)["seconds"] for line in lines]
    assert seconds == sorted(seconds) and state["train_seconds"] == seconds[-1] > 0
    assert (tmp_path / "b" / "tensorboard").is_dir()


@pytest.mark.usefixtures("ray_local")
def test_cli_train_on_ray_train_and_plot(dataset, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    store = LanceStore(str(dataset))
    # a run that fails is one line and a recorded failure of the dataset's train stage
    failed = runner.invoke(app, ["train", "-d", str(dataset), "--tag", "nosuch", "--local"])
    assert failed.exit_code == 1 and "nosuch" in failed.output and "Traceback" not in failed.output
    [row] = store.read(schemas.FAILURES, where="stage = 'train'").to_pylist()
    assert not row["resolved"] and "nosuch" in row["message"]
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            str(dataset),
            "--preset",
            "debug",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--size",
            "32",
            "--out",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "step 3" in result.output and (out / "checkpoint.pt").exists()
    # the run is in the dataset's lineage, and it resolved the failed one
    [run] = store.read(schemas.RUNS, where="stage = 'train'").to_pylist()
    assert "step=3" in run["message"] and json.loads(run["config_json"])["workers"] == 1
    assert store.count(schemas.FAILURES, "stage = 'train' AND resolved = false") == 0
    png = tmp_path / "loss.png"
    assert runner.invoke(app, ["train", "plot", str(out), "--out", str(png)]).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    bad = runner.invoke(app, ["train", "--dataset", str(dataset), "--mode", "chunks", "--local"])
    assert bad.exit_code != 0


def test_closed_loop_metaworld_eval(tmp_path):
    pytest.importorskip("metaworld", reason="MetaWorld is the optional 'sim' extra")
    from wallwm.pipeline.sim.metaworld import MetaWorldConfig, record_metaworld
    from wallwm.trainer.evaluate import evaluate_metaworld
    from wallwm.trainer.policy import LocalPolicy, wilson_interval

    src, ds = tmp_path / "mw", tmp_path / "ds"
    two_views = ("corner", "corner2")  # a multi-camera model, rendered camera by camera
    record_metaworld(
        src,
        MetaWorldConfig(tasks=("reach-v3",), episodes=2, size=32, max_steps=40, cameras=two_views),
    )
    run_ingest(
        IngestConfig(source=str(src), dataset=str(ds), executor="local", segment=SegmentConfig())
    )
    from wallwm.captioner.stage import CaptionStageConfig, run_caption

    run_caption(CaptionStageConfig(dataset=str(ds)))
    out = tmp_path / "run"
    train(
        TrainConfig(
            dataset=str(ds),
            size=32,
            preset="debug",
            steps=3,
            batch_size=4,
            h_max=8,
            chunk_len=4,
            out=str(out),
        )
    )
    policy = LocalPolicy(out / "checkpoint.pt", replan_every=4)
    assert policy.engine.models["event"].bank and policy.mode == "event"
    assert policy.spec.cameras == two_views
    with pytest.raises(ValueError, match="cameras"):  # one view for a two-camera model
        evaluate_metaworld(policy, ["reach-v3"], episodes=1, image_size=32, max_steps=2)
    result = evaluate_metaworld(
        policy, ["reach-v3"], 1, image_size=32, camera=two_views, max_steps=12
    )
    r = result["per_task"]["reach-v3"]
    assert r["episodes"] == 1 and r["successes"] in (0, 1)
    assert r["ci95"] == list(wilson_interval(r["successes"], 1))
    assert len(r["steps_to_success"]) == r["successes"]
    assert all(1 <= n <= 12 for n in r["steps_to_success"])
    assert policy.track.history  # it planned events by caption
    [rollout] = r["rollouts"]  # ... and the rollout records them, the last one for attribution
    assert (
        rollout["events"] == policy.event_trace() and rollout["last_event"] == rollout["events"][-1]
    )
    assert rollout["success"] == bool(r["successes"]) and 1 <= rollout["steps"] <= 12
    bank = {c for _i, c in policy.engine.models["event"].bank}
    assert set(rollout["events"]) <= bank  # texts of the training captions: they map to clusters
    runner = CliRunner()
    cli = runner.invoke(
        app,
        [
            "eval",
            "policy",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--task",
            "reach",
            "--episodes",
            "1",
            "--max-steps",
            "5",
            "--json",
        ],
    )
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.output)["overall"]["episodes"] == 1
    ckpt = str(out / "checkpoint.pt")
    args = ["eval", "policy", "--checkpoint", ckpt, "--task", "reach", "--episodes", "1"]
    shown = runner.invoke(app, [*args, "--max-steps", "5"])  # the table, not --json
    assert shown.exit_code == 0, shown.output
    words = " ".join(shown.output.split())  # the title wraps on a narrow console
    assert "reach-v3" in words and "overall" in words and "95% interval" in words
    assert "(event mode, 1 episodes per task)" in words
    bad = runner.invoke(app, [*args, "--camera", "corner", "--camera", "wrist"])
    assert bad.exit_code == 1 and "no camera 'wrist'" in bad.output


def test_wilson_interval():
    from wallwm.trainer.policy import wilson_interval

    low, high = wilson_interval(40, 50)
    assert 0.66 < low < 0.8 < high < 0.9
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_holdout_is_excluded_from_training_and_evaluated_offline(dataset, tmp_path):
    from wallwm.trainer.evaluate import evaluate_offline

    out = tmp_path / "run"
    run = Run(
        TrainConfig(
            dataset=str(dataset),
            size=32,
            preset="debug",
            steps=2,
            batch_size=8,
            h_max=8,
            chunk_len=4,
            holdout=0.35,
            out=str(out),
        )
    )
    assert 0 < run.held_out.sum() < len(run.held_out)
    held_ids = {e["event_id"] for e, h in zip(run.data.events, run.held_out, strict=True) if h}
    seen = {run.data.events[i]["event_id"] for i, _ in run.sampler}
    assert seen and not seen & held_ids  # training never samples a held-out episode
    run.fit()
    result = evaluate_offline(str(out / "checkpoint.pt"), batches=2, batch_size=4)
    assert result["held_out_events"] == len(held_ids) and result["batches"] == 2
    metrics = result["metrics"]
    assert {"flow", "planner", "world", "end", "action_mse", "end_accuracy"} <= set(metrics)
    assert all(v == v and v >= 0 for v in metrics.values()), metrics  # finite, no NaN
    cli = CliRunner().invoke(
        app,
        [
            "eval",
            "offline",
            "--checkpoint",
            str(out / "checkpoint.pt"),
            "--batches",
            "1",
            "--batch-size",
            "4",
            "--json",
        ],
    )
    assert cli.exit_code == 0 and json.loads(cli.output)["batches"] == 1


def test_resume_refuses_a_dataset_that_changed_under_the_run(dataset, tmp_path):
    from wallwm.pipeline.tables import schemas
    from wallwm.pipeline.tables.store import LanceStore

    cfg = {"dataset": str(dataset), "size": 24, "preset": "debug", "batch_size": 4}
    train(TrainConfig(**cfg, steps=2, out=str(tmp_path / "run")))
    store = LanceStore(str(dataset))
    # a stage that rewrites the rows as they were (a new version, the same data): resumes
    before = store.version(schemas.EVENTS)
    store.update(schemas.EVENTS, "true", {"caption": "caption"})
    assert store.version(schemas.EVENTS) > before
    assert (
        train(TrainConfig(**cfg, steps=3, out=str(tmp_path / "run"), resume=True))[-1]["step"] == 3
    )
    ids = store.read(schemas.EVENTS, columns=["event_id"]).column(0).to_pylist()
    store.update_columns(
        schemas.EVENTS, pa.table({"event_id": ids, "caption": ["x"] * len(ids)}), key="event_id"
    )
    with pytest.raises(ValueError, match=r"checkpoint\.pt: .*events v\d+ -> v\d+.*new --out"):
        train(TrainConfig(**cfg, steps=4, out=str(tmp_path / "run"), resume=True))
    # a new run trains on the recaptioned data
    assert train(TrainConfig(**cfg, steps=1, out=str(tmp_path / "new")))[-1]["step"] == 1
