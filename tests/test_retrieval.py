"""helpers.retrieval (chunking, rankings, metrics, answer scores) and data/channel_notes."""

from __future__ import annotations

import bm25s
import pytest

from helpers.data import data_path, read_jsonl
from helpers.retrieval import (
    chunk_notes,
    chunk_text,
    contains_answer,
    declined,
    dedupe_chunks,
    mean_reciprocal_rank,
    ranked_hits,
    recall_at_k,
    reciprocal_rank_fusion,
)

TEN = "one two three four five six seven eight nine ten"

# ---------------------------------------------------------------------------------------
# Chunking
# ---------------------------------------------------------------------------------------


def test_windows_overlap_and_the_last_ends_the_text():
    assert chunk_text(TEN, 4, 1) == [
        "one two three four",
        "four five six seven",
        "seven eight nine ten",
    ]
    assert chunk_text(TEN, 4) == ["one two three four", "five six seven eight", "nine ten"]
    # no window is only the tail of the one before it
    assert chunk_text("a b c d e", 4, 2) == ["a b c d", "c d e"]


def test_a_short_text_is_one_chunk_with_its_spacing_normalised():
    assert chunk_text("  Lab \n Bench  ", 64, 16) == ["Lab Bench"]


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_no_words_no_chunks(text):
    assert chunk_text(text, 8, 2) == []


@pytest.mark.parametrize("size, overlap", [(0, 0), (4, 4), (4, 5), (4, -1)])
def test_impossible_windows_are_refused(size, overlap):
    with pytest.raises(ValueError, match="overlap < size"):
        chunk_text(TEN, size, overlap)


def test_empty_notes_give_no_chunks():
    assert chunk_notes([], 64, 16) == []
    assert chunk_notes([{"id": "n1", "title": "Empty", "text": "   "}], 64, 16) == []


def test_chunks_name_their_note_and_never_span_two():
    notes = [
        {"id": "n1", "title": "First", "text": TEN},
        {"id": "n2", "title": "Second", "text": "eleven twelve"},
    ]
    chunks = chunk_notes(notes, 4, 1)
    assert [c["id"] for c in chunks] == ["n1#0", "n1#1", "n1#2", "n2#0"]
    assert chunks[-1] == {
        "id": "n2#0",
        "note_ids": ["n2"],
        "title": "Second",
        "text": "eleven twelve",
    }
    assert all("eleven" not in c["text"] for c in chunks[:3])


def test_duplicate_chunks_are_kept_once_with_every_note():
    chunks = [
        {"id": "a#0", "note_ids": ["a"], "title": "A", "text": "Office Hours is monthly."},
        {"id": "b#0", "note_ids": ["b"], "title": "B", "text": "Something else."},
        {"id": "c#0", "note_ids": ["c"], "title": "C", "text": "office hours  is MONTHLY."},
        {"id": "a#0", "note_ids": ["a"], "title": "A", "text": "Office Hours is monthly."},
    ]
    kept = dedupe_chunks(chunks)
    assert [c["id"] for c in kept] == ["a#0", "b#0"]
    assert kept[0]["note_ids"] == ["a", "c"]  # each note once, in order
    assert chunks[0]["note_ids"] == ["a"]  # the input is not modified
    assert dedupe_chunks([]) == []


# ---------------------------------------------------------------------------------------
# Rankings
# ---------------------------------------------------------------------------------------


def test_ranked_hits_drop_padding_repeats_and_low_scores():
    assert ranked_hits([3, -1, 3, 0], [0.9, 0.0, 0.5, -0.2]) == [3, 0]  # cosines may be < 0
    assert ranked_hits([2, 1, 0], [4.0, 0.0, 0.0], min_score=0) == [2]
    assert ranked_hits([], []) == []
    with pytest.raises(ValueError):
        ranked_hits([1, 2], [0.5])


def bm25_ranking(corpus: list[str], question: str) -> list[int]:
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(corpus, stopwords="en", show_progress=False), show_progress=False
    )
    tokens = bm25s.tokenize([question], stopwords="en", show_progress=False)
    hits, scores = retriever.retrieve(tokens, k=len(corpus), show_progress=False)
    return ranked_hits(hits[0], scores[0], min_score=0)


def test_with_bm25s_a_question_with_no_match_gets_no_chunks():
    corpus = ["The Lab Bench is the Discord server.", "Office Hours is monthly.", "Adam the cat."]
    assert bm25_ranking(corpus, "Which Discord server?") == [0]
    # bm25s fills its k slots with zero-score chunks; ranked_hits drops them
    assert bm25_ranking(corpus, "xylophone quartz") == []
    assert bm25_ranking(corpus, "the of and") == []  # stop words only


def test_rrf_prefers_agreement_and_keeps_first_seen_order_on_ties():
    # a: 1/61 + 1/63, b: 1/62 + 1/61, c: 1/63 + 1/62
    assert reciprocal_rank_fusion([["a", "b", "c"], ["b", "c", "a"]]) == ["b", "a", "c"]
    assert reciprocal_rank_fusion([["a", "b"], ["b", "a"]]) == ["a", "b"]  # a tie
    assert reciprocal_rank_fusion([["x"], ["y"]]) == ["x", "y"]


def test_rrf_items_of_one_ranking_only_and_empty_rankings():
    assert reciprocal_rank_fusion([[1, 2, 3], []]) == [1, 2, 3]
    assert reciprocal_rank_fusion([[], []]) == []
    assert reciprocal_rank_fusion([]) == []


def test_rrf_counts_a_repeated_item_once_per_ranking():
    assert reciprocal_rank_fusion([["a", "a", "a"], ["b", "c"]]) == ["a", "b", "c"]


def test_rrf_weights():
    assert reciprocal_rank_fusion([["a"], ["b"]], weights=[1, 2]) == ["b", "a"]
    with pytest.raises(ValueError, match="2 weights for 1 rankings"):
        reciprocal_rank_fusion([["a"]], weights=[1, 1])
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion([["a"]], k=-1)


# ---------------------------------------------------------------------------------------
# Retrieval metrics
# ---------------------------------------------------------------------------------------

# Per question, per rank: the note ids of the chunk at that rank.
RETRIEVED = [
    [["n1"], ["n2"], ["n3"]],  # gold n2: found at rank 2
    [["n4", "n5"], ["n6"]],  # gold n5: a merged duplicate chunk at rank 1
    [],  # no match at all
    [["n7"], ["n8"]],  # two gold notes, one found
]
GOLD = [["n2"], ["n5"], ["n9"], ["n8", "n9"]]


def test_recall_at_k():
    assert recall_at_k(RETRIEVED, GOLD, 1) == pytest.approx((0 + 1 + 0 + 0) / 4)
    assert recall_at_k(RETRIEVED, GOLD, 2) == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    assert recall_at_k(RETRIEVED, GOLD, 10) == recall_at_k(RETRIEVED, GOLD, 2)


def test_mean_reciprocal_rank():
    assert mean_reciprocal_rank(RETRIEVED, GOLD) == pytest.approx((1 / 2 + 1 + 0 + 1 / 2) / 4)
    assert mean_reciprocal_rank(RETRIEVED, GOLD, depth=1) == pytest.approx(1 / 4)


def test_a_question_with_no_match_scores_zero():
    assert recall_at_k([[]], [["n1"]], 5) == 0.0
    assert mean_reciprocal_rank([[]], [["n1"]]) == 0.0


def test_the_same_note_twice_in_the_top_k_counts_once():
    assert recall_at_k([[["n1"], ["n1"]]], [["n1", "n2"]], 2) == 0.5


def test_metrics_refuse_what_cannot_be_scored():
    with pytest.raises(ValueError, match="no gold note"):
        recall_at_k([[["n1"]]], [[]], 1)
    with pytest.raises(ValueError, match="2 rankings but 1 gold"):
        mean_reciprocal_rank([[], []], [["n1"]])
    with pytest.raises(ValueError, match="no questions"):
        recall_at_k([], [], 1)
    with pytest.raises(ValueError, match="k must be"):
        recall_at_k(RETRIEVED, GOLD, 0)


# ---------------------------------------------------------------------------------------
# Answer metrics
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, answers",
    [
        ("It has 4,200 members! -LabGPT", ["4200"]),
        ("About 4200 people.", ["4,200"]),
        ("At 12:40 in the video.", ["12:40"]),
        ("It's called The Lab Bench.", ["Lab Bench"]),
        ("The secret is HF_TOKEN.", ["HF_TOKEN"]),
        ("It printed r = 8, alpha = 32 on it", ["r=8, alpha=32"]),
        ("pass@1 went to 14%", ["14 percent"]),
        ("It was on March 14, 2023.", ["14 March 2023", "March 14, 2023"]),
        ("ÉPISODE twelve", ["épisode twelve"]),
        ("Schöne Grüße", ["schöne grüße"]),
    ],
)
def test_normalised_containment_accepts(reply, answers):
    assert contains_answer(reply, answers)


@pytest.mark.parametrize(
    "reply, answers",
    [
        ("It has 140 members.", ["14"]),  # whole words only
        ("At 5:00 pm.", ["17:00"]),  # a different spelling is not recognised
        ("Lab", ["Lab Bench"]),
        ("Grüße", ["gr e"]),  # letters beyond a-z are letters, not separators
        ("anything", []),
        ("anything", ["", "!!"]),  # an answer that normalises to nothing never matches
        ("", ["Lab Bench"]),
    ],
)
def test_normalised_containment_rejects(reply, answers):
    assert not contains_answer(reply, answers)


@pytest.mark.parametrize(
    "reply",
    [
        "I don't know. -LabGPT",
        "Sorry, I do not know that one.",
        "The notes don't say, sorry! -LabGPT",
        "That is not in the notes.",
        "I have no information about that.",
        "Not sure, to be honest.",
    ],
)
def test_declines_are_recognised(reply):
    assert declined(reply)


@pytest.mark.parametrize(
    "reply",
    ["It's the Lab Bench! -LabGPT", "Thursday at 17:00.", "The knowledge is in the notes.", ""],
)
def test_answers_are_not_declines(reply):
    assert not declined(reply)


# ---------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def notes() -> list[dict]:
    return read_jsonl(data_path("channel_notes", "notes.jsonl"))


@pytest.fixture(scope="module")
def questions() -> list[dict]:
    return read_jsonl(data_path("channel_notes", "questions.jsonl"))


def test_notes_are_30_to_60_short_notes_with_unique_ids(notes):
    assert 30 <= len(notes) <= 60
    assert len({n["id"] for n in notes}) == len(notes)
    for note in notes:
        assert {"id", "title", "kind", "date", "text"} <= set(note)
        assert 20 <= len(note["text"].split()) <= 200, note["id"]
    assert (data_path("channel_notes") / "README.md").is_file()


def test_questions_have_gold_answers_in_their_notes(notes, questions):
    by_id = {n["id"]: n for n in notes}
    assert len({q["id"] for q in questions}) == len(questions)
    answerable = [q for q in questions if q["kind"] != "not_in_notes"]
    assert len(answerable) >= 40
    for q in answerable:
        assert q["answers"] and q["note_ids"], q["id"]
        for note_id in q["note_ids"]:
            note = by_id[note_id]
            assert contains_answer(f"{note['title']}: {note['text']}", q["answers"][:1]), q["id"]


def test_at_least_8_questions_are_not_in_the_notes(questions):
    unanswerable = [q for q in questions if q["kind"] == "not_in_notes"]
    assert len(unanswerable) >= 8
    assert all(not q["answers"] and not q["note_ids"] for q in unanswerable)


def test_the_repeated_note_is_a_real_duplicate(notes, questions):
    by_id = {n["id"]: n for n in notes}
    assert by_id["n39"]["text"] == by_id["n10"]["text"]
    chunks = dedupe_chunks(chunk_notes([by_id["n10"], by_id["n39"]], 64, 16))
    assert len(chunks) == 1 and chunks[0]["note_ids"] == ["n10", "n39"]
    office_hours = [q for q in questions if "n10" in q["note_ids"]]
    assert office_hours and all(set(q["note_ids"]) == {"n10", "n39"} for q in office_hours)
