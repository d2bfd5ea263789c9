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
