"""Generating replies for many prompts at once: batched, greedy, with a progress bar."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

Prompt = str | list[dict[str, str]]


def _render(tokenizer, prompt: Prompt) -> tuple[str, bool]:
    """The prompt's text and whether the tokenizer should still add its special tokens."""
    if isinstance(prompt, str):
        return prompt, True
    # The chat template writes the BOS token itself: adding it again would double it.
    text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return text, False


def generate_replies(
    model,
    tokenizer,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generating",
    strip: bool = True,
    **generate_kwargs,
) -> list[str]:
    """Greedy replies of ``model`` to each prompt, in order, decoded without the prompt.

    Args:
        model: a causal language model (a peft model too), on any device.
        tokenizer: its tokenizer.
        prompts: chats (lists of ``{"role", "content"}`` messages, rendered with the chat
            template and a generation prompt, no extra BOS) or plain strings (tokenized as
            they are, with the tokenizer's special tokens). All prompts must be of one kind.
        max_new_tokens: the most tokens generated per reply.
        batch_size: prompts per ``generate`` call (padded on the left).
        progress: show a progress bar over the batches.
        desc: the progress bar's label.
        strip: strip surrounding whitespace from each reply; pass ``False`` for code, whose
            leading indentation is part of the answer.
        **generate_kwargs: passed on to ``model.generate`` (greedy unless you say otherwise).

    Returns:
        One reply per prompt, special tokens removed (and surrounding whitespace, unless
        ``strip=False``).

    The model is put in eval mode (no dropout) for the generation and put back in training
    mode afterwards if it was in it; the tokenizer's padding side and pad token are restored.
    """
    if not prompts:
        return []
    if len({isinstance(p, str) for p in prompts}) > 1:
        raise ValueError("prompts must be all strings or all chats, not a mix")
    was_training = model.training
    padding_side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    tokenizer.padding_side = "left"  # generation continues at the right end of each row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    options = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id, **generate_kwargs}
    if not options["do_sample"]:  # silence warnings about sampling settings of the model
        options.update(temperature=None, top_p=None, top_k=None)
    replies: list[str] = []
    device = next(model.parameters()).device
    starts = range(0, len(prompts), batch_size)
    try:
        model.eval()
        for start in tqdm(starts, desc=desc, disable=not progress):
            rendered = [_render(tokenizer, p) for p in prompts[start : start + batch_size]]
            batch = tokenizer(
                [text for text, _ in rendered],
                return_tensors="pt",
                padding=True,
                add_special_tokens=rendered[0][1],
            ).to(device)
            with torch.no_grad():
                output = model.generate(**batch, max_new_tokens=max_new_tokens, **options)
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            replies += [text.strip() for text in texts] if strip else texts
    finally:
        tokenizer.padding_side, tokenizer.pad_token = padding_side, pad_token
        model.train(was_training)
    return replies
