"""The long-episode benchmark's input: a session is its episodes end to end."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from wallwm.pipeline.segmentation import Signals


@pytest.fixture(scope="module")
def length(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("segmentation_length")


def test_a_session_is_its_episodes_end_to_end(length):
    a = Signals(np.zeros((5, 2)), fps=10.0, states_TS=np.zeros((5, 1)))
    b = Signals(np.ones((3, 2)), fps=10.0, states_TS=np.ones((3, 1)))
    s = length.session([a, b, a])
    assert s.actions_TA.shape == (13, 2) and s.states_TS.shape == (13, 1)
    np.testing.assert_array_equal(s.actions_TA[5:8], 1.0)
