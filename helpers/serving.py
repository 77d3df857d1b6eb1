"""GPU memory of answering questions with a 4-bit model and an embedder beside it.

Training memory is notebook 01's subject (:func:`helpers.memory.estimate_memory`). Answering
needs less: no gradients, no optimizer states, no activations kept for a backward pass. What
it needs instead is the key/value cache of generation. :func:`generation_memory` takes the
parts of notebook 01's estimate that inference shares (the 4-bit weights, their quantization
constants, the adapter, the dequantization buffer) and adds the KV cache, the prefill's
largest temporaries and the embedder's weights. Every assumption is a keyword with a default.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from helpers.memory import estimate_memory

INFERENCE_PARTS = ("weights", "quantization_constants", "adapter", "temporaries")


def kv_cache_bytes(
    config: PretrainedConfig, batch_size: int, seq_len: int, kv_bytes: float = 2
) -> int:
    """Bytes of the key/value cache: 2 (K and V) x layers x kv heads x head dim x tokens.

    ``seq_len`` counts the prompt and the generated tokens; ``kv_bytes`` is 2 for an fp16
    cache. Grouped-query attention (Mistral: 8 key/value heads for 32 query heads) keeps it
    4 times smaller than one K and V per query head would.
    """
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * kv_bytes
    return round(per_token * batch_size * seq_len)


def generation_memory(
    config: PretrainedConfig,
    *,
    batch_size: int,
    seq_len: int,
    adapter_params: int = 0,
    embedder_params: int = 0,
    embedder_bytes: float = 4,
    unquantized_weight_bytes: float = 2,
    kv_bytes: float = 2,
    prefill_buffers: float = 3,
    activation_bytes: float = 2,
) -> dict[str, int]:
    """Predict the peak GPU memory of batched generation with a 4-bit model and an embedder.

    Args:
        config: the causal LM's config (the real one: ``helpers.architectures.real_config``).
        batch_size: prompts generated together.
        seq_len: tokens per sequence at the end of generation (prompt + new tokens).
        adapter_params: LoRA parameters on top (0 for the base model).
        embedder_params: parameters of the sentence embedder on the same GPU.

    Named assumptions:
        embedder_bytes: bytes per embedder weight: 4, as sentence-transformers loads it
            (fp32) unless told otherwise.
        unquantized_weight_bytes: what bitsandbytes leaves unquantized (embeddings,
            ``lm_head``, norms) loads in the ``dtype`` asked for: fp16, 2 bytes. (Training
            casts them to fp32 with ``prepare_model_for_kbit_training``; inference does not.)
        kv_bytes: bytes per cached key or value (fp16: 2).
        prefill_buffers, activation_bytes: the largest short-lived tensors of the prefill
            are the MLP's: gate, up and their product, each batch x seq_len x
            intermediate_size in fp16. Attention scores are not stored (PyTorch's SDPA), and
            transformers computes the logits of the last position only during generation.

    Returns:
        Bytes of ``weights``, ``quantization_constants``, ``adapter``, ``temporaries`` (from
        notebook 01's estimator), ``kv_cache``, ``prefill``, ``embedder`` and ``total``.
    """
    training = estimate_memory(
        config,
        method="qlora",
        trainable_params=adapter_params,
        unquantized_weight_bytes=unquantized_weight_bytes,
    )
    estimate = {part: training[part] for part in INFERENCE_PARTS}
    estimate["kv_cache"] = kv_cache_bytes(config, batch_size, seq_len, kv_bytes)
    estimate["prefill"] = round(
        prefill_buffers * batch_size * seq_len * config.intermediate_size * activation_bytes
    )
    estimate["embedder"] = round(embedder_params * embedder_bytes)
    estimate["total"] = sum(estimate.values())
    return estimate
