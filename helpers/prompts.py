"""Prompts in chat form: the messages a chat model sees, and the rows a trainer learns from.

A chat model was instruction-tuned on conversations rendered by its *chat template* (for
Mistral-7B-Instruct-v0.2: ``<s> [INST] user [/INST] assistant</s>``, an optional system
message joined to the first user turn). Training and generation must use the same
rendering, so the notebooks build *messages* (``{"role", "content"}`` dicts) and let
``tokenizer.apply_chat_template`` render them. The rows given to trl's ``SFTTrainer`` are in
its *prompt-completion* format, which makes the loss cover the completion only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def user_message(text: str, instructions: str | None = None) -> list[dict[str, str]]:
    """A one-turn chat: ``instructions`` (if given) as the system message, then the user's ``text``.

    The chat template decides where a system message goes. Mistral-7B-Instruct-v0.2's current
    template (see :data:`helpers.standins.MISTRAL_CHAT_TEMPLATE`) has no separate system turn:
    it joins the system message to the first user turn with a blank line between them. Leading
    and trailing whitespace of the instructions is removed.
    """
    user = [{"role": "user", "content": text}]
    if not instructions or not instructions.strip():
        return user
    return [{"role": "system", "content": instructions.strip()}, *user]


def prompt_completion(
    text: str, reply: str, instructions: str | None = None
) -> dict[str, list[dict[str, str]]]:
    """One training row in trl's conversational prompt-completion format.

    ``{"prompt": [system and user turns], "completion": [assistant turn]}``: ``SFTTrainer``
    renders both with the chat template and, by default for this format, computes the loss on the
    completion's tokens only (``completion_only_loss``).
    """
    return {
        "prompt": user_message(text, instructions),
        "completion": [{"role": "assistant", "content": reply}],
    }


def validate_rows(
    rows: Iterable[Any], fields: Iterable[str], where: str = "the data"
) -> list[dict[str, Any]]:
    """Check that every row is an object whose ``fields`` are non-empty strings.

    Args:
        rows: the rows, for example from :func:`helpers.data.read_jsonl`.
        fields: the names every row must have.
        where: the file or split, for the message.

    Returns:
        The rows, as a list.

    Raises:
        ValueError: naming the first bad row (counting from 1, like the lines of a JSON
            Lines file) and what is wrong with it.
    """
    rows = list(rows)
    fields = list(fields)
    if not rows:
        raise ValueError(f"{where} has no rows")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise ValueError(
                f"{where}, row {number}: expected an object with fields {fields}, "
                f"got {type(row).__name__}"
            )
        missing = [name for name in fields if name not in row]
        if missing:
            raise ValueError(
                f"{where}, row {number}: missing field(s) {missing}; it has {sorted(row)}"
            )
        for name in fields:
            value = row[name]
            if not isinstance(value, str):
                raise ValueError(
                    f"{where}, row {number}: field {name!r} must be a string, "
                    f"not {type(value).__name__}"
                )
            if not value.strip():
                raise ValueError(f"{where}, row {number}: field {name!r} is empty")
    return rows


def parse_inst_example(text: str, marker: str = "Please respond to the following comment.") -> dict:
    """Split one pre-rendered Mistral training text into ``{"comment", "reply"}``.

    Some Hub datasets store each example already rendered, e.g.
    ``"<s>[INST] {instructions}\\n{marker}\\n \\n{comment} \\n[/INST]\\n{reply}</s>"``
    (shawhin/shawgpt-youtube-comments, column ``example``). The comment is what follows
    ``marker`` inside ``[INST] ... [/INST]`` (everything inside if the marker is absent); the
    reply is what follows ``[/INST]``, without the end-of-sequence token.
    """
    if "[/INST]" not in text:
        raise ValueError(f"no [/INST] in the example: {text[:80]!r}")
    prompt, reply = text.split("[/INST]", 1)
    prompt = prompt.replace("<s>", "", 1).strip()
    if prompt.startswith("[INST]"):
        prompt = prompt[len("[INST]") :]
    comment = prompt.split(marker, 1)[1] if marker and marker in prompt else prompt
    reply = reply.strip()
    if reply.endswith("</s>"):
        reply = reply[: -len("</s>")].rstrip()
    return {"comment": comment.strip(), "reply": reply}
