"""The course's real models, known without downloading them.

The published ``config.json`` of each model is written down here as a fact, so that the
full-size architecture can be built on PyTorch's *meta* device: every module and every
parameter shape exists, but no memory is allocated and nothing is downloaded. That is
enough to count parameters, check LoRA target modules and estimate memory.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

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
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
    },
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
