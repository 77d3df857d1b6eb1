"""helpers.metrics: the course's ROUGE equals rouge_score's, offline."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from rouge_score import rouge_scorer, scoring

from helpers import metrics

# A fixed set: exact copies, paraphrases, reorderings, partial overlap, nothing in common,
# punctuation and case differences, multi-line summaries (rougeLsum splits on newlines).
PREDICTIONS = [
    "The database failover took 14 minutes because the replica lagged behind.",
    "Engineers replaced the faulty pump and the cooling loop is stable again.",
    "The survey found that most users want offline mode.",
    "The team plans to renegotiate the storage contract.\nQuarterly costs rose sharply.",
    "completely unrelated words here",
    "Tests PASSED after the patch; latency fell to 120 ms.",
    "the the the model model",
    "Batteries degrade faster when charged at high temperatures.",
]
REFERENCES = [
    "Failover of the database took 14 minutes since the replica was lagging.",
    "Engineers replaced the faulty pump and the cooling loop is stable again.",
    "Most users asked for an offline mode in the survey.",
    "Quarterly costs rose by a third.\nThe team will renegotiate the storage contract.",
    "The sensor array was recalibrated on Monday.",
    "After the patch the tests passed and latency dropped to 120 ms.",
    "the model",
    "Charging at high temperatures makes batteries degrade faster, the lab found.",
]
TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def rouge_score_reference(predictions, references, use_stemmer):
    """rouge_score called directly: per-example F-measures and their means."""
    scorer = rouge_scorer.RougeScorer(TYPES, use_stemmer=use_stemmer)
    rows = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    per_example = {key: [row[key].fmeasure for row in rows] for key in TYPES}
    means = {key: float(np.mean(values)) for key, values in per_example.items()}
    return per_example, means


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_equals_rouge_score_on_a_fixed_set(use_stemmer):
    per_example, means = rouge_score_reference(PREDICTIONS, REFERENCES, use_stemmer)
    ours = metrics.rouge(PREDICTIONS, REFERENCES, use_stemmer=use_stemmer)
    assert list(ours) == TYPES
    for key in TYPES:
        assert ours[key] == pytest.approx(means[key], abs=1e-12)
    ours_each = metrics.rouge_per_example(PREDICTIONS, REFERENCES, use_stemmer=use_stemmer)
    for key in TYPES:
        assert ours_each[key] == pytest.approx(per_example[key], abs=1e-12)


def test_the_set_is_not_trivial():
    # The fixed set spans the range, so equality above is not 0 == 0 or 1 == 1.
    _, means = rouge_score_reference(PREDICTIONS, REFERENCES, use_stemmer=False)
    for key in TYPES:
        assert 0.2 < means[key] < 0.9
    each = metrics.rouge_per_example(PREDICTIONS, REFERENCES)
    assert each["rouge1"][1] == 1.0 and each["rouge1"][4] == 0.0
    # rougeLsum matches line by line: the two reordered lines of example 3 still match.
    assert each["rougeLsum"][3] > each["rougeL"][3]
    assert each["rougeL"][0] == each["rougeLsum"][0]


def test_stemming_changes_the_numbers():
    plain = metrics.rouge(PREDICTIONS, REFERENCES)
    stemmed = metrics.rouge(PREDICTIONS, REFERENCES, use_stemmer=True)
    assert stemmed["rouge1"] > plain["rouge1"]  # "lagged"/"lagging", "degrade"/"degrades"...


def test_predictions_equal_to_references_score_one():
    assert metrics.rouge(REFERENCES, REFERENCES) == dict.fromkeys(TYPES, 1.0)


def test_empty_predictions_score_zero():
    assert metrics.rouge([""] * len(REFERENCES), REFERENCES) == dict.fromkeys(TYPES, 0.0)


def test_order_matters_each_prediction_meets_its_own_reference():
    shuffled = PREDICTIONS[1:] + PREDICTIONS[:1]
    assert (
        metrics.rouge(shuffled, REFERENCES)["rouge1"]
        < metrics.rouge(PREDICTIONS, REFERENCES)["rouge1"]
    )


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        metrics.rouge(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no predictions"):
        metrics.rouge([], [])
    with pytest.raises(TypeError, match="item 1"):
        metrics.rouge(["a", None], ["a", "b"])


def test_metric_script_default_aggregator_is_rouge_scores_bootstrap():
    """The shipped script's default reproduces the Hub's: BootstrapAggregator's mid."""
    module = metrics.load_rouge()
    ours = module.compute(predictions=PREDICTIONS, references=REFERENCES)
    # evaluate runs compute() under numpy's seed taken when the metric was loaded.
    np.random.seed(module.seed)
    scorer = rouge_scorer.RougeScorer(TYPES)
    aggregator = scoring.BootstrapAggregator()
    for pred, ref in zip(PREDICTIONS, REFERENCES, strict=True):
        aggregator.add_scores(scorer.score(ref, pred))
    expected = {key: value.mid.fmeasure for key, value in aggregator.aggregate().items()}
    assert ours == pytest.approx(expected, abs=1e-12)
    # ... which is close to the exact mean the course reports, but random.
    _, means = rouge_score_reference(PREDICTIONS, REFERENCES, use_stemmer=False)
    assert ours == pytest.approx(means, abs=0.05)


def test_metric_script_takes_several_references():
    module = metrics.load_rouge()
    scores = module.compute(
        predictions=["the pump was replaced"],
        references=[["a valve failed", "the pump was replaced"]],
        use_aggregator=False,
    )
    assert scores["rouge1"] == [1.0]


def test_loads_through_evaluate_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    metrics.load_rouge.cache_clear()
    module = metrics.load_rouge()
    assert module.name == "rouge"
    assert type(module).__module__.endswith("rouge_metric")  # the script in helpers/
    assert metrics.rouge(["a cat sat"], ["a cat sat"])["rouge2"] == 1.0
