import math

import pytest

from helpers import scaling
from helpers.memory import estimate_memory, shard_estimate


def test_shapes_give_the_published_parameter_counts():
    # Llama 2's model cards: 6.74B and 69.0B parameters (6,738,415,616 and 68,976,648,192
    # in the checkpoints).
    assert scaling.shape_params(scaling.MODEL_SHAPES["7B"])[0] == 6_738_415_616
    assert scaling.shape_params(scaling.MODEL_SHAPES["70B"])[0] == 68_976_648_192


def test_attention_lora_sizes_count_a_and_b_of_four_projections():
    shape = {"hidden": 8, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 16}
    sizes = scaling.attention_lora_sizes(shape, r=2)
    # q, o: 2*8 + 8*2; k, v map 8 -> 4: 2*8 + 4*2; two layers
    assert sum(sizes) == 2 * (2 * (16 + 16) + 2 * (16 + 8)) and len(sizes) == 16


def test_per_gpu_keeps_step_counters_and_quant_constants_whole():
    est = {
        "weights": 1000,
        "quantization_constants": 100,
        "adapter": 40,
        "gradients": 40,
        "optimizer_states": 88,
        "activations": 7,
        "temporaries": 3,
    }
    est["total"] = sum(est.values())
    # 88 = 2 * 40 (moments) + 2 tensors * 4 bytes (step counters)
    out = scaling.per_gpu(est, 2, 3, trainable_tensors=2)
    assert out["optimizer_states"] == 40 + 8
    assert out["quantization_constants"] == 100 and out["weights"] == 500
    assert out["activations"] == 7 and out["total"] == sum(
        v for k, v in out.items() if k != "total"
    )
    plain = scaling.per_gpu(est, 2, 3, shard_quant_constants=True)
    assert plain == shard_estimate(est, 2, 3)  # without corrections: notebook 01's split


def test_ddp_is_one_gpu_per_process():
    est = scaling.plan_estimate("7B", "qlora")
    assert scaling.per_gpu(est, 8, 0, trainable_tensors=256) == est


def test_plan_estimate_uses_notebook_01s_estimator():
    shape = scaling.MODEL_SHAPES["13B"]
    total, unquantized = scaling.shape_params(shape)
    expected = estimate_memory(
        total,
        "qlora",
        trainable_tensor_sizes=scaling.attention_lora_sizes(shape),
        unquantized_params=unquantized,
        batch_size=1,
        seq_len=1024,
        hidden_size=5120,
        num_layers=40,
        num_heads=40,
        vocab_size=32000,
    )
    assert scaling.plan_estimate("13B", "qlora") == expected


def test_cheapest_fit_prefers_fewer_gpus_then_less_sharding():
    est = scaling.plan_estimate("7B", "qlora")
    assert scaling.cheapest_fit(est, 16) == (1, 0)
    full = scaling.plan_estimate("7B", "full_mixed")
    fit = scaling.cheapest_fit(full, 80)
    assert fit is not None and fit[0] > 1
    n, stage = fit
    need = scaling.per_gpu(full, n, stage)["total"]
    assert need <= scaling.usable_bytes(80)
    assert scaling.cheapest_fit(scaling.plan_estimate("70B", "full_mixed"), 16) is None


def test_when_to_use_what_has_a_cell_per_model_method_and_gpu():
    rows = scaling.when_to_use_what()
    assert len(rows) == 4 * 3
    assert {"16 GiB", "24 GiB", "40 GiB", "80 GiB"} <= set(rows[0])
    qlora_7b = next(r for r in rows if r["model"] == "7B" and r["method"] == "qlora")
    assert qlora_7b["16 GiB"] == "1 GPU"


def test_communication_volumes_of_the_zero_paper():
    w, g = 1000.0, 100.0
    assert scaling.communication_bytes(0, 1, weight_bytes=w, gradient_bytes=g) == 0
    assert scaling.communication_bytes(0, 2, weight_bytes=w, gradient_bytes=g) == 100
    assert scaling.communication_bytes(2, 4, weight_bytes=w, gradient_bytes=g) == 150
    # full fine-tuning (W = G): ZeRO-3 moves 1.5 times what DDP moves
    ddp = scaling.communication_bytes(0, 8, weight_bytes=g, gradient_bytes=g)
    zero3 = scaling.communication_bytes(3, 8, weight_bytes=g, gradient_bytes=g)
    assert math.isclose(zero3 / ddp, 1.5)
    with pytest.raises(ValueError):
        scaling.communication_bytes(5, 2, weight_bytes=w, gradient_bytes=g)


def test_step_flops_and_scaling_estimate():
    assert scaling.step_flops(10, 3, full=True, gradient_checkpointing=False) == 6 * 10 * 3
    assert scaling.step_flops(10, 3, full=False) == 6 * 10 * 3
    est = scaling.scaling_estimate(
        params=10**9, tokens_per_gpu=1000, full=False, comm_bytes=0.0, bandwidth=1e9
    )
    assert est["comm_s"] == 0 and est["efficiency"] == 1.0
    slow = scaling.scaling_estimate(
        params=10**9, tokens_per_gpu=1000, full=False, comm_bytes=1e9, bandwidth=1e9
    )
    assert slow["comm_s"] == 1.0 and 0 < slow["efficiency"] < 1
