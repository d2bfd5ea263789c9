"""Every command, fed what a user gets wrong: bad paths, typos, unknown tags and ids, corrupt and
missing checkpoints. Each answers with exit 1 or 2, one line naming the option or file and what is
wrong (or click's usage box for a malformed command line), and never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app
from wallwm.pipeline.ingest import IngestConfig, run_ingest
from wallwm.pipeline.tables import schemas
from wallwm.pipeline.tables.store import LanceStore

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def world(tmp_path_factory, synth_dataset) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-input")
    ds = synth_dataset(root, episodes=4, size=32, caption=True, cluster_ks=[4, 2])
    bad = root / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    (bad / "truncated.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    (bad / "garbage.json").write_text("{not json")
    (bad / "encoder.pt").write_bytes(b"garbage")
    (bad / "file").write_text("a file, not a folder")
    run_ingest(IngestConfig(source=str(root / "src"), dataset=str(root / "bare"), executor="local"))
    store = LanceStore(str(ds))
    cluster = store.read(schemas.CLUSTERS, columns=["cluster_id"]).column(0)[0].as_py()
    return {
        "ds": str(ds),
        "src": str(root / "src"),
        "bad": str(bad),
        "cluster": cluster,
        "bare": str(root / "bare"),  # ingested only: no events yet
    }


# (arguments, exit code, what the message must say); {ds} {src} {bad} {cluster} are filled in
CASES: list[tuple[str, int, str]] = [
    ("ingest /no/such/src -d {bad}/new1", 2, "SOURCE /no/such/src: no such file or folder"),
    ("run /no/such/src -d {bad}/new1", 2, "SOURCE /no/such/src: no such file or folder"),
    ("ingest lerobot/pusht -d {bad}/new1", 2, "--repo-type dataset lerobot/pusht --local-dir"),
    (
        "ingest gs://gresearch/robotics/bridge/0.1.0 -d {bad}/new1",
        2,
        "(`gcloud storage cp -r gs://gresearch/robotics/bridge/0.1.0 DIR`), then ingest DIR",
    ),
    ("inspect s3://lab/demos", 2, "SOURCE s3://lab/demos: sources are read from local disk"),
    ("ingest {src} -d {bad}/new2 --format lerobto", 2, "--format: Input should be"),
    ("run {src} -d {bad}/new3 --format lerobto", 2, "--format: Input should be"),
    ("ingest {src} -d {bad}/file", 2, "--dataset {bad}/file: exists and is not a folder"),
    ("ingest {src} -d {bad}/file/ds", 2, "is a file, not a folder"),
    ("segment -d {ds} --method bogus", 2, "--method: Input should be 'events' or 'fixed'"),
    ("ingest {src} -d {bad}/new5 --fps inf", 2, "--fps: Input should be a finite number"),
    ("segment -d {ds} --penalty nan", 2, "--penalty: Input should be a finite number"),
    ("caption -d {ds} --prompt nosuch_prompt", 2, "no prompt template 'nosuch_prompt'"),
    ("caption -d {ds} --backend bogus", 2, "unknown backend 'bogus'"),
    ("caption -d {ds} --backend vllm --model /no/such/m", 2, "--model /no/such/m: no such model"),
    ("embed -d {ds} --text-model /no/such/model", 1, "/no/such/model: no such model"),
    ("embed -d {ds} --visual-weights {bad}/encoder.pt", 1, "not a TorchScript image encoder"),
    ("embed -d {ds} --text-weight -1", 2, "weights must be finite and >= 0"),
    ("cluster -d {ds} --strategy bogus", 2, "--strategy: Input should be 'uniform' or 'power'"),
    ("cluster -d {ds} --k a,b", 2, "--k must be integers"),
    ("cluster -d {ds} --levels 2 --k 6", 2, "--k gives 1 levels but --levels is 2"),
    ("cluster -d {ds} --k 0,2", 2, "--k must be positive integers like 64,8, got '0,2'"),
    ("materialize -d {ds} --size 0", 2, "Invalid value for '--size'"),
    ("train -d {ds} --size 5000 --local", 2, "--size: Input should be less than or equal to 1024"),
    ("events list -d {ds} --episode nosuch", 1, "--episode nosuch: no episode has the id or key"),
    ("events show nosuch -d {ds} --out {bad}/x.png", 1, "no event 'nosuch'"),
    ("events similar nosuch -d {ds}", 1, "no event 'nosuch'"),
    ("episode plot nosuch -d {ds}", 1, "no episode has the id or key 'nosuch'"),
    ("clusters show L1-nope -d {ds}", 1, "no cluster 'L1-nope'"),
    ("clusters set-weight L1-nope 2 -d {ds}", 1, "unknown cluster ids: ['L1-nope']"),
    ("clusters set-weight {cluster} nan -d {ds}", 1, "finite number"),
    ("clusters exclude L1-nope -d {ds}", 1, "unknown cluster ids"),
    ("clusters import /no/such.json -d {ds}", 1, "/no/such.json: not a clusters export"),
    ("clusters import {bad}/garbage.json -d {ds}", 1, "garbage.json: not a clusters export"),
    ("clusters diff nosuch other -d {ds}", 1, "no clusters version or tag 'nosuch'"),
    ("clusters list -d {ds} --level 9", 1, "--level 9: no clusters at that level"),
    ("report -d {ds} --out {bad}/file", 2, "--out {bad}/file: exists and is not a folder"),
    ("materialize -d {ds} --tag nosuch", 1, "no tag 'nosuch'"),
    ("train -d {ds} --tag nosuch --local", 1, "no tag 'nosuch'"),
    ("train -d {ds} --preset smal --local", 2, "did you mean 'small'"),
    ("train -d {ds} --preset smal", 2, "did you mean 'small'"),
    ("train -d {ds} --mode chunks --local", 2, "--mode: Input should be"),
    ("train -d {ds} --out {bad}/file --local", 2, "--out {bad}/file: exists and is not a folder"),
    ("train -d {ds} --resume --out {bad} --local", 1, "{bad}/checkpoint.pt: holds pickled"),
    ("train -d {ds} --local --num-workers 2", 2, "--local trains in this process"),
    ("train plot /no/such/run", 2, "/no/such/run: not a training run"),
    ("eval offline --checkpoint {bad}/checkpoint.pt", 1, "checkpoint.pt: holds pickled"),
    ("eval offline --checkpoint {bad}/truncated.pt", 1, "truncated.pt: not a PyTorch checkpoint"),
    ("eval offline --checkpoint /no/such.pt", 1, "/no/such.pt: no such checkpoint file"),
    ("serve --checkpoint /no/such.pt", 1, "/no/such.pt: no such checkpoint file"),
    ("serve --checkpoint {bad}/checkpoint.pt", 1, "checkpoint.pt: holds pickled"),
    ("sim record --out {bad}/file --episodes 1", 2, "--out {bad}/file: exists and is not a"),
    ("sim synth --out {bad}/s --task pick-plac", 2, "did you mean 'pick-place'"),
    ("ingest {src} -d {bad}/new4 --camera-map top", 2, "--camera-map 'top': expected OLD=NEW"),
    ("quality -d {ds} --tag nosuch", 1, "--tag nosuch"),
    ("materialize -d {ds} --exclude-flag faild", 1, "did you mean 'failed'"),
    ("export lerobot -d {ds} --tag nosuch -o {bad}/e1", 1, "no tag 'nosuch'"),
    ("export lerobot -d {ds} -o {bad}/file", 2, "--out {bad}/file: exists and is not a folder"),
    ("export lerobot -d {ds} -o {bad}", 1, "exists and is not empty (--overwrite replaces it)"),
    ("sim synth --out {bad}/s0 --episodes 0", 2, "Invalid value for '--episodes'"),
    ("sim synth --out {bad}/s1 --size 100000", 2, "Invalid value for '--size'"),
    ("sim synth --out {bad}/s2 --fps 0", 2, "Invalid value for '--fps'"),
    ("sim synth --out {bad}/s3 --action-noise -1", 2, "Invalid value for '--action-noise'"),
    ("sim jaco --out {bad}/s4 --hesitations 2", 2, "Invalid value for '--hesitations'"),
    ("clusters tag t -d {bare}", 1, "no events yet: run `wallwm segment` first"),
    ("ingest {src} -d {bad}/new6 --ray-address 127.0.0.1:1", 2, "no Ray cluster answers there"),
    ("segment -d {ds} --ray-address nonsense", 2, "--ray-address nonsense: expected HOST:PORT"),
    ("caption -d {bare}", 1, "no events yet: run `wallwm segment` first"),
    ("embed -d {bare}", 1, "no events yet: run `wallwm segment` first"),
    ("materialize -d {bare}", 1, "no events yet: run `wallwm segment` first"),
    ("train -d {bare} --local", 1, "no events yet: run `wallwm segment` first"),
    ("eval segmentation -d {bare}", 1, "nothing to score -- no episode has both ground-truth"),
]


def _words(text: str) -> str:
    """Output as one line of words (rich wraps long lines and draws boxes)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize(("args", "code", "says"), CASES, ids=[c[0][:48] for c in CASES])
def test_a_user_error_is_one_clear_line_never_a_traceback(world, args, code, says):
    argv = [a.format(**world) for a in args.split()]
    result = CliRunner().invoke(app, argv)
    output = result.output
    assert "Traceback" not in output and isinstance(result.exception, SystemExit | None), output
    assert result.exit_code == code, output
    assert says.format(**world) in _words(output), output
    lines = [line for line in output.splitlines() if line.strip()]
    usage_box = lines and lines[0].startswith("Usage:")  # click's own answer to a bad command line
    if not usage_box:
        assert len(lines) == 1, output
    assert not any(Path(world["bad"], f"new{i}").exists() for i in (1, 2, 3, 4, 6))  # none created


def test_a_damaged_table_is_one_line_from_any_command(world, tmp_path, monkeypatch, capsys):
    """A table's data file deleted (a half-copied dataset, a cleanup script): every command that
    reads it raised Lance's error as a traceback; the console script names the table instead."""
    import shutil

    from wallwm.cli.main import damaged_table, main

    ds = tmp_path / "damaged"
    shutil.copytree(world["ds"], ds)
    for data in (ds / "episodes.lance" / "data").iterdir():
        data.unlink()
    for args in (["quality", "-d", str(ds)], ["segment", "-d", str(ds), "--force", "--local"]):
        monkeypatch.setattr("sys.argv", ["wallwm", *args])
        with pytest.raises(SystemExit) as exit_:
            main()
        err = capsys.readouterr().err
        assert exit_.value.code == 1 and "Traceback" not in err, err
        assert f"{ds}/episodes.lance: the table is damaged (" in _words(err)
        assert "`wallwm ingest`" in _words(err) and len(err.strip().splitlines()) == 1, err
    assert damaged_table(ValueError("division by zero")) is None  # other errors stay errors
