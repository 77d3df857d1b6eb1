"""helpers.serving: the memory of generation with a 4-bit model and an embedder."""

from __future__ import annotations

from helpers.architectures import MISTRAL_7B_INSTRUCT, real_config
from helpers.memory import estimate_memory, fits_t4
from helpers.serving import INFERENCE_PARTS, generation_memory, kv_cache_bytes

MISTRAL = real_config(MISTRAL_7B_INSTRUCT)


def test_mistral_kv_cache_is_128_kib_per_token():
    # 2 (K, V) x 32 layers x 8 key/value heads x 128 dims x 2 bytes
    assert kv_cache_bytes(MISTRAL, 1, 1) == 131_072
    assert kv_cache_bytes(MISTRAL, 8, 1024) == 8 * 1024 * 131_072


def test_generation_memory_adds_up():
    plan = generation_memory(
        MISTRAL, batch_size=8, seq_len=1024, adapter_params=2_097_152, embedder_params=22_713_216
    )
    assert plan["total"] == sum(v for k, v in plan.items() if k != "total")
    assert plan["adapter"] == 4 * 2_097_152  # fp32, as peft loads it
    assert plan["embedder"] == 4 * 22_713_216
    assert plan["prefill"] == 3 * 8 * 1024 * MISTRAL.intermediate_size * 2
    training = estimate_memory(
        MISTRAL, method="qlora", trainable_params=2_097_152, unquantized_weight_bytes=2
    )
    assert all(plan[part] == training[part] for part in INFERENCE_PARTS)
    assert 3.5 * 2**30 < plan["weights"] < 4 * 2**30  # 4-bit layers, fp16 embeddings and head
    assert fits_t4(plan)


def test_inference_needs_less_than_training():
    training = estimate_memory(
        MISTRAL, method="qlora", trainable_params=2_097_152, batch_size=4, seq_len=512
    )
    answering = generation_memory(MISTRAL, batch_size=4, seq_len=512, adapter_params=2_097_152)
    assert answering["total"] < training["total"]
    assert generation_memory(MISTRAL, batch_size=1, seq_len=1)["embedder"] == 0
