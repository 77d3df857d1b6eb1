"""Small statistics for comparing a model before and after tuning on the same problems.

Notebook 06 scores a sample of held-out problems twice, with the base model and with the
tuned one. Two things follow from that design:

- the sample should be *stratified* (here: by library), so that every library's pass@1
  rests on as many problems as the sample allows, not on the luck of one draw
  (:func:`stratified_sample`);
- the two scores are *paired* (the same problems), so the right comparison is a paired
  test on the problems whose verdict changed (:func:`mcnemar_exact`) or a bootstrap of
  the paired differences (:func:`paired_bootstrap_interval`), not two separate error bars.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
from scipy.stats import binomtest

T = TypeVar("T")


def balanced_allocation(available: dict[Hashable, int], n: int) -> dict[Hashable, int]:
    """How many items to take from each stratum: as equal as the strata allow, ``n`` in all.

    Each stratum gets ``n // k`` (``k`` strata) or one more; a stratum with fewer items
    gives all it has and its unused share goes to the others, until ``n`` are allocated or
    every stratum is used up. Extra single items go to the strata in sorted order of their
    keys, so the allocation does not depend on the order of ``available``.

    Raises:
        ValueError: when ``n`` is negative or a stratum has a negative count.
    """
    if n < 0 or any(count < 0 for count in available.values()):
        raise ValueError("n and every stratum's count must be non-negative")
    take = dict.fromkeys(available, 0)
    left = min(n, sum(available.values()))
    while left > 0:
        open_strata = sorted((s for s in available if take[s] < available[s]), key=repr)
        share, extra = divmod(left, len(open_strata))
        for index, stratum in enumerate(open_strata):
            add = min(share + (index < extra), available[stratum] - take[stratum])
            take[stratum] += add
            left -= add
    return take


def stratified_sample(
    items: Sequence[T], stratum: Callable[[T], Hashable], n: int, seed: int = 0
) -> list[T]:
    """A sample of ``n`` items, spread as evenly over the strata as they allow.

    The allocation is :func:`balanced_allocation`; within a stratum the items are drawn at
    random with ``seed``. The sample keeps the items' original order. With ``n`` at least
    ``len(items)``, every item is returned.
    """
    by_stratum: dict[Hashable, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_stratum[stratum(item)].append(index)
    take = balanced_allocation({s: len(ix) for s, ix in by_stratum.items()}, n)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for s in sorted(by_stratum, key=repr):
        chosen |= set(rng.sample(by_stratum[s], take[s]))
    return [items[i] for i in sorted(chosen)]


def mcnemar_exact(before: Sequence[bool], after: Sequence[bool]) -> dict[str, Any]:
    """The exact McNemar test of a paired before/after comparison of pass/fail verdicts.

    Only the problems whose verdict changed say anything about the difference: ``gained``
    (failed before, pass after) and ``lost`` (passed before, fail after). If tuning changed
    nothing, each change is equally likely to go either way, so ``gained`` follows a
    Binomial(``gained + lost``, 1/2); the two-sided p-value is that binomial test's
    (``scipy.stats.binomtest``). With no changed problem there is no evidence either way and
    the p-value is 1.

    Returns:
        ``n``, ``both`` (pass both times), ``gained``, ``lost``, ``neither``, ``difference``
        (pass rate after minus before) and ``p_value``.
    """
    if len(before) != len(after):
        raise ValueError(f"{len(before)} verdicts before but {len(after)} after")
    pairs = [(bool(b), bool(a)) for b, a in zip(before, after, strict=True)]
    gained = sum(a and not b for b, a in pairs)
    lost = sum(b and not a for b, a in pairs)
    changed = gained + lost
    p_value = binomtest(gained, changed, 0.5).pvalue if changed else 1.0
    n = len(pairs)
    return {
        "n": n,
        "both": sum(b and a for b, a in pairs),
        "gained": gained,
        "lost": lost,
        "neither": sum(not b and not a for b, a in pairs),
        "difference": (gained - lost) / n if n else math.nan,
        "p_value": float(p_value),
    }


def paired_bootstrap_interval(
    before: Sequence[float],
    after: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """A percentile bootstrap interval for mean(after) - mean(before) over the same items.

    Items are resampled *as pairs* (the same problem's two scores stay together), which is
    what makes the interval narrower than two independent error bars when the scores are
    correlated.

    Raises:
        ValueError: on unequal lengths, no items, or a confidence outside (0, 1).
    """
    if len(before) != len(after) or len(before) == 0:
        raise ValueError("need the same, non-zero number of scores before and after")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    differences = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[picks].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)
