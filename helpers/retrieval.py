"""Retrieval for notebook 07: chunks of the channel's notes, rankings, their fusion, and scores.

The notebook makes the library calls that are the lesson (``bm25s`` for the lexical half,
``sentence-transformers`` and FAISS for the dense half); this module holds the plain parts
around them:

- **chunking**: windows of words over each note (:func:`chunk_text`, :func:`chunk_notes`),
  and dropping exact duplicates (:func:`dedupe_chunks`);
- **rankings**: a retriever's raw top-k cleaned into a ranking (:func:`ranked_hits`), and two
  or more rankings fused into one by reciprocal rank (:func:`reciprocal_rank_fusion`);
- **retrieval metrics**: recall@k and mean reciprocal rank against the notes that hold each
  answer (:func:`recall_at_k`, :func:`mean_reciprocal_rank`);
- **answer metrics**: normalised containment of a gold answer (:func:`contains_answer`) and
  whether a reply declines to answer (:func:`declined`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from typing import Any

# ---------------------------------------------------------------------------------------
# Chunking
# ---------------------------------------------------------------------------------------


def chunk_text(text: str, size: int, overlap: int = 0) -> list[str]:
    """Split ``text`` into windows of at most ``size`` words that share ``overlap`` words.

    Words are runs of non-space characters; a window's words are joined by single spaces.
    Each window starts ``size - overlap`` words after the previous one, and the last window
    ends with the text's last word (no window is a mere tail of the one before it).

    Returns:
        The windows in order; ``[]`` for a text with no words.

    Raises:
        ValueError: unless ``size >= 1`` and ``0 <= overlap < size``.
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got {size=} {overlap=}")
    words = text.split()
    windows = []
    for start in range(0, len(words), size - overlap):
        windows.append(" ".join(words[start : start + size]))
        if start + size >= len(words):
            break
    return windows


def chunk_notes(
    notes: Iterable[Mapping[str, Any]], size: int, overlap: int = 0
) -> list[dict[str, Any]]:
    """The chunks of every note: :func:`chunk_text` over each note's ``text`` separately.

    A chunk never spans two notes. Each chunk is ``{"id": "<note id>#<n>", "note_ids":
    [<note id>], "title": <the note's title>, "text": <the window>}``; ``note_ids`` is a list
    because :func:`dedupe_chunks` may merge chunks of several notes. Notes without words
    give no chunks, and no notes give ``[]``.
    """
    chunks = []
    for note in notes:
        for number, window in enumerate(chunk_text(note["text"], size, overlap)):
            chunks.append(
                {
                    "id": f"{note['id']}#{number}",
                    "note_ids": [note["id"]],
                    "title": note.get("title", ""),
                    "text": window,
                }
            )
    return chunks


def dedupe_chunks(chunks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Keep one chunk per text: later chunks with the same text (up to case and spacing) go.

    A duplicate would take a second slot of the top-k for nothing. The kept chunk lists the
    note ids of all its copies, in order, so that a question about either note still counts
    it as found. The input is not modified.
    """
    kept: dict[str, dict[str, Any]] = {}
    for chunk in chunks:
        key = " ".join(chunk["text"].lower().split())
        if key in kept:
            ids = kept[key]["note_ids"]
            ids.extend(i for i in chunk["note_ids"] if i not in ids)
        else:
            kept[key] = {**chunk, "note_ids": list(chunk["note_ids"])}
    return list(kept.values())


# ---------------------------------------------------------------------------------------
# Rankings
# ---------------------------------------------------------------------------------------


def ranked_hits(
    indices: Iterable[int], scores: Iterable[float], min_score: float | None = None
) -> list[int]:
    """A retriever's top-k (best first) as a clean ranking of chunk indices.

    Drops FAISS's padding (index ``-1`` when fewer than k vectors exist), repeats of an index
    (only its first, best rank counts) and, when ``min_score`` is given, every hit scoring
    ``<= min_score``: with BM25, ``min_score=0`` drops chunks that share no word with the
    question, which bm25s still returns (with score 0) to fill its k slots.
    """
    ranking: list[int] = []
    for index, score in zip(indices, scores, strict=True):
        index = int(index)
        if index < 0 or index in ranking:
            continue
        if min_score is not None and float(score) <= min_score:
            continue
        ranking.append(index)
    return ranking


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hashable]],
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> list[Hashable]:
    """Fuse rankings by reciprocal rank (Cormack, Clarke and Büttcher, SIGIR 2009).

    Each item scores ``sum over rankings of weight / (k + rank)``, with ranks counted from 1
    and only an item's first rank in each ranking counted; items missing from a ranking get
    nothing from it. ``k = 60`` is the paper's constant: it damps the advantage of the very
    top ranks, so an item ranked well by both retrievers beats one ranked first by only one.

    Returns:
        Every item of every ranking, best fused score first; ties keep the order in which
        the items were first met (ranking by ranking).
    """
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"{len(weights)} weights for {len(rankings)} rankings")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    scores: dict[Hashable, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    order = {item: n for n, item in enumerate(scores)}
    return sorted(scores, key=lambda item: (-scores[item], order[item]))


# ---------------------------------------------------------------------------------------
# Retrieval metrics
# ---------------------------------------------------------------------------------------

Retrieved = Sequence[Sequence[Collection[str]]]  # per question, per rank: the chunk's note ids


def _check_gold(retrieved: Retrieved, gold: Sequence[Collection[str]]) -> None:
    if len(retrieved) != len(gold):
        raise ValueError(f"{len(retrieved)} rankings but {len(gold)} gold sets")
    if not gold:
        raise ValueError("no questions to score")
    empty = [i for i, notes in enumerate(gold) if not notes]
    if empty:
        raise ValueError(
            f"question {empty[0]} has no gold note: score only questions whose answer is in the "
            "notes"
        )


def recall_at_k(retrieved: Retrieved, gold: Sequence[Collection[str]], k: int) -> float:
    """Recall@k: the share of a question's gold notes among the notes of its k best chunks.

    Args:
        retrieved: per question, the ranking as the note ids of each chunk, best first (a
            chunk merged by :func:`dedupe_chunks` can belong to several notes).
        gold: per question, the ids of the notes that contain its answer (not empty).
        k: how many chunks count.

    Returns:
        The mean over the questions, in [0, 1]. A question with no hits scores 0.
    """
    _check_gold(retrieved, gold)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    total = 0.0
    for ranking, notes in zip(retrieved, gold, strict=True):
        found = {note for chunk in ranking[:k] for note in chunk}
        total += len(found & set(notes)) / len(set(notes))
    return total / len(gold)


def mean_reciprocal_rank(
    retrieved: Retrieved, gold: Sequence[Collection[str]], depth: int | None = None
) -> float:
    """Mean reciprocal rank: the mean of ``1 / rank`` of each question's first gold chunk.

    The rank counts chunks from 1; a question whose rankings hold no chunk of a gold note
    within the first ``depth`` chunks (all of them when ``None``) scores 0.
    """
    _check_gold(retrieved, gold)
    total = 0.0
    for ranking, notes in zip(retrieved, gold, strict=True):
        wanted = set(notes)
        for rank, chunk in enumerate(ranking[:depth], start=1):
            if wanted & set(chunk):
                total += 1 / rank
                break
    return total / len(gold)


# ---------------------------------------------------------------------------------------
# Answer metrics
# ---------------------------------------------------------------------------------------

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NOT_WORD = re.compile(r"[\W_]+")  # anything but letters and digits
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """Text reduced to lower-case words for comparing answers.

    In order: Unicode NFKC; lower case; thousands separators between digits removed
    (``4,200`` -> ``4200``); ``%`` spelled ``percent``; every character other than a letter
    or a digit becomes a space (so ``12:40`` -> ``12 40``, ``HF_TOKEN`` -> ``hf token``, ``r=8``
    -> ``r 8``); the articles *a*, *an*, *the* are dropped (as in SQuAD's evaluation);
    single spaces between words.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _THOUSANDS.sub("", text).replace("%", " percent ")
    words = _NOT_WORD.sub(" ", text).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def contains_answer(prediction: str, answers: Iterable[str]) -> bool:
    """Whether the normalised ``prediction`` contains a normalised answer as whole words.

    ``answers`` are the accepted spellings of one gold fact (e.g. ``["14 March 2023",
    "March 14, 2023"]``); one match is enough. Containment, not equality: a reply may say
    more than the fact, and the fact must appear in it word for word after
    :func:`normalize_answer` (``"4,200 members"`` contains ``"4200"``; ``"5:00 pm"`` does
    not contain ``"17:00"``). An answer that normalises to nothing never matches.
    """
    padded = f" {normalize_answer(prediction)} "
    for answer in answers:
        wanted = normalize_answer(answer)
        if wanted and f" {wanted} " in padded:
            return True
    return False


# Phrases (normalised) that mark a reply as declining to answer.
DECLINE_PHRASES = (
    "i don t know",
    "i do not know",
    "don t have that information",
    "do not have that information",
    "no information",
    "not in notes",
    "notes don t",
    "notes do not",
    "not mentioned",
    "can t find",
    "cannot find",
    "couldn t find",
    "could not find",
    "not sure",
    "can t say",
    "cannot say",
    "no idea",
)


def declined(reply: str) -> bool:
    """Whether a reply declines to answer: its normalised text contains a decline phrase.

    The phrases are :data:`DECLINE_PHRASES` (``"i don't know"``, ``"not in the notes"``,
    ``"the notes don't say"``, ``"no information"``, ``"not sure"`` ...), matched as whole
    words after :func:`normalize_answer`, which turns ``don't`` into ``don t`` and drops
    *the*. A reply can both decline and state a fact; the notebook counts declines only on
    questions whose answer is not in the notes.
    """
    padded = f" {normalize_answer(reply)} "
    return any(f" {phrase} " in padded for phrase in DECLINE_PHRASES)
