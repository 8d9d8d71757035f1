"""Shared maths (dfjax.maths): the fast median is np.median's, exactly."""

from __future__ import annotations

import numpy as np
import pytest

from dfjax.maths import median, robust_std


@pytest.mark.parametrize("shape", [(7,), (8,), (5, 6, 7), (6, 5, 4), (128, 9, 11)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_equals_numpys_on_every_axis_exactly(shape, dtype):
    values = np.random.default_rng(sum(shape)).normal(size=shape).astype(dtype)
    for axis in [None, *range(len(shape)), -1]:
        for keepdims in [False, True]:
            got, want = median(values, axis=axis, keepdims=keepdims), np.median(values, axis=axis, keepdims=keepdims)
            assert got.shape == want.shape and got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def test_median_propagates_nans_like_numpy_and_robust_std_is_the_mad():
    values = np.random.default_rng(3).normal(size=(6, 4))
    values[2, 1] = np.nan
    np.testing.assert_array_equal(median(values, axis=0), np.median(values, axis=0))  # NaN in column 1 only
    assert np.isnan(median(values)) and np.isnan(median(values, axis=0)[1])
    x = np.random.default_rng(4).normal(0.0, 2.0, size=(20000,))
    assert robust_std(x) == pytest.approx(1.4826 * np.median(np.abs(x - np.median(x))), rel=1e-12)
    assert robust_std(x) == pytest.approx(2.0, rel=0.03)
