"""Starting the embedded Ray (without starting one: ``ray.init`` is replaced)."""

from __future__ import annotations

import pytest

from wallwm.pipeline import runtime


class FakeRay:
    def __init__(self, failures: int) -> None:
        self.failures, self.inits, self.shutdowns = failures, 0, 0

    def init(self, **kwargs: object) -> None:
        self.inits += 1
        assert kwargs["num_cpus"] == 2 and kwargs["include_dashboard"] is False
        if self.inits <= self.failures:
            raise Exception("The current node timed out during startup.")  # what ray.init raises

    def shutdown(self) -> None:
        self.shutdowns += 1


def _patch(monkeypatch: pytest.MonkeyPatch, fake: FakeRay) -> None:
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake.init)
    monkeypatch.setattr(ray, "shutdown", fake.shutdown)
    monkeypatch.setattr(runtime, "quiet_ray_data", lambda: None)


def test_a_start_that_timed_out_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRay(failures=1)
    _patch(monkeypatch, fake)
    runtime.ensure_ray(num_cpus=2)
    assert (fake.inits, fake.shutdowns) == (2, 1)


def test_a_start_that_keeps_failing_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRay(failures=99)
    _patch(monkeypatch, fake)
    with pytest.raises(RuntimeError, match=r"did not start in 3 attempts .*timed out"):
        runtime.ensure_ray(num_cpus=2)
    assert fake.inits == runtime.LOCAL_START_ATTEMPTS


def test_rays_start_banner_is_left_out_of_stderr_and_the_rest_passes(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Ray's C++ core printed "Set ray log level from environment variable ..." (an INFO line,
    whatever the level) before every command's own output; anything else it says stays."""
    import os

    with runtime.without_start_banner():
        os.write(2, b"[2026-12-07 I 1 1] logging.cc:303: " + runtime.START_BANNER.encode())
        os.write(2, b" RAY_BACKEND_LOG_LEVEL to 3\n[2026-12-07 W 1 1] a real warning\n")
    assert capfd.readouterr().err == "[2026-12-07 W 1 1] a real warning\n"


def test_a_failed_start_still_gives_stderr_back(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    before = os.fstat(2)
    with pytest.raises(RuntimeError), runtime.without_start_banner():
        os.write(2, b"said before failing\n")
        raise RuntimeError("start failed")
    after = os.fstat(2)
    assert (before.st_ino, before.st_dev) == (after.st_ino, after.st_dev)
    assert capfd.readouterr().err == "said before failing\n"
