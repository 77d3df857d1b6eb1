"""helpers.embedder_standin: the real embedder's facts, and the stand-in of its architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from helpers import embedder_standin as es


@pytest.fixture(scope="module")
def standin() -> SentenceTransformer:
    return SentenceTransformer(es.build_embedder_standin(), device="cpu")


def test_the_real_embedder_as_published():
    config = es.embedder_config()
    n = es.count_embedder_parameters(config)
    assert n == 22_713_216  # BertModel with its pooler, from config.json
    # fp32 weights: the Hub lists model.safetensors as 90.9 MB (decimal, rounded)
    assert round(4 * n / 1e6, 1) == es.REAL_EMBEDDER_SAFETENSORS_MB
    with pytest.raises(KeyError, match="all-MiniLM-L6-v2"):
        es.embedder_config("BAAI/bge-small-en-v1.5")


def test_the_standin_has_the_real_modules_and_layer_names(standin):
    assert tuple(type(m).__name__ for m in standin) == es.REAL_EMBEDDER_MODULES
    assert standin[1].pooling_mode == es.REAL_EMBEDDER_POOLING
    assert standin.max_seq_length == es.REAL_EMBEDDER_MAX_SEQ_LENGTH
    tiny = standin[0].auto_model
    assert type(tiny).__name__ == es.REAL_EMBEDDER_CONFIG["architectures"][0] == "BertModel"
    with torch.device("meta"):
        real = AutoModel.from_config(es.embedder_config())

    def layer_names(model):
        return {n.split(".", 3)[-1] for n, _ in model.named_parameters() if ".layer.0." in n}

    assert layer_names(tiny) == layer_names(real)
    assert tiny.config.hidden_size == es.TINY_EMBEDDER_SHAPE["hidden_size"]


def test_the_standin_embeds_unit_vectors_and_is_deterministic(standin):
    vectors = standin.encode_document(["The Lab Bench is the Discord server.", "Adam the cat."])
    assert vectors.shape == (2, es.TINY_EMBEDDER_SHAPE["hidden_size"])
    assert abs(float((vectors**2).sum(axis=1).min()) - 1) < 1e-5
    again = standin.encode_query(["The Lab Bench is the Discord server."])
    assert abs(float(vectors[0] @ again[0]) - 1) < 1e-5


def test_the_standin_tokenizer_is_bert_like(standin):
    tok = standin.tokenizer
    assert tok.pad_token_id == 0
    ids = tok("Lab BENCH")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "lab bench"  # uncased


def test_the_wordpiece_vocabulary_is_the_same_on_every_run():
    # tokenizers' trainer alone learns a different vocabulary on about every run (its ##
    # pieces are numbered in hash-map order, and ties are broken by those numbers), so a
    # clean clone built a different embedder and 07's recall moved. Repeated training here
    # must give one vocabulary, with BERT's five reserved tokens only, [PAD] first.
    texts = es.standin_texts()
    runs = [es.train_wordpiece(texts).get_vocab() for _ in range(4)]
    vocabularies = {json.dumps(sorted(vocab.items())) for vocab in runs}
    assert len(vocabularies) == 1
    tok = es.train_wordpiece(texts)
    assert tok.all_special_tokens and set(tok.all_special_tokens) == set(es.SPECIAL_TOKENS)
    assert tok.convert_ids_to_tokens(list(range(5))) == es.SPECIAL_TOKENS
    assert "##e" in tok.get_vocab() and tok.tokenize("##e") != ["##e"]  # a piece, not reserved


def test_the_standin_was_pretrained_and_is_cached():
    path = es.build_embedder_standin()
    card = json.loads((Path(path) / "standin.json").read_text())
    assert card["stands_in_for"] == es.EMBEDDER
    first, last = card["pretraining_loss"]
    assert last < first / 2  # the few seconds of contrastive pre-training taught it something
    stamp = (Path(path) / "modules.json").stat().st_mtime_ns
    assert es.build_embedder_standin() == path
    assert (Path(path) / "modules.json").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_sentence_halves():
    firsts, seconds = es.sentence_halves(
        ["One two three four. Too short. Five six seven eight nine!"]
    )
    assert firsts == ["One two", "Five six"]
    assert seconds == ["three four.", "seven eight nine!"]
    assert es.sentence_halves([]) == ([], [])


def test_contrastive_pretraining_needs_pairs(standin):
    with pytest.raises(ValueError, match="at least two pairs"):
        es.pretrain_contrastive(standin, ["a"], ["b"])
    with pytest.raises(ValueError, match="same length"):
        es.pretrain_contrastive(standin, ["a", "b"], ["c"])


def test_the_standin_learns_from_the_notes_but_never_sees_the_questions():
    from helpers.data import data_path, read_jsonl

    texts = es.standin_texts()
    notes = [row["text"] for row in read_jsonl(data_path("channel_notes", "notes.jsonl"))]
    rows = read_jsonl(data_path("channel_notes", "questions.jsonl"))
    questions = [row["question"] for row in rows]
    assert set(notes) <= set(texts)  # the documents it will embed: domain adaptation
    seen = " ".join(texts).lower()
    assert not [q for q in questions if q.lower() in seen]  # the evaluation set: never
    firsts, _ = es.sentence_halves(texts)
    generic = es.corpus_texts(include_datasets=False)
    assert len(firsts) > len(es.sentence_halves(generic)[0])  # the notes give pairs too


def test_building_leaves_the_callers_random_state_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))

    def few_steps(model, firsts, seconds, seed=0):  # draws from the global generator, as
        torch.rand(100)  # dropout in the real pre-training does, without its seconds
        return [2.0, 1.0]

    monkeypatch.setattr(es, "pretrain_contrastive", few_steps)
    torch.manual_seed(42)  # as notebook 07's preamble does before it builds the stand-in
    state = torch.get_rng_state()
    path = es.build_embedder_standin()
    assert path.startswith(str(tmp_path))
    assert torch.equal(torch.get_rng_state(), state)  # as if it had been found cached
