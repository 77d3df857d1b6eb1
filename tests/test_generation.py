"""helpers.generation: batched greedy replies."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from helpers import generation
from helpers.standins import train_tokenizer

TEXTS = [
    "Thanks for the video, it was really helpful!",
    "What is the rank of a LoRA adapter?",
    "Great content, thank you! You are welcome, glad it helped.",
]


@pytest.fixture(scope="module")
def tiny():
    """A tiny random Mistral and a tokenizer with Mistral's chat template (seconds)."""
    tokenizer = train_tokenizer("mistral", TEXTS * 20, vocab_size=400)
    config = AutoConfig.for_model(
        "mistral",
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = None  # always generate max_new_tokens
    return model, tokenizer


def _spy(model, monkeypatch):
    calls = []
    original = model.generate

    def generate(**kwargs):
        output = original(**kwargs)
        calls.append({**kwargs, "output": output})
        return output

    monkeypatch.setattr(model, "generate", generate)
    return calls


def test_chat_prompts_get_one_bos_and_left_padding(tiny, monkeypatch):
    model, tokenizer = tiny
    calls = _spy(model, monkeypatch)
    chats = [[{"role": "user", "content": text}] for text in TEXTS]
    replies = generation.generate_replies(
        model, tokenizer, chats, max_new_tokens=5, batch_size=3, progress=False
    )
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    [call] = calls
    ids, mask = call["input_ids"], call["attention_mask"]
    for row, chat in zip(range(3), chats, strict=True):
        expected = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        expected = expected["input_ids"]
        n = int(mask[row].sum())
        assert ids[row, -n:].tolist() == expected  # the template's ids, BOS once, not twice
        assert (mask[row, : ids.shape[1] - n] == 0).all()  # padding on the left
        assert ids[row].tolist().count(tokenizer.bos_token_id) == 1
    # the reply is the decoded new tokens only, never the prompt
    new = call["output"][:, ids.shape[1] :]
    assert new.shape[1] == 5
    assert replies == [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def test_strip_false_keeps_leading_indentation(tiny, monkeypatch):
    model, tokenizer = tiny
    body = "    result = a[::-1]\n"  # a function-style answer: its indentation matters
    monkeypatch.setattr(tokenizer, "batch_decode", lambda ids, **kw: [body] * len(ids))
    kept = generation.generate_replies(
        model, tokenizer, TEXTS, max_new_tokens=2, progress=False, strip=False
    )
    stripped = generation.generate_replies(
        model, tokenizer, TEXTS, max_new_tokens=2, progress=False
    )
    assert kept == [body] * len(TEXTS)
    assert stripped == [body.strip()] * len(TEXTS)


def test_replies_do_not_depend_on_the_batch_size(tiny):
    model, tokenizer = tiny
    chats = [[{"role": "user", "content": text}] for text in TEXTS]
    one = generation.generate_replies(
        model, tokenizer, chats, max_new_tokens=6, batch_size=1, progress=False
    )
    all_ = generation.generate_replies(
        model, tokenizer, chats, max_new_tokens=6, batch_size=3, progress=False
    )
    assert one == all_


def test_string_prompts_get_the_tokenizers_special_tokens(tiny, monkeypatch):
    model, tokenizer = tiny
    calls = _spy(model, monkeypatch)
    generation.generate_replies(
        model, tokenizer, ["Great content"], max_new_tokens=2, progress=False
    )
    assert calls[0]["input_ids"][0].tolist() == tokenizer("Great content")["input_ids"]


def test_state_is_restored(tiny):
    model, tokenizer = tiny
    assert tokenizer.pad_token is None and tokenizer.padding_side == "right"
    model.train()
    generation.generate_replies(model, tokenizer, ["Hi"], max_new_tokens=2, progress=False)
    assert model.training
    assert tokenizer.pad_token is None and tokenizer.padding_side == "right"
    model.eval()
    generation.generate_replies(model, tokenizer, ["Hi"], max_new_tokens=2, progress=False)
    assert not model.training


def test_empty_and_mixed_prompts(tiny):
    model, tokenizer = tiny
    assert generation.generate_replies(model, tokenizer, [], progress=False) == []
    with pytest.raises(ValueError, match="not a mix"):
        generation.generate_replies(model, tokenizer, ["Hi", [{"role": "user", "content": "Hi"}]])


def test_stop_at_end_of_text_makes_generate_stop(tiny):
    model, tokenizer = tiny
    model = type(model)(model.config).eval()  # a copy: the fixture's model stays as it is
    model.load_state_dict(tiny[0].state_dict())
    favour = torch.zeros(model.config.vocab_size)
    favour[tokenizer.eos_token_id] = 1e4  # the end-of-text token is the first choice everywhere
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + favour)
    model.generation_config.eos_token_id = None  # as phi-1_5 publishes it
    prompt = tokenizer("What is the rank?", return_tensors="pt")
    runs_on = model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert runs_on.shape[1] - prompt["input_ids"].shape[1] == 6  # nothing to stop on
    assert generation.stop_at_end_of_text(model, tokenizer) == (tokenizer.eos_token_id,) * 2
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    stops = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert stops.shape[1] - prompt["input_ids"].shape[1] == 1  # the end-of-text token, then stop


def test_check_fp16_overflow():
    generation.check_fp16_overflow([2.1, 1.7], ["The pump failed.", "!!!"])  # nothing wrong
    generation.check_fp16_overflow([], [])
    with pytest.raises(FloatingPointError, match="not finite.*overflow in fp16"):
        generation.check_fp16_overflow([2.1, float("nan")])
    with pytest.raises(FloatingPointError, match="only '!'"):
        generation.check_fp16_overflow(replies=["!!!!", " !!! "])
