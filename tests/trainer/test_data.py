"""The training view and the loader over it."""

from __future__ import annotations

import json
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.clustering.curation import exclude, list_clusters, tag_snapshot
from wallwm.pipeline.sources.base import CameraInfo
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore
from wallwm.trainer import view as view_module
from wallwm.trainer.data import ClusterBalancedSampler, EventFrameDataset, make_loader
from wallwm.trainer.view import _exactly, _frames, materialize, same_rows

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture
def curated(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=9, size=48, seed=4, cluster_ks=[6, 2])
    store = LanceStore(str(ds))
    excluded = list_clusters(store, level=1)[0]["cluster_id"]
    exclude(store, excluded)
    tag_snapshot(store, "v1")
    return ds, store, excluded


def test_view_at_a_tag_and_sample_correctness(curated):
    ds, store, excluded = curated
    view = materialize(str(ds), "v1", size=32)
    meta = json.loads((__import__("pathlib").Path(view.path) / "meta.json").read_text())
    assert (
        meta["tag"] == "v1" and meta["versions"]["events"] == store.at(schemas.EVENTS, "v1").version
    )
    assert view.events == store.count(schemas.EVENTS) and view.episodes == 9
    assert view.frames == sum(
        r["num_frames"] for r in store.read(schemas.EPISODES, columns=["num_frames"]).to_pylist()
    )
    assert len(meta["stats"]["actions"]["mean"]) == 4 and all(
        s > 0 for s in meta["stats"]["actions"]["std"]
    )
    # later edits do not change the frozen view
    assert materialize(str(ds), "v1", size=32).seconds == 0.0
    data = EventFrameDataset(view.path, h_max=8, chunk_len=12, seed=3)
    episodes = {r["episode_id"]: r for r in store.read(schemas.EPISODES).to_pylist()}
    for k in range(0, len(data), 7):
        s = data[(k, 1000 + k)]
        ev = data.events[k]
        ep = episodes[ev["episode_id"]]
        assert ev["start_frame"] <= s["t"] < ev["end_frame"]
        actions = np.asarray(ep["actions"], np.float32)
        n = min(ev["end_frame"], s["t"] + 8) - s["t"]
        assert torch.equal(s["action_mask_H"], torch.arange(8) < n)
        np.testing.assert_allclose(s["actions_HA"][:n].numpy(), actions[s["t"] : s["t"] + n])
        assert s["end_of_event"].item() == float(ev["end_frame"] - s["t"] < 8)
        inside = min(ev["end_frame"] - s["t"], len(actions) - s["t"])
        assert torch.equal(s["chunk_in_event_C"], torch.arange(12) < inside)
        c = min(12, len(actions) - s["t"])  # the chunk crosses event boundaries
        np.testing.assert_allclose(s["chunk_CA"][:c].numpy(), actions[s["t"] : s["t"] + c])
        frames = np.stack(list(_frames(CameraInfo(**ep["cameras"][0]), 32)))
        assert torch.equal(
            s["images_NCHW"], torch.from_numpy(frames[s["t"]].transpose(2, 0, 1).copy())[None]
        )
        nxt = [
            e
            for e in data.events
            if e["episode_id"] == ev["episode_id"] and e["event_index"] == ev["event_index"] + 1
        ]
        assert s["next_caption"] == (nxt[0]["caption"] if nxt else "")
        again = data[(k, 1000 + k)]  # a sample is a pure function of (seed, sample id)
        assert again["t"] == s["t"] and torch.equal(again["images_NCHW"], s["images_NCHW"])

    # caption dropout: blank text, and the planner's target becomes the current event
    dropping = EventFrameDataset(view.path, h_max=8, chunk_len=12, seed=3, caption_dropout=0.5)
    samples = [dropping[(k % len(data), k)] for k in range(200)]
    dropped = [s for s in samples if s["caption"] == ""]
    assert 60 < len(dropped) < 140
    for s in dropped:
        (ev,) = [e for e in data.events if e["event_id"] == s["event_id"]]
        assert s["next_caption"] == ev["caption"]

    # the excluded cluster is never sampled; the rest follow the curated weights
    sampler = ClusterBalancedSampler(data.weights, samples_per_epoch=3000, seed=0)
    clusters = [data.events[i]["cluster_id"] for i, _ in sampler]
    assert excluded not in clusters and len(set(clusters)) == 5


def test_sampler_resumes_exactly_and_spawn_workers(curated):
    ds, _store, _ = curated
    data = EventFrameDataset(materialize(str(ds), "v1", size=32).path)
    full = ClusterBalancedSampler(data.weights, samples_per_epoch=50, seed=7)
    uninterrupted = [x for _ in range(2) for x in full]  # two epochs
    first = ClusterBalancedSampler(data.weights, samples_per_epoch=50, seed=7)
    it = iter(first)
    head = [next(it) for _ in range(70 % 50)]  # stop part-way through epoch 0
    state = first.state_dict()
    resumed = ClusterBalancedSampler(data.weights, samples_per_epoch=50, seed=1)
    resumed.load_state_dict(state)
    tail = list(resumed) + list(resumed)
    assert head + tail[: 100 - len(head)] == uninterrupted
    assert data.__getitems__(head[:4])[2]["t"] == data[head[2]]["t"]  # samples are pure functions
    loader = make_loader(data, batch_size=16, num_workers=2)
    batch = next(iter(loader))
    assert batch["images_BNCHW"].shape == (16, 1, 3, 32, 32) and batch["actions_BHA"].shape[:2] == (
        16,
        32,
    )


def test_materialize_cli_and_errors(curated, tmp_path):
    ds, _store, _ = curated
    runner = CliRunner()
    ok = runner.invoke(app, ["materialize", "--dataset", str(ds), "--tag", "v1", "--size", "24"])
    assert ok.exit_code == 0 and "events" in ok.output
    bad = runner.invoke(app, ["materialize", "--dataset", str(ds), "--tag", "nope"])
    assert bad.exit_code == 1 and "no tag 'nope'" in bad.output


def test_holdout_split_is_stable_and_never_empty_or_total():
    from wallwm.trainer.data import holdout_mask

    def events(n: int, prefix: str = "ep") -> list[dict]:
        return [{"episode_id": f"{prefix}-{i}"} for i in range(n) for _ in range(2)]

    for n in range(2, 9):
        for fraction in (0.05, 0.1, 0.35, 0.5, 0.9):
            mask = holdout_mask(events(n), fraction)
            assert 1 <= mask.sum() // 2 <= n - 1  # whole episodes, never none or all
            assert (mask[0::2] == mask[1::2]).all()
    assert not holdout_mask(events(5), 0.0).any()
    big = holdout_mask(events(2000), 0.1)
    assert 0.08 < big.mean() < 0.12
    # growing the dataset keeps every earlier decision (the hash threshold, not a ranking)
    grown = holdout_mask(events(3000), 0.1)
    assert (grown[: len(big)] == big).all()


def test_multi_camera_view_model_and_serving(tmp_path, synth_dataset):
    """Every camera reaches the model; a served multi-camera model asks for all of them."""
    from wallwm.trainer.serving.engine import PolicyEngine
    from wallwm.trainer.serving.protocol import InferRequest, RequestError, parse_infer
    from wallwm.trainer.train import TrainConfig, train

    ds = synth_dataset(tmp_path, episodes=4, size=32, seed=2, cameras=("top", "side"))
    store = LanceStore(str(ds))
    view = materialize(str(ds), None, size=24)
    meta = json.loads((Path(view.path) / "meta.json").read_text())
    # every camera, in the dataset's own order (the folder source lists them by name)
    assert meta["cameras"] == ["side", "top"] and meta["skipped_episodes"] == []
    data = EventFrameDataset(view.path, h_max=8, chunk_len=4)
    s = data[(0, 5)]
    ep = next(
        r
        for r in store.read(schemas.EPISODES).to_pylist()
        if r["episode_id"] == data.events[0]["episode_id"]
    )
    assert [c["name"] for c in ep["cameras"]] == meta["cameras"]
    for n, cam in enumerate(ep["cameras"]):  # each view its own frames
        frames = np.stack(list(_frames(CameraInfo(**cam), 24)))
        want = torch.from_numpy(frames[s["t"]].transpose(2, 0, 1).copy())
        assert torch.equal(s["images_NCHW"][n], want)
    top = materialize(str(ds), None, size=24, cameras=["top"])
    assert top.path != view.path
    assert torch.equal(EventFrameDataset(top.path)[(0, 5)]["images_NCHW"], s["images_NCHW"][1:])
    with pytest.raises(ValueError, match="cameras"):
        materialize(str(ds), None, size=24, cameras=["wrist"])
    cli = CliRunner().invoke(app, ["materialize", "-d", str(ds), "--size", "24", "--camera", "top"])
    assert cli.exit_code == 0 and "-24-top" in cli.output

    common = {"dataset": str(ds), "size": 24, "preset": "debug", "batch_size": 4, "h_max": 8}
    history = train(TrainConfig(**common, chunk_len=4, steps=3, out=str(tmp_path / "run")))
    assert all(np.isfinite(m["loss"]) for m in history)
    engine = PolicyEngine([str(tmp_path / "run" / "checkpoint.pt")])
    (spec,) = engine.specs.values()
    assert spec.cameras == ("side", "top") and spec.image_shape == (2, 24, 24, 3)
    state = np.zeros(4, np.float32)
    two = np.zeros((2, 24, 24, 3), np.uint8)
    request = parse_infer(InferRequest(two, state, "go").to_wire(), engine.specs)
    (result,) = engine.infer([request])
    assert result.actions_HA.shape[1] == 4
    with pytest.raises(RequestError, match=r"cameras \['side', 'top'\]"):
        parse_infer(InferRequest(two[0], state, "go").to_wire(), engine.specs)


def test_latest_view_is_rebuilt_once_the_tables_move_on(curated):
    ds, store, _ = curated
    first = materialize(str(ds), None, size=24)
    assert materialize(str(ds), None, size=24).seconds == 0.0  # same versions: reused
    ids = store.read(schemas.EVENTS, columns=["event_id"]).column(0).to_pylist()
    recaptioned = pa.table({"event_id": ids, "caption": ["carry the puck"] * len(ids)})
    store.update_columns(schemas.EVENTS, recaptioned, key="event_id")
    frames_before = lance.dataset(first.path + "/frames.lance").to_table()
    again = materialize(str(ds), None, size=24)
    assert again.seconds > 0.0 and again.path == first.path
    assert {e["caption"] for e in EventFrameDataset(again.path).events} == {"carry the puck"}
    assert not Path(again.path + ".stale").exists()
    # only the events changed: the frames are the old view's, linked over, not decoded again
    assert (
        again.frames_reused
        and json.loads(Path(again.path, "meta.json").read_text())["frames_reused"]
    )
    assert lance.dataset(again.path + "/frames.lance").to_table().equals(frames_before)
    # a view that does not hold the same episodes/cameras (here: as its meta says), or --force,
    # decodes them again
    meta_path = Path(again.path, "meta.json")
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "cameras": ["other"]}))
    # rows rewritten unchanged (a new events version, the same captions): the same view, reused
    # as it is, its meta moved on to the new version
    before = store.version(schemas.EVENTS)
    store.update(schemas.EVENTS, "true", {"caption": "caption"})
    assert store.version(schemas.EVENTS) > before
    assert materialize(str(ds), None, size=24).seconds == 0.0
    assert json.loads(meta_path.read_text())["versions"]["events"] == store.version(schemas.EVENTS)
    lifted = pa.table({"event_id": ids, "caption": ["lift the puck"] * len(ids)})
    store.update_columns(schemas.EVENTS, lifted, key="event_id")
    rebuilt = materialize(str(ds), None, size=24)
    assert not rebuilt.frames_reused and rebuilt.frames == first.frames
    assert lance.dataset(rebuilt.path + "/frames.lance").to_table().equals(frames_before)
    assert not materialize(str(ds), None, size=24, force=True).frames_reused
    # a view at a tag is pinned to the tag's versions: still reused
    pinned = materialize(str(ds), "v1", size=24)
    assert materialize(str(ds), "v1", size=24).seconds == 0.0
    assert "lift the puck" not in {e["caption"] for e in EventFrameDataset(pinned.path).events}


def test_same_rows_compares_streams_whatever_their_batch_boundaries():
    rows = pa.table({"k": list(range(10)), "a": [[float(i)] * 3 for i in range(10)]})

    head = rows.slice(0, 3).to_batches()[0]
    cut = [head, head.slice(0, 0), rows.slice(3, 7).to_batches()[0]]  # an empty batch between
    assert same_rows(rows.to_batches(max_chunksize=4), iter(cut))
    assert same_rows(iter(cut), rows.to_batches())
    changed = rows.set_column(0, "k", pa.array([*range(9), 99]))
    assert not same_rows(rows.to_batches(max_chunksize=3), changed.to_batches(max_chunksize=4))
    assert not same_rows(rows.to_batches(), rows.slice(0, 9).to_batches())  # a row less
    assert not same_rows(rows.slice(0, 9).to_batches(), rows.to_batches())
    assert same_rows(iter([]), iter([]))


def test_frames_are_written_in_chunks_identical_to_one_write(tmp_path, synth_dataset, monkeypatch):
    """A large view's episode in one write overflowed Arrow's 32-bit offsets (a Lance panic at
    --size 5000) and was held in memory whole: it is streamed in bounded chunks of rows."""
    ds = synth_dataset(tmp_path, episodes=3, size=32, seed=5, cameras=("top", "side"))
    whole = materialize(str(ds), None, size=24)
    rows = lance.dataset(str(Path(whole.path) / "frames.lance")).to_table()
    monkeypatch.setattr(view_module, "FRAME_CHUNK_BYTES", 5 * 2 * 24 * 24 * 3)  # 5 rows a write
    chunked = materialize(str(ds), None, size=24, force=True)
    frames = lance.dataset(str(Path(chunked.path) / "frames.lance"))
    assert len(frames.get_fragments()) > 3 and frames.to_table().equals(rows)
    with pytest.raises(ValueError, match="--size 2000: the view's frame side must be 16 to 1024"):
        materialize(str(ds), None, size=2000)


def test_a_stream_is_cut_or_padded_to_the_episodes_frames():
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    assert [f.max() for f in _exactly(iter([a, b, a]), 2, "v.mp4")] == [0, 1]
    assert [f.max() for f in _exactly(iter([a, b]), 4, "v.mp4")] == [0, 1, 1, 1]
    with pytest.raises(ValueError, match=r"v\.mp4: no frame decodes"):
        list(_exactly(iter([]), 3, "v.mp4"))


def test_a_snapshot_of_an_unclustered_dataset_is_tagged_and_trained_on(tmp_path, synth_dataset):
    """`clusters tag` before `cluster` raised a StoreError traceback (no clusters table to tag):
    a segmented dataset's episodes and events are tagged, and a view is made of them."""
    ds = synth_dataset(tmp_path, episodes=3, size=32, seed=7)
    store = LanceStore(str(ds))
    assert not store.exists(schemas.CLUSTERS)
    versions = tag_snapshot(store, "raw")
    assert set(versions) == {schemas.EPISODES, schemas.EVENTS}
    view = materialize(str(ds), "raw", size=24)
    assert view.episodes == 3 and view.events == store.count(schemas.EVENTS)
