"""The embed stage is incremental: content-keyed, a no-op rerun, the index rebuilt only when
vectors changed, failures recorded and resolved."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wallwm.clustering.embed import EmbedConfig, HashingEmbedder
from wallwm.clustering.embed_stage import run_embed
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.segmentation import SegmentConfig
from wallwm.pipeline.sim.synthetic import SynthConfig, record_synthetic
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import INDEX_MIN_ROWS, LanceStore, MemoryStore

pytestmark = pytest.mark.usefixtures("ray_local")


def hashing():
    return HashingEmbedder(24)


def vectors(store):
    rows = store.read(schemas.EVENTS, columns=["event_id", "embedding", "embed_key"]).to_pylist()
    return {r["event_id"]: (np.asarray(r["embedding"]), r["embed_key"]) for r in rows}


def test_embed_is_incremental_and_a_rerun_is_a_noop(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=5, size=32, caption=True)
    store = LanceStore(str(ds))
    first = run_embed(str(ds), EmbedConfig(), text_factory=hashing)
    n = store.count(schemas.EVENTS)
    assert first.embedded == n == first.events and first.up_to_date == 0 and first.norm_fitted
    v1, before = store.version(schemas.EVENTS), vectors(store)

    # the same run again writes nothing: same events version, nothing embedded
    again = run_embed(str(ds), EmbedConfig(), text_factory=hashing)
    assert (again.embedded, again.up_to_date, again.indexed) == (0, n, False)
    assert store.version(schemas.EVENTS) == v1 and not again.norm_fitted
    assert again.dims == first.dims

    # new episodes arrive: only their events are embedded, old vectors are untouched (the
    # recorded trajectory normaliser keeps them on one scale)
    src = tmp_path / "src"
    record_synthetic(src, SynthConfig(episodes=2, size=32, seed=11))
    run_ingest(IngestConfig(source=str(src), dataset=str(ds), segment=SegmentConfig()))
    added = store.count(schemas.EVENTS) - n
    grown = run_embed(str(ds), EmbedConfig(), text_factory=hashing)
    assert added > 0 and grown.embedded == added and grown.up_to_date == n
    after = vectors(store)
    assert all(np.array_equal(after[k][0], before[k][0]) for k in before)

    # one caption changes: exactly that event is embedded again
    victim = next(iter(before))
    store.update_columns(
        schemas.EVENTS,
        pa.table({"event_id": [victim], "caption": ["wipe the table with the sponge"]}),
        "event_id",
    )
    one = run_embed(str(ds), EmbedConfig(), text_factory=hashing)
    assert one.embedded == 1 and vectors(store)[victim][1] != after[victim][1]

    # a changed weight re-keys every event; --refit too
    assert run_embed(
        str(ds), EmbedConfig(weights={"text": 1.0, "traj": 1.0}), text_factory=hashing
    ).embedded == (n + added)
    refit = run_embed(
        str(ds), EmbedConfig(weights={"text": 1.0, "traj": 1.0}), text_factory=hashing, refit=True
    )
    assert refit.norm_fitted and refit.embedded == n + added
    runs = store.read(schemas.RUNS, where="stage = 'embed'").to_pylist()
    assert sorted(r["rows_written"] for r in runs) == sorted([n, 0, added, 1, n + added, n + added])


def test_vector_index_is_built_once_and_rebuilt_only_when_stale(tmp_path):
    store = LanceStore(str(tmp_path / "ds"))
    rows = INDEX_MIN_ROWS + 44
    x = np.random.default_rng(0).normal(size=(rows, 8)).astype(np.float32)
    store.upsert(
        "vectors",
        pa.table(
            {
                "id": [f"e{i}" for i in range(rows)],
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 8),
            }
        ),
        "id",
    )
    v = store.version("vectors")
    assert store.index_vectors("vectors", "embedding", stale=False)  # none yet: built
    v_indexed = store.version("vectors")
    assert v_indexed == v + 1
    assert not store.index_vectors("vectors", "embedding", stale=False)
    assert store.version("vectors") == v_indexed
    assert store.index_vectors("vectors", "embedding", stale=True)
    near = store.nearest("vectors", "embedding", x[3], 2, ["id"])
    assert near[0]["id"] == "e3" and near[0]["distance"] == pytest.approx(0, abs=1e-5)
    # the in-memory double answers the same queries exactly: on a table this small the index
    # is searched whole (one partition alone missed neighbours in the next)
    mem = MemoryStore()
    mem.upsert("vectors", store.read("vectors"), "id")
    for q in x[:20]:
        assert [r["id"] for r in mem.nearest("vectors", "embedding", q, 10, ["id"])] == [
            r["id"] for r in store.nearest("vectors", "embedding", q, 10, ["id"])
        ]
    small = LanceStore(str(tmp_path / "small"))
    small.upsert("vectors", store.read("vectors").slice(0, 10), "id")
    assert not small.index_vectors("vectors", "embedding", stale=True)  # a flat scan is enough


def test_a_failed_embed_run_is_recorded_and_resolved_by_the_next(tmp_path, synth_dataset):
    ds = synth_dataset(tmp_path, episodes=3, size=32, caption=True)
    store = LanceStore(str(ds))
    missing = tmp_path / "no-such-encoder.pt"
    with pytest.raises(OSError, match=r"no-such-encoder\.pt"):
        run_embed(str(ds), EmbedConfig(visual_weights=str(missing)), text_factory=hashing)
    rows = store.read(schemas.FAILURES, where="stage = 'embed'").to_pylist()
    assert len(rows) == 1 and not rows[0]["resolved"] and rows[0]["error_class"] == "OSError"
    assert rows[0]["file"] == str(ds) and "no-such-encoder.pt" in rows[0]["message"]
    assert "embed_key" not in store.schema(schemas.EVENTS).names  # nothing half-written
    run_embed(str(ds), EmbedConfig(), text_factory=hashing)
    assert store.count(schemas.FAILURES, "stage = 'embed' AND resolved = false") == 0
