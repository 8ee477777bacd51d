import numpy as np
import pytest

from mailguard.arrays import distinct_with_index, sorted_distinct, strongest_three


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


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 40, 2000])
def test_strongest_three_gives_what_a_full_sort_gives(size):
    rng = np.random.default_rng(size)
    cases = [
        np.abs(rng.normal(size=size)),  # distinct: the partition's path
        rng.integers(0, 4, size=size).astype(np.float64),  # ties everywhere: the sort's path
        np.abs(rng.normal(size=size)).astype(np.float32).astype(np.float64),  # weights as the model holds them
        np.zeros(size),
        np.sort(np.abs(rng.normal(size=size))),  # the top three all in the last third
        -np.sort(-np.abs(rng.normal(size=size))),  # ... and all in the first
    ]
    if size > 3:
        tied = np.abs(rng.normal(size=size))
        tied[rng.choice(size, 2, replace=False)] = tied.max() + 1.0  # the two largest equal
        with_nan = np.abs(rng.normal(size=size))
        with_nan[size // 2] = np.nan
        cases += [tied, with_nan]
    for values in cases:
        assert strongest_three(values).tolist() == np.argsort(-values)[:3].tolist()


@pytest.mark.parametrize("size", [0, 1, 5, 300])
def test_distinct_token_ids_keep_where_each_name_landed(size):
    rng = np.random.default_rng(size)
    repeats = rng.integers(0, max(2, size // 2), size=size).astype(np.uint64)  # as colliding hashes would
    for ids in (repeats, rng.permutation(np.arange(size, dtype=np.uint64) * np.uint64(7919))):
        distinct, where = distinct_with_index(ids)
        assert np.array_equal(distinct, sorted_distinct(ids))
        assert np.array_equal(distinct[where], ids)
