"""Ctrl-C: exit 130 with one line saying what was kept, never a traceback."""

from __future__ import annotations

import pytest

from wallwm.cli import main as cli_main


def _words(text: str) -> str:
    return " ".join(text.split())


def test_ctrl_c_in_a_command_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("wallwm.pipeline.ingest.run_ingest", interrupted)
    (tmp_path / "src").mkdir()
    monkeypatch.setattr("sys.argv", ["wallwm", "ingest", str(tmp_path / "src"), "-d", "x"])
    with pytest.raises(SystemExit) as exit_:
        cli_main.main()
    err = capsys.readouterr().err
    assert exit_.value.code == 130 and "Traceback" not in err
    assert _words(err) == (
        "interrupted: what was written before it is kept -- run the same command again to "
        "finish (stages skip what is done; `train` takes --resume)"
    )


def test_ctrl_c_while_ray_shuts_down_is_the_same_line(monkeypatch, capsys):
    """Ray's own exit hook printed a traceback for a Ctrl-C while it stopped its workers."""
    import ray

    def slow_shutdown() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "_ray_running", lambda: True)
    monkeypatch.setattr(ray, "shutdown", slow_shutdown)
    with pytest.raises(SystemExit) as exit_:
        cli_main._stop_ray()
    assert exit_.value.code == 130
    assert _words(capsys.readouterr().err).startswith("interrupted: what was written before it")
