"""Per-frame vector columns read from Arrow: every refusal names the column and the frame."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from wallwm.pipeline.sources.base import BadSignalError
from wallwm.pipeline.tables.arrays import column_to_2d


def test_list_and_scalar_columns_become_frames_by_dims():
    lists = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert column_to_2d(lists, "action", "f").tolist() == [[1, 2], [3, 4], [5, 6]]
    assert column_to_2d(pa.array([1, 2, 3]), "action", "f").shape == (3, 1)


@pytest.mark.parametrize("scalar", [False, True])
def test_a_value_beyond_float32_is_named_not_made_infinite(scalar):
    """A double of 1e300 cast to float32 became inf (a RuntimeWarning, then reported as a
    NaN/inf the file does not hold)."""
    values = [0.5, -2.0, 1e300, 7.0]
    column = pa.array(values) if scalar else pa.array([values[:2], values[2:]])
    with pytest.raises(BadSignalError, match="float32 cannot represent") as err:
        column_to_2d(column, "action", "steps.parquet")
    where = "frame 2, dimension 0" if scalar else "frame 1, dimension 0"
    assert where in err.value.problem and err.value.error_class == "OutOfRange"
    big_but_fine = pa.array([[3e38, -3e38]])
    assert np.isfinite(column_to_2d(big_but_fine, "action", "f")).all()


def test_null_and_ragged_rows_are_refused_by_frame():
    with pytest.raises(BadSignalError, match="null at frame 1"):
        column_to_2d(pa.array([[1.0], None]), "state", "f")
    with pytest.raises(BadSignalError, match=r"different lengths \(2 vs 1 at frame 1\)"):
        column_to_2d(pa.array([[1.0, 2.0], [3.0]]), "state", "f")


def test_elements_that_are_not_numbers_are_refused_by_type():
    """A list column of strings (a CSV converted without types): numpy parsed "0.5" as a number
    without a word, and an "n/a" failed the episode as an "unexpected error")."""
    for column in (pa.array([["0.5", "1"], ["2", "3"]]), pa.array([[[1.0]], [[2.0]]])):
        with pytest.raises(BadSignalError, match="unsupported element type") as err:
            column_to_2d(column, "action", "steps.parquet")
        assert err.value.error_class == "BadType"
    with pytest.raises(BadSignalError, match="unsupported type string"):
        column_to_2d(pa.array(["0.5", "1"]), "action", "steps.parquet")
    assert column_to_2d(pa.array([[True, False]]), "gripper", "f").tolist() == [[1.0, 0.0]]
