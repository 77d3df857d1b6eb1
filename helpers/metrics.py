"""Scores for generated text: ROUGE through ``evaluate``, offline.

``evaluate.load("rouge")`` downloads its metric script from the Hugging Face Hub, which
SMALL mode (and many a classroom network) cannot reach. The course ships the same metric
script in ``helpers/rouge_metric/`` and loads it with ``evaluate.load(<that folder>)``; it
computes with Google's ``rouge_score`` package, so the numbers are rouge_score's.

Aggregation: evaluate's default (``use_aggregator=True``) reports the median of 1,000
bootstrap resamples of the mean, which is random (seeded when the metric is loaded) and
only close to the mean. The course
asks for the per-example F-measures (``use_aggregator=False``) and averages them: the
exact mean F-measure over the examples, the same on every run.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import evaluate

ROUGE_METRIC_DIR = Path(__file__).resolve().parent / "rouge_metric"
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@lru_cache(maxsize=1)
def load_rouge() -> evaluate.EvaluationModule:
    """The course's ROUGE metric, loaded by ``evaluate`` from ``helpers/rouge_metric/``.

    It is the Hub's ``evaluate-metric/rouge`` script, kept locally so that no download is
    needed; ``keep_in_memory=True`` keeps evaluate from writing cache files.
    """
    return evaluate.load(str(ROUGE_METRIC_DIR), keep_in_memory=True)


def _check(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references: "
            "give one prediction per reference"
        )
    if not predictions:
        raise ValueError("no predictions to score")
    for name, texts in (("predictions", predictions), ("references", references)):
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise TypeError(f"{name} must be strings; item {bad[0]} is {type(texts[bad[0]])}")


def rouge_per_example(
    predictions: list[str], references: list[str], *, use_stemmer: bool = False
) -> dict[str, list[float]]:
    """ROUGE-1/2/L/Lsum F-measure of every prediction against its reference.

    Returns ``{"rouge1": [...], "rouge2": [...], "rougeL": [...], "rougeLsum": [...]}``,
    one number in [0, 1] per example, in order.
    """
    _check(predictions, references)
    scores = load_rouge().compute(
        predictions=predictions,
        references=references,
        rouge_types=list(ROUGE_TYPES),
        use_aggregator=False,
        use_stemmer=use_stemmer,
    )
    return {key: [float(value) for value in scores[key]] for key in ROUGE_TYPES}


def rouge(
    predictions: list[str], references: list[str], *, use_stemmer: bool = False
) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measure of ``predictions`` against ``references``.

    Args:
        predictions: generated summaries, one string each.
        references: the reference summaries written by people, in the same order.
        use_stemmer: apply the Porter stemmer first (evaluate's default: no).

    Returns:
        ``{"rouge1": ..., "rouge2": ..., "rougeL": ..., "rougeLsum": ...}``, each the mean
        over the examples of rouge_score's F-measure, in [0, 1]. Identical predictions and
        references give 1.0; empty predictions give 0.0.
    """
    per_example = rouge_per_example(predictions, references, use_stemmer=use_stemmer)
    return {key: sum(values) / len(values) for key, values in per_example.items()}
