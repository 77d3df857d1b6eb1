"""Generating replies for many prompts at once: batched, greedy, with a progress bar."""

from __future__ import annotations

import math
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


def stop_at_end_of_text(model, tokenizer) -> tuple[int, int]:
    """Make ``generate`` stop at the tokenizer's end-of-text token and pad with it.

    ``generate`` stops on its generation config's ``eos_token_id``, read from the model's
    ``generation_config.json``. Some models publish none (phi-1_5, see
    ``helpers.architectures.PUBLISHED_GENERATION_CONFIGS``): a finished row then keeps
    decoding, and every reply runs to ``max_new_tokens``. Phi's tokenizer has no pad token
    either, so its end-of-text token pads too. Sets both on ``model.generation_config``
    in place and returns ``(eos_token_id, pad_token_id)``.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no end-of-text token to stop at")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    return eos, pad


FP16_OVERFLOW_ADVICE = (
    "Phi-2's model card warns that its attention can overflow in fp16. To train and "
    "generate without fp16 on this card: load with bnb_4bit_compute_dtype=torch.float32 and "
    "dtype=torch.float32, and set fp16=False in SFTConfig (slower, about twice the activation "
    "memory); or try attn_implementation='eager' instead of 'sdpa'."
)


def check_fp16_overflow(losses: Sequence[float] = (), replies: Sequence[str] = ()) -> None:
    """Stop with advice when training or generation shows the signs of fp16 overflow.

    An overflow in fp16 makes the loss ``nan`` or ``inf``; in generation it turns the logits
    into ``nan``, greedy decoding then picks token 0 every time, which in the GPT-2/CodeGen
    vocabulary of Phi is ``"!"``. So: any non-finite loss, or replies that are all made of
    ``"!"`` (and not empty), raise.

    Raises:
        FloatingPointError: with :data:`FP16_OVERFLOW_ADVICE`.
    """
    bad = [loss for loss in losses if not math.isfinite(loss)]
    if bad:
        raise FloatingPointError(f"{len(bad)} logged losses are not finite. {FP16_OVERFLOW_ADVICE}")
    bangs = [r for r in replies if r.strip() and set(r.strip()) == {"!"}]
    if replies and len(bangs) == len(replies):
        raise FloatingPointError(
            f"all {len(replies)} replies are only '!' (nan logits). {FP16_OVERFLOW_ADVICE}"
        )
