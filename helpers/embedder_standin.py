"""The sentence embedder of notebook 07: the real one's facts, and a tiny stand-in built here.

FULL mode embeds with ``sentence-transformers/all-MiniLM-L6-v2``, a sentence-transformers
model made of three modules: a ``BertModel`` (6 layers, width 384), mean pooling over the
tokens, and L2 normalisation; inputs are cut at 256 word pieces. Its published files are
written down here as facts (:data:`REAL_EMBEDDER_CONFIG` and friends), so that the model can
be built on the meta device, counted and planned for without downloading it.

SMALL mode builds a stand-in of the same architecture (``BertModel`` with the same module
names, the same three sentence-transformers modules, the same 256-token cut) but tiny, with
a WordPiece tokenizer trained on the course's own text, and a few seconds of contrastive
pre-training in the manner of the real model (which learned from pairs of related texts,
with the other texts of the batch as negatives): here the pairs are the two halves of each
sentence of the course's generic text (``data/standin_corpus``) and of the channel notes it
will embed, never the questions of notebook 07. Seeing the documents' own sentences is a
small version of domain adaptation (TSDAE and GPL adapt a real embedder to a collection from
its unlabelled text), and it matters: pre-trained on the generic text alone, the stand-in's
dense recall@5 on notebook 07's questions was 0.42 (hybrid 0.797); with the notes' sentences,
0.68 (hybrid 0.945; 2 layers of width 64, 300 steps: more steps or a wider model scored lower).
The real model of FULL mode has never seen the notes, so SMALL's dense numbers say nothing
about it. The stand-in is saved like a Hub checkpoint, so ``SentenceTransformer(path)`` loads
it exactly as it loads the Hub id, and it is cached like the other stand-ins
(:func:`helpers.standins.cache_dir`).

This module is separate from :mod:`helpers.standins` on purpose: the causal-LM stand-ins
and this embedder share nothing but the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import WordPieceTrainer
from transformers import AutoModel, BertConfig, PreTrainedTokenizerFast

from helpers.data import DATA_DIR, corpus_texts, read_jsonl
from helpers.standins import cache_dir

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"

# config.json of sentence-transformers/all-MiniLM-L6-v2 on the Hugging Face Hub (the fields
# that shape the model), as listed at commit e4ce9877abf3edfe10b0d82785e83bdcb973e22e.
REAL_EMBEDDER_CONFIG: dict[str, Any] = {
    "architectures": ["BertModel"],
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
# The same repository's sentence-transformers files: modules.json (Transformer, then
# 1_Pooling, then 2_Normalize), 1_Pooling/config.json (mean of the token embeddings) and
# sentence_bert_config.json (max_seq_length 256: longer inputs are truncated).
REAL_EMBEDDER_MODULES = ("Transformer", "Pooling", "Normalize")
REAL_EMBEDDER_POOLING = "mean"
REAL_EMBEDDER_MAX_SEQ_LENGTH = 256
# The repository's model.safetensors (fp32 weights): "90.9 MB" in the Hub's file list, decimal.
REAL_EMBEDDER_SAFETENSORS_MB = 90.9
REAL_EMBEDDER_LICENSE = "apache-2.0"

RECIPE_VERSION = 5
# What the stand-in keeps small; everything else comes from the real config.
TINY_EMBEDDER_SHAPE: dict[str, int] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
}
TINY_EMBEDDER_VOCAB = 2048
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def embedder_config(model_id: str = EMBEDDER) -> BertConfig:
    """The real embedder's transformer config, from :data:`REAL_EMBEDDER_CONFIG` (no download)."""
    if model_id != EMBEDDER:
        raise KeyError(f"the course knows the config of {EMBEDDER!r} only, not {model_id!r}")
    fields = {k: v for k, v in REAL_EMBEDDER_CONFIG.items() if k != "architectures"}
    return BertConfig(architectures=list(REAL_EMBEDDER_CONFIG["architectures"]), **fields)


def count_embedder_parameters(config: BertConfig) -> int:
    """Parameters of the ``BertModel`` a config describes, built on the meta device.

    ``AutoModel`` is what sentence-transformers loads: the encoder with its pooler layer.
    """
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return sum(p.numel() for p in model.parameters())


def bert_text_steps() -> tuple[normalizers.Normalizer, pre_tokenizers.PreTokenizer]:
    """BERT's uncased text steps before WordPiece: lower case and accents stripped, then
    split on spaces and punctuation."""
    return (
        normalizers.BertNormalizer(lowercase=True, strip_accents=True),
        pre_tokenizers.BertPreTokenizer(),
    )


def continuing_pieces(texts: list[str]) -> list[str]:
    """Every ``##c`` piece the WordPiece trainer starts from: a character inside a word.

    Words as :func:`train_wordpiece` sees them (:func:`bert_text_steps`), sorted.
    """
    normalizer, pre_tokenizer = bert_text_steps()
    pieces = set()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            pieces.update("##" + c for c in word[1:])
    return sorted(pieces)


def train_wordpiece(
    texts: list[str], vocab_size: int = TINY_EMBEDDER_VOCAB
) -> PreTrainedTokenizerFast:
    """A BERT-style uncased WordPiece tokenizer trained on ``texts``, the same on every run.

    Like the real model's: lower case and accents stripped, split on spaces and
    punctuation, ``##`` marks a piece inside a word, ``[CLS] text [SEP]`` around every input,
    ``[PAD]`` is id 0.

    The trainer of ``tokenizers`` 0.23 numbers the ``##c`` pieces in a hash map's order,
    which changes from run to run, and breaks ties between equally frequent merges by those
    numbers, so two runs can learn different vocabularies (huggingface/tokenizers#1794).
    Handing it every ``##c`` piece up front, sorted, as a reserved token fixes their numbers;
    the tokenizer is then rebuilt from the learned vocabulary with only BERT's five reserved
    tokens.
    """
    normalizer, pre_tokenizer = bert_text_steps()
    trainer_tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trainer_tok.normalizer, trainer_tok.pre_tokenizer = normalizer, pre_tokenizer
    trainer = WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + continuing_pieces(texts)
    )
    trainer_tok.train_from_iterator(texts, trainer)
    tok = Tokenizer(models.WordPiece(trainer_tok.get_vocab(), unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.add_special_tokens(SPECIAL_TOKENS)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.model_max_length = REAL_EMBEDDER_CONFIG["max_position_embeddings"]
    return fast


def _key(texts: list[str]) -> str:
    recipe = json.dumps([RECIPE_VERSION, EMBEDDER, TINY_EMBEDDER_SHAPE, TINY_EMBEDDER_VOCAB, texts])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def embedder_standin_path(texts: list[str] | None = None) -> Path:
    """The folder where the embedder stand-in is (or will be) cached."""
    key = _key(standin_texts() if texts is None else texts)
    return cache_dir() / "standins" / f"tiny-{EMBEDDER.split('/')[-1]}-{key}"


def sentence_halves(texts: list[str], min_words: int = 4) -> tuple[list[str], list[str]]:
    """Split every sentence of ``texts`` (of at least ``min_words`` words) into two halves.

    The halves of one sentence are a positive pair for contrastive pre-training: text that
    belongs together should embed close together.
    """
    firsts, seconds = [], []
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            words = sentence.split()
            if len(words) >= min_words:
                half = len(words) // 2
                firsts.append(" ".join(words[:half]))
                seconds.append(" ".join(words[half:]))
    return firsts, seconds


def pretrain_contrastive(
    embedder,
    firsts: list[str],
    seconds: list[str],
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    scale: float = 20.0,
    seed: int = 0,
) -> list[float]:
    """Train a SentenceTransformer so that ``firsts[i]`` embeds closest to ``seconds[i]``.

    In-batch negatives with a cross-entropy over scaled cosine similarities (the loss
    sentence-transformers calls MultipleNegativesRankingLoss). Returns the loss of every
    step (it should fall).
    """
    if len(firsts) != len(seconds) or len(firsts) < 2:
        raise ValueError("need at least two pairs, as two lists of the same length")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(embedder.parameters(), lr=lr)
    embedder.train()
    losses = []
    for _ in range(steps):
        idx = torch.randperm(len(firsts), generator=generator)[:batch_size].tolist()
        a = embedder(embedder.preprocess([firsts[i] for i in idx]))["sentence_embedding"]
        b = embedder(embedder.preprocess([seconds[i] for i in idx]))["sentence_embedding"]
        loss = torch.nn.functional.cross_entropy(scale * a @ b.T, torch.arange(len(idx)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    embedder.eval()
    return losses


def _sentence_transformer(model, tokenizer, folder: str):
    """A BertModel as a sentence-transformers model: Transformer, mean Pooling, Normalize."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformer = Transformer(folder, max_seq_length=REAL_EMBEDDER_MAX_SEQ_LENGTH)
    pooling = Pooling(model.config.hidden_size, pooling_mode=REAL_EMBEDDER_POOLING)
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")


def standin_texts() -> list[str]:
    """The text the stand-in learns from, its WordPiece vocabulary and its sentence pairs: the
    course's generic text and the channel notes it embeds (never notebook 07's questions, nor
    the other notebooks' datasets, so a change to an unrelated dataset does not change the
    embedder and what notebook 07 measures with it)."""
    notes = [row["text"] for row in read_jsonl(DATA_DIR / "channel_notes" / "notes.jsonl")]
    return corpus_texts(include_datasets=False) + notes


def build_embedder_standin(force: bool = False, seed: int = 0) -> str:
    """Build (or reuse from the cache) the tiny stand-in of :data:`EMBEDDER`; return its path.

    Args:
        force: rebuild even if a cached copy exists.
        seed: the seed of the initial weights and of the pre-training batches.
    """
    texts = standin_texts()
    path = embedder_standin_path(texts)
    if (path / "modules.json").exists() and not force:
        return str(path)
    tokenizer = train_wordpiece(texts)
    fields = {k: v for k, v in REAL_EMBEDDER_CONFIG.items() if k != "architectures"}
    fields.update(
        TINY_EMBEDDER_SHAPE, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    config = BertConfig(architectures=["BertModel"], **fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left untouched
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
        with tempfile.TemporaryDirectory() as raw:
            embedder = _sentence_transformer(model, tokenizer, raw)
        # Pre-train on the sentences of the generic text and the notes; the questions stay
        # unseen.
        losses = pretrain_contrastive(embedder, *sentence_halves(texts), seed=seed)
    # Written aside, then moved into place: a half-written stand-in is never found.
    with tempfile.TemporaryDirectory(dir=path.parent, ignore_cleanup_errors=True) as tmp:
        embedder.save(tmp)
        card = {
            "stands_in_for": EMBEDDER,
            "seed": seed,
            "pretraining_loss": [losses[0], losses[-1]],
        }
        (Path(tmp) / "standin.json").write_text(json.dumps(card, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    return str(path)
