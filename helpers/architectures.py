"""The course's real models, known without downloading them.

The published ``config.json`` of each model is written down here as a fact, so that the
full-size architecture can be built on PyTorch's *meta* device: every module and every
parameter shape exists, but no memory is allocated and nothing is downloaded. That is
enough to count parameters, check LoRA target modules and estimate memory.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
)

MISTRAL_7B_INSTRUCT = "mistralai/Mistral-7B-Instruct-v0.2"
PHI_2 = "microsoft/phi-2"
PHI_1_5 = "microsoft/phi-1_5"

# From each repository's config.json on the Hugging Face Hub (fields that shape the model).
REAL_CONFIGS: dict[str, dict[str, Any]] = {
    MISTRAL_7B_INSTRUCT: {
        "model_type": "mistral",
        "architectures": ["MistralForCausalLM"],
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "rms_norm_eps": 1e-05,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    },
    PHI_2: {
        "model_type": "phi",
        "architectures": ["PhiForCausalLM"],
        "vocab_size": 51200,
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 2048,
        "partial_rotary_factor": 0.4,
        "rope_theta": 10000.0,
        "layer_norm_eps": 1e-05,
        "hidden_act": "gelu_new",
        "resid_pdrop": 0.1,
        "embd_pdrop": 0.0,
        "attention_dropout": 0.0,
        "qk_layernorm": False,
        "tie_word_embeddings": False,
        # set in the published config.json by commit 3f879ff, "Add EOS token (#100)"
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "torch_dtype": "float16",
    },
    PHI_1_5: {
        "model_type": "phi",
        "architectures": ["PhiForCausalLM"],
        "vocab_size": 51200,
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 2048,
        "partial_rotary_factor": 0.5,
        "rope_theta": 10000.0,
        "layer_norm_eps": 1e-05,
        "hidden_act": "gelu_new",
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attention_dropout": 0.0,
        "qk_layernorm": False,
        "tie_word_embeddings": False,
        # null in the published config.json (PR #80, which would have set 50256, was closed
        # unmerged); transformers' PhiConfig defaults of 1 and 2 are *not* what it publishes
        "bos_token_id": None,
        "eos_token_id": None,
        "torch_dtype": "float16",
    },
}

# The special tokens each Phi model publishes, file by file, on the Hugging Face Hub (main):
# config.json (above), generation_config.json and the tokenizer files. What ``generate``
# stops on is the generation config's ``eos_token_id``: phi-1_5 publishes none, so a
# notebook must set it from the tokenizer or generation runs to ``max_new_tokens``.
#   phi-2 generation_config.json, commit 313453c "Add EOS token to the generation config
#   (#101)": {"_from_model_config": true, "transformers_version": "4.37.0.dev0",
#   "eos_token_id": 50256, "bos_token_id": 50256}
#   phi-1_5 generation_config.json, commit d3ba318: {"_from_model_config": true,
#   "transformers_version": "4.37.0.dev0"}
#   both special_tokens_map.json: {"bos_token": "<|endoftext|>", "eos_token":
#   "<|endoftext|>", "unk_token": "<|endoftext|>"}: no pad token; <|endoftext|> is id 50256
PUBLISHED_GENERATION_CONFIGS: dict[str, dict[str, Any]] = {
    PHI_2: {"bos_token_id": 50256, "eos_token_id": 50256},
    PHI_1_5: {},
}
PUBLISHED_TOKENIZER_SPECIALS: dict[str, dict[str, Any]] = {
    model_id: {
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": None,
        "eos_token_id": 50256,
    }
    for model_id in (PHI_2, PHI_1_5)
}

# Published parameter counts, for checking the facts above.
PUBLISHED_PARAMETERS: dict[str, int] = {
    MISTRAL_7B_INSTRUCT: 7_241_732_096,
    PHI_2: 2_779_683_840,
    PHI_1_5: 1_418_270_720,
}


def real_config(model_id: str) -> PretrainedConfig:
    """Return the transformers config of one of the course's real models, offline."""
    if model_id not in REAL_CONFIGS:
        raise KeyError(f"{model_id!r} is not one of the course's models: {sorted(REAL_CONFIGS)}")
    fields = dict(REAL_CONFIGS[model_id])
    model_type = fields.pop("model_type")
    fields.pop("torch_dtype")
    return AutoConfig.for_model(model_type, **fields)


def published_generation_config(model_id: str) -> GenerationConfig:
    """The generation config a Phi model gets from the Hub, rebuilt offline from the facts above.

    ``from_pretrained`` reads ``generation_config.json``; where that file sets no token, the
    value stays ``None`` (phi-1_5's ``eos_token_id``), and ``generate`` then has nothing to
    stop on but ``max_new_tokens``.
    """
    if model_id not in PUBLISHED_GENERATION_CONFIGS:
        raise KeyError(f"no published generation config recorded for {model_id!r}")
    return GenerationConfig(**PUBLISHED_GENERATION_CONFIGS[model_id])


def meta_model(model_id: str) -> PreTrainedModel:
    """Build the full-size model on the meta device: all shapes, no memory, no download."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(real_config(model_id))


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """Return ``(total, trainable)`` parameter counts of a model (meta models too)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct short names of the model's linear layers (the possible LoRA targets)."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    return sorted(names)
