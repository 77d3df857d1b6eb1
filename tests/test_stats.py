import math
from collections import Counter

import numpy as np
import pytest

from helpers.stats import (
    balanced_allocation,
    mcnemar_exact,
    paired_bootstrap_interval,
    stratified_sample,
)


def test_balanced_allocation_is_even_where_it_can_be():
    assert balanced_allocation({"a": 10, "b": 10, "c": 10}, 9) == {"a": 3, "b": 3, "c": 3}
    # One more each for the first strata in sorted order; the total is exact.
    assert balanced_allocation({"b": 10, "a": 10, "c": 10}, 10) == {"a": 4, "b": 3, "c": 3}


def test_a_small_stratum_gives_all_it_has_and_the_rest_is_shared():
    take = balanced_allocation({"big": 50, "mid": 20, "tiny": 2}, 30)
    assert take == {"big": 14, "mid": 14, "tiny": 2}
    assert sum(take.values()) == 30


def test_asking_for_more_than_there_is_takes_everything():
    assert balanced_allocation({"a": 3, "b": 1}, 100) == {"a": 3, "b": 1}
    assert balanced_allocation({"a": 3}, 0) == {"a": 0}
    with pytest.raises(ValueError):
        balanced_allocation({"a": 3}, -1)


def test_stratified_sample_spreads_over_libraries_and_keeps_order():
    # A skewed population, like DS-1000: one library with most of the problems.
    items = [("Pandas", i) for i in range(60)] + [("Numpy", i) for i in range(30)]
    items += [("Tensorflow", i) for i in range(4)]
    sample = stratified_sample(items, lambda item: item[0], n=24, seed=1)
    assert len(sample) == 24 and len(set(sample)) == 24
    assert Counter(lib for lib, _ in sample) == {"Pandas": 10, "Numpy": 10, "Tensorflow": 4}
    assert sample == [item for item in items if item in sample]  # original order
    # Reproducible with the seed, different with another.
    assert sample == stratified_sample(items, lambda item: item[0], n=24, seed=1)
    assert sample != stratified_sample(items, lambda item: item[0], n=24, seed=2)
    assert stratified_sample(items, lambda item: item[0], n=1000) == items


def test_mcnemar_counts_the_four_cells():
    before = [True, True, False, False, False, True]
    after = [True, False, True, True, False, True]
    result = mcnemar_exact(before, after)
    assert (result["both"], result["gained"], result["lost"], result["neither"]) == (2, 2, 1, 1)
    assert result["n"] == 6
    assert math.isclose(result["difference"], (2 - 1) / 6)


def test_mcnemar_p_value_is_the_exact_binomial_one():
    # 9 gained, 1 lost: two-sided exact p = 2 * P(X <= 1), X ~ Binomial(10, 1/2) = 22 / 1024.
    before = [False] * 9 + [True] + [False] * 5
    after = [True] * 9 + [False] + [False] * 5
    result = mcnemar_exact(before, after)
    assert math.isclose(result["p_value"], 2 * (1 + 10) / 2**10)
    # Symmetric: the direction does not change the two-sided p-value.
    assert math.isclose(mcnemar_exact(after, before)["p_value"], result["p_value"])
    # Balanced changes: no evidence at all.
    assert mcnemar_exact([True, False], [False, True])["p_value"] == 1.0


def test_mcnemar_without_any_change_has_p_one():
    result = mcnemar_exact([False, False, True], [False, False, True])
    assert result["p_value"] == 1.0 and result["difference"] == 0.0
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_paired_bootstrap_interval_is_narrower_than_unpaired_error_bars():
    rng = np.random.default_rng(0)
    before = (rng.random(200) < 0.3).astype(float)
    after = before.copy()
    flip = rng.choice(200, size=20, replace=False)  # tuning solves 20 more problems
    after[flip] = 1.0
    low, high = paired_bootstrap_interval(before, after, seed=0)
    difference = after.mean() - before.mean()
    assert low <= difference <= high
    assert low > 0  # a consistent gain on the same problems is clearly positive
    unpaired = 2 * 1.96 * math.sqrt(
        before.mean() * (1 - before.mean()) / 200 + after.mean() * (1 - after.mean()) / 200
    )
    assert high - low < unpaired
    assert (low, high) == paired_bootstrap_interval(before, after, seed=0)


def test_paired_bootstrap_interval_of_no_change_is_zero():
    assert paired_bootstrap_interval([1, 0, 1], [1, 0, 1]) == (0.0, 0.0)
    with pytest.raises(ValueError):
        paired_bootstrap_interval([], [])
    with pytest.raises(ValueError):
        paired_bootstrap_interval([1.0], [1.0], confidence=1.5)
