"""Tiny stand-ins for the course's real models, built locally in seconds.

A stand-in has the *same architecture and module names* as the real model
(``MistralForCausalLM`` or ``PhiForCausalLM``; ``q_proj``, ``dense``, ``fc1`` ...), a
tokenizer trained here on the course's own text (with a Mistral-style ``[INST] ...
[/INST]`` chat template for the Mistral one), and seconds of pre-training on that text
(the Mistral one also on chat turns, so that it replies and stops like an instruct model) so
that fine-tuning has a language model to start from. It is saved like a Hub
checkpoint, so ``AutoModelForCausalLM.from_pretrained(path, quantization_config=...)``
and ``AutoTokenizer.from_pretrained(path)`` work on it exactly as on the Hub id.

Stand-ins are cached (``$COURSE_CACHE``, else ``.cache/`` in the course folder) under a
key made of their recipe and the corpus, so notebooks reuse them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from helpers.architectures import MISTRAL_7B_INSTRUCT, PHI_1_5, PHI_2, REAL_CONFIGS
from helpers.data import DATA_DIR, corpus_texts, read_jsonl

RECIPE_VERSION = 1

# Mistral-7B-Instruct-v0.2's chat template, word for word: the current ``chat_template`` of
# its tokenizer_config.json on the Hub (line 42). The Hub is unreachable here; the text is the
# copy in guidance-ai/guidance, guidance/chat.py at commit 025fac921a76aa05b54633f39b4e4df6ff9b957c
# ("[05/08/24] https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.2/blob/main/
# tokenizer_config.json#L42"), identical to ggml-org/llama.cpp's tests/test-chat-template.cpp
# ("mistralai 'v1' template with a system prompt"). It replaced the release's template, which
# had no system role. An optional first system message is joined to the first user turn with
# a blank line: <s> [INST] system\n\nuser [/INST] reply</s> [INST] user [/INST]
MISTRAL_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "\n"
    "{{- bos_token }}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must "
    "alternate user/assistant/user/assistant/...') }}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n"
    "            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported, with the "
    "exception of an initial optional system message!') }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
)

# What the tiny versions keep small; everything else comes from the real config.
# Every linear layer keeps a multiple of 32 outputs: bitsandbytes' CPU 4-bit kernel needs it.
TINY_SHAPE: dict[str, int] = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "max_position_embeddings": 2048,
}
TINY_VOCAB = 1024


def _tiny_config(model_id: str, vocab_size: int, special: dict[str, int]):
    fields = dict(REAL_CONFIGS[model_id])
    model_type = fields.pop("model_type")
    fields.pop("torch_dtype")
    ratio = fields["intermediate_size"] // fields["hidden_size"]
    kv_ratio = fields["num_attention_heads"] // fields["num_key_value_heads"]
    fields.update(TINY_SHAPE)
    fields["intermediate_size"] = TINY_SHAPE["hidden_size"] * ratio
    fields["num_key_value_heads"] = max(1, TINY_SHAPE["num_attention_heads"] // kv_ratio)
    fields["vocab_size"] = vocab_size
    fields.update(special)
    return AutoConfig.for_model(model_type, **fields)


def train_tokenizer(kind: str, texts: list[str], vocab_size: int = TINY_VOCAB):
    """Train a BPE tokenizer on ``texts`` in the style of the real model's tokenizer.

    ``kind="mistral"``: SentencePiece-like (``▁`` for spaces, byte fallback, ``<s>`` added
    in front, ``<unk> <s> </s>`` as ids 0, 1, 2), with Mistral's chat template.
    ``kind="phi"``: GPT-2/CodeGen-like byte-level BPE with ``<|endoftext|>`` as BOS and EOS
    and nothing added in front.
    """
    if kind == "mistral":
        # Like Mistral's SentencePiece vocabulary: <unk> <s> </s> are ids 0-2, the 256 byte
        # tokens <0x00>..<0xFF> (ordinary tokens, used for anything the merges do not cover)
        # ids 3-258, then the learned pieces.
        specials = ["<unk>", "<s>", "</s>"]
        normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
        learner = Tokenizer(models.BPE(unk_token="<unk>"))
        learner.normalizer, learner.pre_tokenizer = normalizer, pre_tokenizer
        learner.train_from_iterator(
            texts, BpeTrainer(vocab_size=vocab_size - 256, special_tokens=specials)
        )
        learned = json.loads(learner.to_str())["model"]
        vocab = {token: i for i, token in enumerate(specials)}
        vocab.update({f"<0x{b:02X}>": len(specials) + b for b in range(256)})
        for token, _ in sorted(learned["vocab"].items(), key=lambda item: item[1]):
            vocab.setdefault(token, len(vocab))
        merges = [
            tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]
        ]
        tok = Tokenizer(
            models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
        )
        tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace("▁", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        tok.add_special_tokens(specials)
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
        fast.chat_template = MISTRAL_CHAT_TEMPLATE
    elif kind == "phi":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
        )
    else:
        raise ValueError(f"kind must be 'mistral' or 'phi', not {kind!r}")
    fast.model_max_length = TINY_SHAPE["max_position_embeddings"]
    return fast


# How each stand-in is pre-trained: steps of 16 windows of seq_len tokens, and "turns": how
# each line of text is also shown answered by the next one, so that the stand-in has learnt
# to answer and stop, as the real model has. The Mistral stand-in stands in for an instruct
# model: turns of its chat template, closed by </s> (notebook 04 tunes it to sign its
# replies). The Phi-2 stand-in learns Phi-2's documented QA format, "Instruct: <prompt>\n
# Output:" (its model card, huggingface.co/microsoft/phi-2), closed by <|endoftext|>
# (notebook 05 tunes it to summarise). The phi-1.5 one (notebook 06) reads plain text only.
PRETRAINING: dict[str, dict] = {
    MISTRAL_7B_INSTRUCT: {"steps": 300, "seq_len": 128, "turns": "chat template"},
    PHI_2: {"steps": 300, "seq_len": 128, "turns": "Instruct/Output"},
    PHI_1_5: {"steps": 60, "seq_len": 64, "turns": None},
}


def sentences(text: str) -> list[str]:
    """Split ``text`` into sentences at '.', '!' or '?' followed by white space."""
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def pretraining_lines(model_id: str) -> list[str]:
    """The text the stand-in of ``model_id`` is pre-trained on, one sentence or line per item.

    Every stand-in reads the generic course text (data/standin_corpus). Those that learn
    turns also read the channel's notes (data/channel_notes/notes.jsonl: the documents
    notebook 07 retrieves from, not a fine-tuning or evaluation set), since 8 KB alone is
    memorised rather than learned. No fine-tuning data set is ever read, so held-out
    examples stay unseen.
    """
    lines = corpus_texts(include_datasets=False)
    if PRETRAINING[model_id]["turns"]:
        for row in read_jsonl(DATA_DIR / "channel_notes" / "notes.jsonl"):
            lines += sentences(row["text"])
    return lines


def pretraining_stream(model_id: str, tokenizer, lines: list[str]) -> torch.Tensor:
    """The token ids a stand-in is pre-trained on: the lines as plain text, then each line
    as a turn answered by the next one, in the format of ``PRETRAINING[model_id]["turns"]``:
    ``<s> [INST] line [/INST] next line</s>`` or ``Instruct: line\nOutput: next line<|endoftext|>``.
    """
    # one long sequence, cut into windows below: no warning about the model's maximum length
    ids = tokenizer("\n".join(lines), add_special_tokens=False, verbose=False)["input_ids"]
    ids.append(tokenizer.eos_token_id)
    turns = PRETRAINING[model_id]["turns"]
    for question, answer in itertools.pairwise(lines) if turns else []:
        if turns == "chat template":
            chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            ids += tokenizer.apply_chat_template(chat, tokenize=True)["input_ids"]
        else:
            text = f"Instruct: {question}\nOutput: {answer}"
            ids += tokenizer(text, add_special_tokens=False)["input_ids"]
            ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids)


def pretrain(
    model: torch.nn.Module,
    stream: torch.Tensor,
    steps: int = 60,
    seq_len: int = 64,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
) -> list[float]:
    """Give a fresh tiny model a few seconds of language modelling on random windows of
    ``stream`` (token ids). Returns the loss of every step (it should fall).
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch_size,), generator=generator)
        batch = torch.stack([stream[s : s + seq_len] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


STANDINS: dict[str, str] = {MISTRAL_7B_INSTRUCT: "mistral", PHI_2: "phi", PHI_1_5: "phi"}


def cache_dir() -> Path:
    """Where stand-ins are kept: ``$COURSE_CACHE``, else ``.cache/`` in the course folder."""
    return Path(os.environ.get("COURSE_CACHE", DATA_DIR.parent / ".cache"))


def _key(model_id: str, texts: list[str]) -> str:
    recipe = [RECIPE_VERSION, model_id, TINY_SHAPE, TINY_VOCAB, texts]
    steps, seq_len = PRETRAINING[model_id]["steps"], PRETRAINING[model_id]["seq_len"]
    if STANDINS[model_id] == "mistral":  # its own recipe; phi-1.5's key stays as it was
        recipe.append({"chat_template": MISTRAL_CHAT_TEMPLATE, "chat_pretraining": 1,
                       "pretraining": {"steps": steps, "seq_len": seq_len}})
    elif PRETRAINING[model_id]["turns"]:
        recipe.append({"pretraining": PRETRAINING[model_id]})
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]


def standin_path(model_id: str, texts: list[str] | None = None) -> Path:
    """The folder where the stand-in of ``model_id`` is (or will be) cached.

    ``texts`` is the corpus the key is made from (read from data/ when not given).
    """
    if model_id not in STANDINS:
        raise KeyError(f"no stand-in for {model_id!r}; there are: {sorted(STANDINS)}")
    name = model_id.split("/")[-1]
    key = _key(model_id, corpus_texts() if texts is None else texts)
    return cache_dir() / "standins" / f"tiny-{name}-{key}"


def build_standin(model_id: str, force: bool = False, seed: int = 0) -> str:
    """Build (or reuse from the cache) the tiny stand-in of ``model_id``; return its path.

    Args:
        model_id: one of the course's Hub ids, e.g. ``"mistralai/Mistral-7B-Instruct-v0.2"``.
        force: rebuild even if a cached copy exists.
        seed: the seed of the initial weights and the pre-training batches.
    """
    texts = corpus_texts()
    path = standin_path(model_id, texts)
    if (path / "config.json").exists() and not force:
        return str(path)
    kind = STANDINS[model_id]
    tokenizer = train_tokenizer(kind, texts)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if kind == "phi":
        special["pad_token_id"] = tokenizer.eos_token_id
    config = _tiny_config(model_id, len(tokenizer), special)
    # Built with its own seed, and the caller's random state is given back untouched: a
    # notebook's first run (which builds the stand-in) and its later runs (which find it
    # cached) then draw the same LoRA weights and batches, and log the same losses.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        # Pre-train on text that is no fine-tuning data set, so held-out examples stay unseen.
        stream = pretraining_stream(model_id, tokenizer, pretraining_lines(model_id))
        plan = PRETRAINING[model_id]
        losses = pretrain(model, stream, steps=plan["steps"], seq_len=plan["seq_len"], seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside, then moved into place: a half-written stand-in is never found.
    with tempfile.TemporaryDirectory(dir=path.parent, ignore_cleanup_errors=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card = {"stands_in_for": model_id, "pretraining_loss": [losses[0], losses[-1]]}
        (Path(tmp) / "standin.json").write_text(json.dumps(card, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)  # tmp is gone now; its cleanup has nothing left to do
    return str(path)
