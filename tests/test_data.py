import pytest

from helpers import data


def test_jsonl_round_trip(tmp_path):
    rows = [{"comment": "Merci ! 🙏", "n": 1}, {"comment": "second", "n": 2}]
    data.write_jsonl(rows, tmp_path / "x.jsonl")
    assert data.read_jsonl(tmp_path / "x.jsonl") == rows


def test_a_malformed_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"ok": 1}\n\n{"broken": \n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 3: not valid JSON"):
        data.read_jsonl(path)


def test_data_path_says_what_is_missing():
    assert data.data_path("standin_corpus").is_dir()
    with pytest.raises(FileNotFoundError, match="not in the course's data/ folder"):
        data.data_path("no_such_set")


def test_corpus_texts_cover_the_corpus_and_the_datasets():
    generic = data.corpus_texts(include_datasets=False)
    everything = data.corpus_texts()
    assert generic and all(line.strip() for line in generic)
    assert everything[: len(generic)] == generic
    assert len(everything) >= len(generic)
    assert data.corpus_texts() == everything  # a fixed order: stand-ins are reproducible


def test_strings_are_found_at_any_depth():
    row = {"a": "x", "b": [{"c": "y"}, 3, None], "d": {"e": ["z"]}}
    assert data._strings(row) == ["x", "y", "z"]
