"""ROUGE as an ``evaluate`` metric that loads from this folder, offline.

``evaluate.load("rouge")`` fetches the metric script ``evaluate-metric/rouge`` from the
Hugging Face Hub. This is the same metric written for the course, so that
``evaluate.load("helpers/rouge_metric")`` (a local folder holding a script of the same name)
works without the Hub. It computes with Google's ``rouge_score`` package, as the Hub script
does, with the same arguments and the same outputs:

- ``use_aggregator=True`` (the Hub script's default): rouge_score's ``BootstrapAggregator``,
  whose ``mid`` is the median of 1,000 bootstrap means: random (evaluate seeds NumPy with
  a seed drawn when the metric is loaded) and close to, but not exactly, the mean of the
  per-example F-measures.
- ``use_aggregator=False``: the per-example F-measures, one list per ROUGE type. The course
  takes their mean (:func:`helpers.metrics.rouge`): exact and reproducible.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer, scoring

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    url = "https://www.aclweb.org/anthology/W04-1013",
    pages = "74--81",
}
"""

_DESCRIPTION = """\
ROUGE (Recall-Oriented Understudy for Gisting Evaluation) compares a generated summary with
a reference summary written by a person: rouge1 and rouge2 count overlapping unigrams and
bigrams, rougeL the longest common subsequence, rougeLsum the same on each line (newline
separated sentences) of a summary. Each is reported as an F-measure between 0 and 1.
Computed with Google's rouge_score package (https://github.com/google-research/google-research/tree/master/rouge).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated summaries, one string each.
    references: list of reference summaries, one string each (or a list of strings each
        for several references; the best match counts).
    rouge_types: which ROUGE types to compute; default rouge1, rouge2, rougeL, rougeLsum.
    use_aggregator: True: bootstrap aggregate (mid F-measure); False: per-example lists.
    use_stemmer: use the Porter stemmer to strip word suffixes.
    tokenizer: an optional callable splitting a string into tokens.
Returns:
    a dict from ROUGE type to an F-measure (use_aggregator=True) or a list of them.
Examples:
    >>> rouge = evaluate.load("helpers/rouge_metric")
    >>> rouge.compute(predictions=["hello there"], references=["hello there"])
    {'rouge1': 1.0, 'rouge2': 1.0, 'rougeL': 1.0, 'rougeLsum': 1.0}
"""


class Tokenizer:
    """Wrap a plain callable in the interface rouge_score expects."""

    def __init__(self, tokenizer_func):
        self.tokenizer_func = tokenizer_func

    def tokenize(self, text):
        return self.tokenizer_func(text)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Sequence(datasets.Value("string", id="sequence")),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Value("string", id="sequence"),
                    }
                ),
            ],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=[
                "https://en.wikipedia.org/wiki/ROUGE_(metric)",
                "https://github.com/google-research/google-research/tree/master/rouge",
            ],
        )

    def _compute(
        self,
        predictions,
        references,
        rouge_types=None,
        use_aggregator=True,
        use_stemmer=False,
        tokenizer=None,
    ):
        if rouge_types is None:
            rouge_types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        multi_ref = isinstance(references[0], list)
        if tokenizer is not None:
            tokenizer = Tokenizer(tokenizer)
        scorer = rouge_scorer.RougeScorer(
            rouge_types=rouge_types, use_stemmer=use_stemmer, tokenizer=tokenizer
        )
        aggregator = scoring.BootstrapAggregator() if use_aggregator else None
        scores = []
        for ref, pred in zip(references, predictions, strict=True):
            score = scorer.score_multi(ref, pred) if multi_ref else scorer.score(ref, pred)
            if aggregator is not None:
                aggregator.add_scores(score)
            else:
                scores.append(score)
        if aggregator is not None:
            result = aggregator.aggregate()
            return {key: result[key].mid.fmeasure for key in result}
        return {key: [score[key].fmeasure for score in scores] for key in rouge_types}
