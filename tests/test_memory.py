"""Tests of helpers.memory: the estimator against hand arithmetic and against the accountant."""

from __future__ import annotations

import math

import bitsandbytes as bnb
import pytest
import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

from helpers.architectures import (
    MISTRAL_7B_INSTRUCT,
    PHI_1_5,
    PHI_2,
    count_parameters,
    meta_model,
    real_config,
)
from helpers.memory import (
    COMPONENTS,
    COURSE_PLANS,
    GIB,
    GPU_80GB_BYTES,
    OPTIMIZER_8BIT_QMAP_BYTES,
    T4_MEMORY_BYTES,
    T4_TOTAL_BYTES,
    activation_memory,
    assumptions,
    estimate_memory,
    fits_t4,
    measure_memory,
    model_tensors,
    optimizer_memory,
    shard_estimate,
    weights_memory,
)
from helpers.standins import build_standin

STATE_KEYS = ("weights", "quantization_constants", "adapter", "gradients", "optimizer_states")


# --- the seed arithmetic ------------------------------------------------------------------


def test_ten_billion_full_mixed_is_160_gb():
    est = estimate_memory(10_000_000_000, "full_mixed", optimizer="adamw")
    assert est["weights"] == 20 * 10**9  # fp16 weights
    assert est["gradients"] == 20 * 10**9  # fp16 gradients
    assert est["optimizer_states"] == 120 * 10**9  # fp32 master + two fp32 moments
    assert est["total"] == 160 * 10**9
    assert est["total"] / 10_000_000_000 == 16


@pytest.mark.parametrize("params", [1_000, 7_241_732_096, 10_000_000_000])
def test_full_methods_cost_16_bytes_per_parameter(params):
    for method in ("full_fp32", "full_mixed"):
        est = estimate_memory(params, method)
        model_states = est["weights"] + est["gradients"] + est["optimizer_states"]
        assert model_states == 16 * params
        assert est["total"] == model_states  # no shape given: no activations


def test_total_is_the_sum_of_the_components():
    est = estimate_memory(real_config(PHI_2), "qlora", trainable_params=1_000_000, seq_len=256)
    assert set(est) == set(COMPONENTS) | {"total"}
    assert est["total"] == sum(est[k] for k in COMPONENTS)
    assert all(isinstance(v, int) and v >= 0 for v in est.values())


def test_lora_on_a_count_is_16_bit_base_plus_16_bytes_per_adapter_parameter():
    est = estimate_memory(10_000_000_000, "lora", trainable_params=5_000_000)
    assert est["weights"] == 2 * 10_000_000_000
    assert est["adapter"] == 4 * 5_000_000
    assert est["gradients"] == 4 * 5_000_000
    assert est["optimizer_states"] == 8 * 5_000_000
    # the popular "~40 GB" assumes fp32 frozen weights
    fp32 = estimate_memory(10_000_000_000, "lora", trainable_params=5_000_000, weight_bytes=4)
    assert fp32["weights"] == 40 * 10**9


def test_qlora_rates_on_a_count():
    n = 64 * 256 * 1000  # whole blocks at both levels
    dq = estimate_memory(n, "qlora", double_quant=True)
    single = estimate_memory(n, "qlora", double_quant=False)
    assert dq["weights"] == single["weights"] == n // 2  # 4 bits per weight
    # fp32 absmax per 64 weights: 32/64 = 0.5 bit per weight
    assert single["quantization_constants"] * 8 / n == pytest.approx(0.5)
    # 8-bit absmax per 64 weights, fp32 absmax per 256 of those: 8/64 + 32/(64*256) bits
    assert dq["quantization_constants"] * 8 / n == pytest.approx(8 / 64 + 32 / (64 * 256))
    assert dq["quantization_constants"] * 8 / n == pytest.approx(0.127, abs=5e-4)
    kept = estimate_memory(n, "qlora", unquantized_params=1000, unquantized_weight_bytes=2)
    assert kept["weights"] == (n - 1000) // 2 + 2 * 1000


def test_optimizer_states_by_optimizer_and_tensor_size():
    adamw = estimate_memory(1000, "lora", trainable_tensor_sizes=[600, 400], optimizer="adamw")
    assert adamw["optimizer_states"] == 8 * 1000 + 2 * 4  # moments + a step scalar per tensor
    small = estimate_memory(
        1000, "lora", trainable_tensor_sizes=[4095], optimizer="paged_adamw_8bit"
    )
    assert small["optimizer_states"] == 8 * 4095  # below min_8bit_size: fp32 states
    big = estimate_memory(1000, "lora", trainable_tensor_sizes=[4096], optimizer="paged_adamw_8bit")
    assert big["optimizer_states"] == 2 * 4096 + 2 * 4 * 16 + OPTIMIZER_8BIT_QMAP_BYTES
    count = estimate_memory(1000, "lora", trainable_params=256_000, optimizer="paged_adamw_8bit")
    assert count["optimizer_states"] == 2 * 256_000 + 2 * 4 * 1000
    with pytest.raises(ValueError):
        estimate_memory(1000, "lora", trainable_params=5, trainable_tensor_sizes=[4])


def test_every_assumption_is_named_with_a_default_and_documented():
    rows = assumptions()
    keywords = [name for name, _, _ in rows]
    assert "min_8bit_size" in keywords and "unquantized_weight_bytes" in keywords
    assert len(keywords) == len(set(keywords)) >= 25
    for name, _, description in rows:
        assert len(description) > 20, f"{name} has no description"
    defaults = {name: default for name, default, _ in rows}
    assert defaults["quant_block_size"] == 64 and defaults["optimizer"] == "adamw"
    assert "4096" in {n: d for n, _, d in rows}["min_8bit_size"]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        estimate_memory(1000, "full_fp16")
    with pytest.raises(ValueError):
        estimate_memory(1000, "lora", optimizer="sgd")
    with pytest.raises(TypeError):
        estimate_memory("mistral", "lora")


# --- from a config ----------------------------------------------------------------------


def test_model_tensors_match_the_meta_model():
    for model_id in (MISTRAL_7B_INSTRUCT, PHI_2):
        rows = model_tensors(real_config(model_id))
        total, _ = count_parameters(meta_model(model_id))
        assert sum(n for _, _, n in rows) == total
        kinds = {kind for _, kind, _ in rows}
        assert kinds == (
            {"linear_weight", "other"}
            if model_id == MISTRAL_7B_INSTRUCT
            else {"linear_weight", "linear_bias", "other"}
        )


def test_qlora_keeps_embeddings_lm_head_and_norms_unquantized():
    config = real_config(MISTRAL_7B_INSTRUCT)
    h, v, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    kept = 2 * v * h + (2 * layers + 1) * h  # embed_tokens, lm_head, two norms a layer + final
    total, _ = count_parameters(meta_model(MISTRAL_7B_INSTRUCT))
    quantized = total - kept
    est = estimate_memory(config, "qlora")
    assert est["weights"] == quantized // 2 + 4 * kept  # kept ones in fp32 after k-bit prep
    at_load = estimate_memory(config, "qlora", unquantized_weight_bytes=2)
    assert est["weights"] - at_load["weights"] == 2 * kept
    everything = estimate_memory(config, "qlora", keep_unquantized=())
    assert est["weights"] - everything["weights"] == 4 * v * h - v * h // 2
    # constants: one uint8 absmax per 64 weights dominates
    assert est["quantization_constants"] == pytest.approx(quantized / 64, rel=0.02)


def test_activations_follow_batch_sequence_and_checkpointing():
    config = real_config(PHI_1_5)
    base = estimate_memory(config, "qlora", batch_size=1, seq_len=512)["activations"]
    double = estimate_memory(config, "qlora", batch_size=2, seq_len=512)["activations"]
    assert double == pytest.approx(2 * base, rel=1e-9)
    no_ckpt = estimate_memory(config, "qlora", seq_len=512, gradient_checkpointing=False)
    h, a, layers = config.hidden_size, config.num_attention_heads, config.num_hidden_layers
    logits = 512 * config.vocab_size * 12  # fp16 logits, fp32 copy, log-softmax, gradient
    assert no_ckpt["activations"] == 512 * h * 34 * layers + logits  # every layer, 34 sbh
    eager = estimate_memory(config, "qlora", seq_len=512, eager_attention=True)["activations"]
    assert eager - base == 5 * a * 512 * 512  # one recomputed layer keeps its scores
    # checkpointed: layer inputs (fp32) + one layer + logits
    expected = 512 * h * (4 * layers + 34) + logits
    assert base == expected
    # a bare count has no shape, unless one is given
    assert estimate_memory(10**9, "qlora")["activations"] == 0
    shaped = estimate_memory(
        10**9,
        "qlora",
        hidden_size=h,
        num_layers=layers,
        num_heads=a,
        vocab_size=config.vocab_size,
        seq_len=512,
    )
    assert shaped["activations"] == base


# --- the accountant ----------------------------------------------------------------------


def test_accountant_counts_a_linear_layer_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.Linear(20, 3))
    model[1].weight = torch.nn.Parameter(model[1].weight.detach().clone())
    params = 10 * 20 + 20 + 20 * 3 + 3
    before = measure_memory(model)
    assert before["weights"] == 4 * params and before["gradients"] == 0
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 10)).sum().backward()
    optimizer.step()
    after = measure_memory(model, optimizer)
    assert after["gradients"] == 4 * params
    assert after["optimizer_states"] == 8 * params + 4 * 4  # 4 tensors, each a step scalar
    assert after["total"] == after["weights"] + after["gradients"] + after["optimizer_states"]
    assert "peak_allocated" not in after  # only on CUDA


def test_accountant_counts_shared_storage_once():
    embedding = torch.nn.Embedding(50, 8)
    head = torch.nn.Linear(8, 50, bias=False)
    head.weight = embedding.weight  # tied
    model = torch.nn.ModuleDict({"embed": embedding, "head": head})
    assert measure_memory(model)["weights"] == 50 * 8 * 4


def _train_step(model, optimizer, vocab_size):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (2, 16), generator=generator)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()


def _make_optimizer(name, params):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4)
    return bnb.optim.PagedAdamW8bit(params, lr=1e-4)


def _full_mixed_step(model, vocab_size):
    """ZeRO-style mixed precision by hand: fp16 model and gradients, fp32 master + Adam."""
    masters = [p.detach().float().requires_grad_() for p in model.parameters()]
    optimizer = torch.optim.AdamW(masters, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (2, 16), generator=generator)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    for master, p in zip(masters, model.parameters(), strict=True):
        master.grad = p.grad.float()
    optimizer.step()
    for master, p in zip(masters, model.parameters(), strict=True):
        p.data.copy_(master.data)
        master.grad = None  # the fp32 gradient is a transient; fp16 gradients stay
    return optimizer


CASES = [
    ("full_fp32", "adamw", None, None),
    ("full_fp32", "paged_adamw_8bit", None, None),
    ("full_mixed", "adamw", None, None),
    ("lora", "adamw", 8, None),
    ("lora", "paged_adamw_8bit", 32, None),
    ("qlora", "paged_adamw_8bit", 8, True),  # r=8: LoRA tensors below 4096, fp32 states
    ("qlora", "paged_adamw_8bit", 32, True),  # r=32: 8-bit states
    ("qlora", "adamw", 16, False),
]


@pytest.mark.parametrize("model_id", [MISTRAL_7B_INSTRUCT, PHI_2])
@pytest.mark.parametrize(("method", "optimizer_name", "rank", "double_quant"), CASES)
def test_estimate_agrees_with_the_accountant(model_id, method, optimizer_name, rank, double_quant):
    path = build_standin(model_id)
    config = AutoConfig.from_pretrained(path)
    targets = ["q_proj", "v_proj"] if model_id == MISTRAL_7B_INSTRUCT else ["q_proj", "dense"]
    torch.manual_seed(0)
    if method == "qlora":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=double_quant,
            bnb_4bit_compute_dtype=torch.float16,
        )
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=quantization, dtype=torch.float16
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    else:
        dtype = torch.float32 if method == "full_fp32" else torch.float16
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if rank is not None:
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=16, target_modules=targets))
    trainable = [p for p in model.parameters() if p.requires_grad]
    if method == "full_mixed":
        optimizer = _full_mixed_step(model, config.vocab_size)
    else:
        optimizer = _make_optimizer(optimizer_name, trainable)
        _train_step(model, optimizer, config.vocab_size)

    measured = measure_memory(model, optimizer)
    estimate = estimate_memory(
        config,
        method,
        optimizer=optimizer_name,
        double_quant=bool(double_quant),
        trainable_params=sum(p.numel() for p in trainable),
        trainable_tensor_sizes=[p.numel() for p in trainable] if rank else None,
    )
    for key in STATE_KEYS:
        if measured[key] == 0:
            assert estimate[key] == 0, key
        else:
            assert estimate[key] == pytest.approx(measured[key], rel=0.01), key
    assert measured["weights"] > 0 and measured["gradients"] > 0
    assert measured["optimizer_states"] > 0
    if method == "qlora":
        assert measured["quantization_constants"] > 0 and measured["adapter"] > 0


def test_four_bit_storage_halves_the_element_count():
    path = build_standin(PHI_2)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16
    )
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quantization, dtype=torch.float16
    )
    layer = model.model.layers[0].mlp.fc1
    assert layer.weight.dtype == torch.uint8
    assert layer.weight.numel() == layer.in_features * layer.out_features // 2
    measured = measure_memory(model)
    estimate = estimate_memory(
        AutoConfig.from_pretrained(path), "qlora", double_quant=False, unquantized_weight_bytes=2
    )  # no k-bit preparation: 16-bit
    assert measured["weights"] == estimate["weights"]
    assert measured["quantization_constants"] == estimate["quantization_constants"]


# --- the course's plans on a T4 -----------------------------------------------------------


def _lora_trainable(model_id: str, lora: dict) -> tuple[list[int], int]:
    """Trainable tensor sizes of the plan's LoRA on the meta model, and r·(in+out) by hand."""
    model = meta_model(model_id)
    by_hand = sum(
        lora["r"] * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in lora["target_modules"]
    )
    peft_model = get_peft_model(model, LoraConfig(**lora))
    return [p.numel() for p in peft_model.parameters() if p.requires_grad], by_hand


def test_course_plans_name_real_models_and_modules():
    assert set(COURSE_PLANS) == {"04", "05", "06"}
    assert [p["model_id"] for p in COURSE_PLANS.values()] == [MISTRAL_7B_INSTRUCT, PHI_2, PHI_1_5]
    config = real_config(MISTRAL_7B_INSTRUCT)
    sizes, by_hand = _lora_trainable(MISTRAL_7B_INSTRUCT, COURSE_PLANS["04"]["lora"])
    assert sum(sizes) == by_hand == 8 * 2 * config.hidden_size * config.num_hidden_layers
    config = real_config(PHI_2)
    sizes, by_hand = _lora_trainable(PHI_2, COURSE_PLANS["05"]["lora"])
    assert sum(sizes) == by_hand == 32 * 2 * config.hidden_size * 4 * config.num_hidden_layers


@pytest.mark.parametrize("notebook", sorted(COURSE_PLANS))
def test_every_course_plan_fits_a_t4(notebook):
    plan = COURSE_PLANS[notebook]
    sizes, by_hand = _lora_trainable(plan["model_id"], plan["lora"])
    assert sum(sizes) == by_hand
    estimate = estimate_memory(
        real_config(plan["model_id"]),
        trainable_params=sum(sizes),
        trainable_tensor_sizes=sizes,
        **plan["memory"],
    )
    assert fits_t4(estimate), (
        f"notebook {notebook}'s FULL plan needs {estimate['total'] / GIB:.1f} GiB, more than a "
        f"T4's {T4_MEMORY_BYTES / GIB:.1f} GiB with 10% headroom"
    )
    # the same model could not be fully fine-tuned there
    assert not fits_t4(estimate_memory(real_config(plan["model_id"]), "full_mixed"))


def test_fits_t4_threshold():
    assert fits_t4({"total": int(0.9 * T4_MEMORY_BYTES)})
    assert not fits_t4({"total": int(0.9 * T4_MEMORY_BYTES) + 2})
    assert fits_t4({"total": T4_MEMORY_BYTES}, headroom=0)
    big = estimate_memory(
        real_config(MISTRAL_7B_INSTRUCT),
        "qlora",
        trainable_params=2_097_152,
        batch_size=16,
        seq_len=2048,
        gradient_checkpointing=False,
    )
    assert not fits_t4(big)


# --- past one GPU ------------------------------------------------------------------------


def test_zero_stages_shard_what_they_should():
    est = estimate_memory(10_000_000_000, "full_mixed")
    assert shard_estimate(est, 1, 3) == est
    stage1 = shard_estimate(est, 4, 1)
    assert stage1["optimizer_states"] == 30 * 10**9 and stage1["gradients"] == 20 * 10**9
    stage2 = shard_estimate(est, 4, 2)
    assert stage2["gradients"] == 5 * 10**9 and stage2["weights"] == 20 * 10**9
    stage3 = shard_estimate(est, 8, 3)
    assert stage3["total"] == 20 * 10**9  # 160 GB over 8 devices
    assert stage3["total"] == sum(v for k, v in stage3.items() if k != "total")
    with pytest.raises(ValueError):
        shard_estimate(est, 0, 1)
    assert math.isclose(shard_estimate(est, 2, 0)["total"], est["total"])


# --- the named parts ---------------------------------------------------------------------


def test_device_memory_is_counted_in_gib():
    assert GIB == 2**30
    assert GPU_80GB_BYTES == 80 * 2**30 == 85_899_345_920  # an "80 GB" GPU: 85.9e9 bytes
    assert T4_TOTAL_BYTES == 15_110 * 2**20  # what CUDA reports for a T4


def test_activation_parts_add_up_and_name_the_logits():
    config = real_config(MISTRAL_7B_INSTRUCT)
    h, layers, v = config.hidden_size, config.num_hidden_layers, config.vocab_size
    shape = {"hidden_size": h, "num_layers": layers, "num_heads": 32, "vocab_size": v}
    parts = activation_memory(**shape, batch_size=4, seq_len=512, hidden_state_bytes=4)
    tokens = 4 * 512
    assert parts == {
        "layer_inputs": layers * tokens * h * 4,
        "layers": tokens * h * 34,
        "logits": tokens * v * 12,
    }
    est = estimate_memory(config, "qlora", batch_size=4, seq_len=512)
    assert est["activations"] == sum(parts.values())
    # without checkpointing no layer inputs are kept apart: every layer keeps everything
    no_ckpt = activation_memory(**shape, batch_size=4, seq_len=512, gradient_checkpointing=False)
    assert no_ckpt["layer_inputs"] == 0 and no_ckpt["layers"] == layers * tokens * h * 34


def test_fp32_activations_double_the_layer_factor():
    shape = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "vocab_size": 10}
    half = activation_memory(**shape, batch_size=1, seq_len=8, activation_bytes=2)
    full = activation_memory(**shape, batch_size=1, seq_len=8, activation_bytes=4)
    assert full["layers"] == 2 * half["layers"] == 2 * 8 * 64 * 34
    config = real_config(PHI_1_5)
    fp32 = estimate_memory(config, "full_fp32", seq_len=128, gradient_checkpointing=False)
    mixed = estimate_memory(config, "full_mixed", seq_len=128, gradient_checkpointing=False)
    logits = 128 * config.vocab_size * 12
    assert fp32["activations"] - logits == 2 * (mixed["activations"] - logits)


def test_qlora_counts_the_fp16_copy_autocast_makes_of_the_fp32_lm_head():
    config = real_config(MISTRAL_7B_INSTRUCT)
    est = estimate_memory(config, "qlora")
    assert est["lm_head_copy"] == 2 * config.vocab_size * config.hidden_size
    assert round(est["lm_head_copy"] / 1e9, 2) == 0.26  # the figure issue 13 quotes
    # a 16-bit lm_head (no k-bit preparation, or plain LoRA) needs no copy
    assert estimate_memory(config, "qlora", unquantized_weight_bytes=2)["lm_head_copy"] == 0
    assert estimate_memory(config, "lora")["lm_head_copy"] == 0
    assert estimate_memory(10**9, "qlora")["lm_head_copy"] == 0  # no shape, no copy


def test_frozen_weights_have_no_gradients():
    """The error behind the popular "LoRA needs ~40 GB": gradients for frozen weights."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    model[0].requires_grad_(False)  # frozen, as LoRA's base
    model(torch.randn(2, 8)).sum().backward()
    assert model[0].weight.grad is None and model[1].weight.grad is not None
    assert measure_memory(model)["gradients"] == 4 * (8 * 8 + 8)


def test_the_component_functions_on_their_own():
    assert weights_memory(None, 1000, "lora", weight_bytes=2) == (2000, 0, 0)
    n = 64 * 256
    weights, constants, largest = weights_memory(None, n, "qlora", weight_bytes=0.5)
    assert (weights, largest) == (n // 2, 0) and constants == n // 64 + 4  # 8-bit + fp32/256
    config = real_config(PHI_2)
    _, _, largest = weights_memory(model_tensors(config), 0, "qlora", weight_bytes=0.5)
    assert largest == config.hidden_size * config.intermediate_size  # fc1/fc2, the widest
    assert optimizer_memory([10, 20], 30, "adamw") == 8 * 30 + 2 * 4
    assert optimizer_memory(None, 30, "adamw", master_weight_bytes=4) == 12 * 30
