"""The CLI through typer's CliRunner: exit codes, console lines, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from wallwm.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_is_instant_and_lists_commands():
    # heavy libraries stay out of CLI start-up
    code = (
        "import sys, wallwm.cli.main; "
        "print(sorted(m for m in ('ray', 'lance', 'torch', 'av') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("ingest", "status", "failures", "sim"):
        assert cmd in result.output
    for sub in (
        ["ingest", "--help"],
        ["status", "--help"],
        ["failures", "--help"],
        ["sim", "synth", "--help"],
    ):
        assert invoke(*sub).exit_code == 0


@pytest.mark.usefixtures("ray_local")
def test_ingest_status_failures(folder_source, tmp_path):
    src, ds = folder_source(4), tmp_path / "ds"
    bad = sorted(src.iterdir())[1]
    (bad / "top.mp4").write_bytes(b"\x00" * 100)
    result = invoke("ingest", src, "--dataset", ds)
    assert result.exit_code == 0, result.output
    assert "3 written" in result.output and "1 failed" in result.output
    assert f"failed {bad.name}: {bad / 'top.mp4'}: corrupt or truncated video" in result.output

    status = json.loads(invoke("status", "--dataset", ds, "--json").output)
    tables = {t["table"]: t for t in status["tables"]}
    assert tables["episodes"]["rows"] == 3 and tables["failures"]["rows"] == 1
    assert status["open_failures"] == {"ingest": 1}
    assert status["stages"][0] == {"stage": "ingest", "done": 3, "total": 3, "unit": "episodes"}
    assert status["last_runs"]["ingest"]["rows_written"] == 3
    assert "episodes" in invoke("status", "--dataset", ds).output

    failures = json.loads(invoke("failures", "--dataset", ds, "--json").output)
    assert [f["episode_key"] for f in failures] == [bad.name]
    assert "1 failures" in invoke("failures", "--dataset", ds).output

    assert invoke("ingest", src, "--dataset", ds, "--strict").exit_code == 1
    again = invoke("ingest", src, "--dataset", ds)
    assert again.exit_code == 0 and "0 written, 3 unchanged" in again.output


def test_nothing_ingested_exits_1(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.txt").write_text("x")
    result = invoke("ingest", tmp_path / "empty", "--dataset", tmp_path / "ds", "--local")
    assert result.exit_code == 1
    assert "unknown source format" in result.output


def test_bad_option_is_a_clear_error(tmp_path):
    result = invoke("ingest", tmp_path, "--dataset", tmp_path / "ds", "--format", "parquet")
    assert result.exit_code == 2 and "format" in result.output


def test_ingest_reports_the_gripper_open_end(lerobot_v21, tmp_path):
    root, _ = lerobot_v21(2)
    result = invoke("ingest", root, "--dataset", tmp_path / "ds", "--local")
    assert result.exit_code == 0, result.output
    assert "gripper open end: auto: 'gripper' low = open (vote -1 over 2 episodes)" in result.output
    bad = invoke("ingest", root, "--dataset", tmp_path / "ds", "--gripper-open", "sideways")
    assert bad.exit_code == 2 and "--gripper-open" in bad.output


def test_sim_synth_writes_folder_source(tmp_path):
    result = invoke(
        "sim", "synth", "--out", tmp_path / "src", "--episodes", 2, "--size", 32, "--task", "reach"
    )
    assert result.exit_code == 0
    eps = sorted((tmp_path / "src").iterdir())
    assert len(eps) == 2 and (eps[0] / "top.mp4").exists()
    meta = json.loads((eps[0] / "meta.json").read_text())
    assert meta["instruction"] == "reach the goal marker" and meta["events"][0]["start_frame"] == 0
    bad = invoke("sim", "synth", "--out", tmp_path / "x", "--task", "pick-plac")
    assert bad.exit_code != 0 and "did you mean 'pick-place'" in bad.output


def test_sim_record_rejects_unknown_action_labels(tmp_path):
    bad = invoke("sim", "record", "--out", tmp_path / "x", "--action-labels", "noisy")
    assert bad.exit_code == 2 and "--action-labels" in bad.output and "expert" in bad.output


def test_sim_recorders_reject_an_unknown_operator(tmp_path):
    for recorder in ("record", "jaco"):
        bad = invoke("sim", recorder, "--out", tmp_path / "x", "--operator", "human")
        assert bad.exit_code == 2 and "--operator" in bad.output and "smooth" in bad.output


def test_eval_policy_refuses_a_noise_scale_it_cannot_apply():
    bad = invoke(
        "eval", "policy", "--task", "reach", "--server", "http://127.0.0.1:9", "--noise-scale", "0"
    )
    assert bad.exit_code == 2 and "--noise-scale" in bad.output


def test_commands_that_read_a_dataset_refuse_one_that_is_not_there(tmp_path):
    """One line naming --dataset, exit 2, and the folder is not created."""
    missing = tmp_path / "no" / "such"
    commands = [
        ["status"], ["failures"], ["segment"], ["caption"], ["embed"], ["cluster"],
        ["clusters", "list"], ["report"], ["materialize"], ["train", "--local"],
        ["events", "list"], ["eval", "segmentation"], ["episode", "plot", "x"],
    ]  # fmt: skip
    runner = CliRunner()
    for args in commands:
        result = runner.invoke(app, [*args, "--dataset", str(missing)])
        assert result.exit_code == 2, (args, result.output)
        assert f"--dataset {missing}: no such folder" in " ".join(result.output.split()), args
        assert "Traceback" not in result.output
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["status", "--dataset", str(empty)])
    assert result.exit_code == 2 and "not a wallwm dataset" in result.output


def test_json_output_has_no_nan(capsys):
    """Every ``--json`` goes through one printer: a NaN or infinity becomes null (strict JSON)."""
    import json

    from wallwm.cli.common import print_json

    print_json({"f1": 0.5, "offset": float("nan"), "rows": [float("inf"), 1.0, (2.0, None)]})
    out = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
    assert out == {"f1": 0.5, "offset": None, "rows": [None, 1.0, [2.0, None]]}


def test_a_progress_bar_leaves_nothing_in_a_log():
    """Where the output is no terminal (a batch job's log, a pipe), the bar is not drawn: it
    left an empty line behind every long command's output."""
    from wallwm.cli.common import console, progress_bar

    with console.capture() as captured:
        console.print("before")
        with progress_bar("ingest", "{task.fields[fps]:>8.0f} frames/s") as progress:
            task = progress.add_task("ingest", total=2, fps=0.0)
            progress.advance(task)
            progress.console.print("failed ep_1: a line said during the work")
            progress.advance(task)
        console.print("after")
    assert captured.get() == "before\nfailed ep_1: a line said during the work\nafter\n"
