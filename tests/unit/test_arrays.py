import numpy as np
import pytest

from mailguard.arrays import sorted_distinct


@pytest.mark.parametrize("dtype", [np.uint32, np.uint64, np.int64])
@pytest.mark.parametrize("size", [0, 1, 2, 7, 4000])
def test_sorted_distinct_gives_what_np_unique_gives(dtype, size):
    rng = np.random.default_rng(size)
    values = rng.integers(0, max(2, size // 3), size=size).astype(dtype)  # many repeats
    got = sorted_distinct(values)
    assert got.dtype == values.dtype
    assert np.array_equal(got, np.unique(values))


def test_sorted_distinct_leaves_its_input_alone():
    values = np.array([3, 1, 3, 2], dtype=np.uint64)
    sorted_distinct(values)
    assert values.tolist() == [3, 1, 3, 2]
