"""helpers.prompts: chat messages, prompt-completion rows, row checks, pre-rendered examples."""

from __future__ import annotations

import pytest

from helpers import prompts
from helpers.data import data_path, read_jsonl
from helpers.standins import MISTRAL_CHAT_TEMPLATE, train_tokenizer


def test_user_message_gives_instructions_as_the_system_message():
    assert prompts.user_message("Nice video!") == [{"role": "user", "content": "Nice video!"}]
    assert prompts.user_message("Nice video!", instructions="  \n") == [
        {"role": "user", "content": "Nice video!"}
    ]
    assert prompts.user_message("Nice video!", instructions="  Be brief.\n") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Nice video!"},
    ]


def test_mistrals_template_joins_the_system_message_to_the_user_turn():
    """What the prose of notebooks 04 and 07 says the template does with the instructions."""
    tok = train_tokenizer("mistral", ["Thanks for the video!", "You are welcome."])
    chat = prompts.user_message("Nice video!", instructions="Be brief.")
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == "<s> [INST] Be brief.\n\nNice video! [/INST]"


def test_prompt_completion_is_trl_conversational_format():
    row = prompts.prompt_completion("Thanks!", "You're welcome! -Bot", instructions="Be brief.")
    assert row == {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Thanks!"},
        ],
        "completion": [{"role": "assistant", "content": "You're welcome! -Bot"}],
    }


def test_prompt_is_a_token_prefix_of_prompt_and_completion():
    """What completion-only loss relies on: the rendered prompt starts the rendered row."""
    tok = train_tokenizer("mistral", ["Thanks for the video!", "You are welcome, glad it helped."])
    assert tok.chat_template == MISTRAL_CHAT_TEMPLATE
    row = prompts.prompt_completion("Thanks!", "You're welcome!", instructions="Be brief.")
    prompt = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
    whole = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=True)
    prompt, whole = prompt["input_ids"], whole["input_ids"]
    assert len(whole) > len(prompt)
    assert whole[: len(prompt)] == prompt
    assert prompt.count(tok.bos_token_id) == 1
    assert whole[-1] == tok.eos_token_id


def test_validate_rows_accepts_good_rows_and_returns_them():
    rows = [{"comment": "Hi", "reply": "Hello", "extra": 1}]
    assert prompts.validate_rows(iter(rows), ["comment", "reply"]) == rows


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("just a string", "row 2: expected an object"),
        ({"comment": "Hi"}, "row 2: missing field(s) ['reply']"),
        ({"comment": "Hi", "reply": 3}, "row 2: field 'reply' must be a string, not int"),
        ({"comment": "  ", "reply": "Hello"}, "row 2: field 'comment' is empty"),
    ],
)
def test_validate_rows_names_the_bad_row(bad, message):
    rows = [{"comment": "Hi", "reply": "Hello"}, bad, {"comment": "Yo", "reply": "Hey"}]
    with pytest.raises(ValueError) as error:
        prompts.validate_rows(rows, ["comment", "reply"], where="train.jsonl")
    assert str(error.value).startswith("train.jsonl, " + message)


def test_validate_rows_rejects_no_rows():
    with pytest.raises(ValueError, match="test.jsonl has no rows"):
        prompts.validate_rows([], ["comment"], where="test.jsonl")


def test_parse_inst_example_in_the_seed_datasets_format():
    instructions = "Sign with -ShawGPT.\n\nPlease respond to the following comment.\n"
    text = f"<s>[INST] {instructions} \nGreat video,\nreally!  \n[/INST]\nThanks! -ShawGPT</s>"
    assert prompts.parse_inst_example(text) == {
        "comment": "Great video,\nreally!",
        "reply": "Thanks! -ShawGPT",
    }


def test_parse_inst_example_without_marker_keeps_the_whole_instruction():
    parsed = prompts.parse_inst_example("[INST] What is NF4? [/INST] A 4-bit data type.")
    assert parsed == {"comment": "What is NF4?", "reply": "A 4-bit data type."}
    with pytest.raises(ValueError, match="no \\[/INST\\]"):
        prompts.parse_inst_example("<s>[INST] no end of instruction")


@pytest.mark.parametrize("split", ["train", "test"])
def test_the_youtube_comments_data_is_valid(split):
    rows = prompts.validate_rows(
        read_jsonl(data_path("youtube_comments", f"{split}.jsonl")),
        ["comment", "reply", "category"],
        where=split,
    )
    assert len(rows) >= {"train": 60, "test": 12}[split]
    assert all(row["reply"].endswith(" -LabGPT") for row in rows)  # one fixed signature
    categories = {row["category"] for row in rows}
    expected = {"thanks", "praise", "question", "request", "critique", "off_topic", "troll"}
    assert categories == expected


def test_youtube_comment_splits_do_not_overlap_and_short_comments_get_short_replies():
    train = read_jsonl(data_path("youtube_comments", "train.jsonl"))
    test = read_jsonl(data_path("youtube_comments", "test.jsonl"))
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    assert not {norm(r["comment"]) for r in train} & {norm(r["comment"]) for r in test}
    for row in train + test:  # a question asks for content, whatever its length
        if len(row["comment"].split()) <= 3 and row["category"] != "question":
            assert len(row["reply"].split()) <= 12, row
