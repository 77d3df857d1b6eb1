"""When to use what: per-GPU memory and communication of DDP, ZeRO-2 and FSDP/ZeRO-3.

Notebook 08's table and scaling estimates. Memory comes from notebook 01's estimator
(:func:`helpers.memory.estimate_memory`) and its ZeRO split
(:func:`helpers.memory.shard_estimate`); this module adds the shapes of four open models,
the two corrections a sharded *LoRA* run needs (below), and the bytes each strategy moves
between GPUs per optimizer step.

Corrections to notebook 01's ZeRO split, both measured in notebook 08:

- AdamW's step counter (one fp32 scalar per trainable tensor) is not sharded: every rank
  keeps its own. ``shard_estimate`` divides it by N with the moments.
- bitsandbytes' quantization constants (``quant_state``) are not parameters, so FSDP
  cannot shard them: every rank keeps all of them. ``shard_estimate`` divides them by N.

Communication uses ring collectives: an all-reduce of B bytes sends 2(N-1)/N·B bytes per
GPU, an all-gather or reduce-scatter (N-1)/N·B (Patarasuk & Yuan 2009; the volumes of
Rajbhandari et al. 2020, section 7).
"""

from __future__ import annotations

import math
from typing import Any

from helpers.memory import CUDA_CONTEXT_BYTES, estimate_memory, shard_estimate

GIB = 2**30

# Shapes from each model's config.json on the Hugging Face Hub (meta-llama/Llama-2-7b-hf,
# meta-llama/Llama-2-13b-hf, codellama/CodeLlama-34b-hf, meta-llama/Llama-2-70b-hf).
MODEL_SHAPES: dict[str, dict[str, int]] = {
    "7B": {"hidden": 4096, "layers": 32, "heads": 32, "kv_heads": 32, "ffn": 11008},
    "13B": {"hidden": 5120, "layers": 40, "heads": 40, "kv_heads": 40, "ffn": 13824},
    "34B": {"hidden": 8192, "layers": 48, "heads": 64, "kv_heads": 8, "ffn": 22016},
    "70B": {"hidden": 8192, "layers": 80, "heads": 64, "kv_heads": 8, "ffn": 28672},
}
VOCAB = 32000  # all four use Llama's 32,000-token vocabulary

# Per-direction link bandwidth, bytes per second.
INTERCONNECTS: dict[str, float] = {
    # NVIDIA T4 datasheet: PCIe Gen3 x16, 32 GB/s (both directions together)
    "PCIe 3.0 x16 (Kaggle's 2 x T4)": 16e9,
    # NVIDIA A100 datasheet: NVLink 600 GB/s (both directions together)
    "NVLink 3 (A100)": 300e9,
    # 100 and 400 Gb/s network cards between machines: bits / 8
    "100 Gb/s Ethernet (between machines)": 12.5e9,
    "400 Gb/s InfiniBand NDR (between machines)": 50e9,
}
# NVIDIA T4 datasheet: 65 TFLOPS of mixed-precision (fp16) tensor-core arithmetic.
T4_FP16_FLOPS = 65e12

STRATEGY_NAMES = {0: "DDP", 2: "ZeRO-2", 3: "FSDP / ZeRO-3"}


def shape_params(shape: dict[str, int], vocab: int = VOCAB) -> tuple[int, int]:
    """(all parameters, those bitsandbytes leaves unquantized) of a Llama-shaped model.

    A layer: q and o projections h x h, k and v h x (h·kv_heads/heads), a gated MLP of
    three h x ffn matrices, two norms of h. Plus input embeddings and output layer (untied,
    vocab x h each, both unquantized) and the final norm.
    """
    h, kv = shape["hidden"], shape["hidden"] * shape["kv_heads"] // shape["heads"]
    layer = 2 * h * h + 2 * h * kv + 3 * h * shape["ffn"] + 2 * h
    unquantized = 2 * vocab * h + h + shape["layers"] * 2 * h
    return shape["layers"] * layer + 2 * vocab * h + h, unquantized


def attention_lora_sizes(shape: dict[str, int], r: int = 16) -> list[int]:
    """Sizes of LoRA's A and B tensors on q, k, v and o of every layer, at rank ``r``."""
    h, kv = shape["hidden"], shape["hidden"] * shape["kv_heads"] // shape["heads"]
    per_layer = []
    for d_in, d_out in ((h, h), (h, kv), (h, kv), (h, h)):
        per_layer += [r * d_in, d_out * r]
    return per_layer * shape["layers"]


def plan_estimate(
    model: str, method: str, *, batch_size: int = 1, seq_len: int = 1024, r: int = 16
) -> dict[str, int]:
    """Notebook 01's estimate for one GPU, for a model of :data:`MODEL_SHAPES`.

    ``method``: ``"full_mixed"`` (full fine-tuning in mixed precision), ``"lora"`` or
    ``"qlora"`` (LoRA of rank ``r`` on the attention projections). AdamW, gradient
    checkpointing, one sequence of ``seq_len`` tokens per GPU unless told otherwise.
    """
    shape = MODEL_SHAPES[model]
    total, unquantized = shape_params(shape)
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "seq_len": seq_len,
        "hidden_size": shape["hidden"],
        "num_layers": shape["layers"],
        "num_heads": shape["heads"],
        "vocab_size": VOCAB,
    }
    if method != "full_mixed":
        kwargs["trainable_tensor_sizes"] = attention_lora_sizes(shape, r)
    if method == "qlora":
        kwargs["unquantized_params"] = unquantized
    return estimate_memory(total, method, **kwargs)


def per_gpu(
    estimate: dict[str, int],
    n_devices: int,
    stage: int,
    *,
    trainable_tensors: int = 0,
    adamw_step_bytes: int = 4,
    shard_quant_constants: bool = False,
) -> dict[str, int]:
    """Bytes per GPU under ZeRO ``stage`` over ``n_devices``, with the two corrections.

    Args:
        estimate: one GPU's :func:`helpers.memory.estimate_memory`.
        n_devices, stage: as :func:`helpers.memory.shard_estimate` (0 is DDP).
        trainable_tensors: how many tensors the optimizer updates; each rank keeps a step
            counter of ``adamw_step_bytes`` for each, unsharded.
        shard_quant_constants: whether the 4-bit quantization constants are sharded (not
            by FSDP or ZeRO-3 with bitsandbytes: they are not parameters).
    """
    out = shard_estimate(estimate, n_devices, stage)
    if stage >= 1 and trainable_tensors:
        counters = adamw_step_bytes * trainable_tensors
        sharded_moments = math.ceil((estimate["optimizer_states"] - counters) / n_devices)
        out["optimizer_states"] = sharded_moments + counters
    if stage == 3 and not shard_quant_constants:
        out["quantization_constants"] = estimate["quantization_constants"]
    out["total"] = sum(v for k, v in out.items() if k != "total")
    return out


def usable_bytes(gpu_gib: float, headroom: float = 0.1) -> float:
    """What a plan may use on a GPU of ``gpu_gib`` GiB: less the CUDA context, less 10%."""
    return (1 - headroom) * (gpu_gib * GIB - CUDA_CONTEXT_BYTES)


def cheapest_fit(
    estimate: dict[str, int],
    gpu_gib: float,
    *,
    trainable_tensors: int = 0,
    counts: tuple[int, ...] = (1, 2, 4, 8),
) -> tuple[int, int] | None:
    """The fewest GPUs, then the least sharding, whose per-GPU bytes fit; ``None`` if none.

    Returns ``(n_devices, stage)`` with stage 0 (DDP), 2 (ZeRO-2) or 3 (FSDP / ZeRO-3).
    """
    for n in counts:
        for stage in (0, 2, 3) if n > 1 else (0,):
            need = per_gpu(estimate, n, stage, trainable_tensors=trainable_tensors)["total"]
            if need <= usable_bytes(gpu_gib):
                return n, stage
    return None


def when_to_use_what(
    models: tuple[str, ...] = ("7B", "13B", "34B", "70B"),
    methods: tuple[str, ...] = ("full_mixed", "lora", "qlora"),
    gpus_gib: tuple[int, ...] = (16, 24, 40, 80),
    **plan: Any,
) -> list[dict[str, str]]:
    """One row per model and method; per GPU size, the cheapest plan that fits.

    Cells read like ``"2 x ZeRO-2"`` or ``"none of 1-8"``; ``plan`` goes to
    :func:`plan_estimate` (batch_size, seq_len, r).
    """
    rows = []
    for model in models:
        for method in methods:
            estimate = plan_estimate(model, method, **plan)
            tensors = 0
            if method != "full_mixed":
                tensors = len(attention_lora_sizes(MODEL_SHAPES[model], plan.get("r", 16)))
            row = {
                "model": model,
                "method": method,
                "GiB on 1 GPU": f"{estimate['total'] / GIB:.1f}",
            }
            for gib in gpus_gib:
                fit = cheapest_fit(estimate, gib, trainable_tensors=tensors)
                cell = "none of 1-8" if fit is None else f"{fit[0]} x {STRATEGY_NAMES[fit[1]]}"
                row[f"{gib} GiB"] = "1 GPU" if fit == (1, 0) else cell
            rows.append(row)
    return rows


def communication_bytes(
    stage: int, n_devices: int, *, weight_bytes: float, gradient_bytes: float
) -> float:
    """Bytes each GPU sends per optimizer step (ring collectives).

    - DDP (0): all-reduce the gradients: 2(N-1)/N · G.
    - ZeRO-2 (2): reduce-scatter the gradients, all-gather the updated trainable weights,
      which for the same precision is the same volume as DDP: 2(N-1)/N · G.
    - FSDP / ZeRO-3 (3): all-gather the weights before forward and again before backward
      (they are freed in between), reduce-scatter the gradients: (N-1)/N · (2W + G).

    ``weight_bytes`` is what FSDP gathers (for LoRA: the whole frozen base, packed if 4-bit,
    plus the adapter); ``gradient_bytes`` the gradients (for LoRA: the adapter's only).
    """
    if n_devices < 2:
        return 0.0
    share = (n_devices - 1) / n_devices
    if stage in (0, 1, 2):
        return 2 * share * gradient_bytes
    if stage == 3:
        return share * (2 * weight_bytes + gradient_bytes)
    raise ValueError("stage must be 0-3")


def step_flops(
    params: int, tokens: int, *, full: bool, gradient_checkpointing: bool = True
) -> float:
    """Arithmetic of one training step: 2·P per token forward, 2·P backward for the
    activations' gradients, 2·P more for the weights' gradients when all weights train
    (Kaplan et al. 2020's 6·P), and one more forward under gradient checkpointing."""
    per_token = 2 + 2 + (2 if full else 0) + (2 if gradient_checkpointing else 0)
    return per_token * params * tokens


def scaling_estimate(
    *,
    params: int,
    tokens_per_gpu: int,
    full: bool,
    comm_bytes: float,
    bandwidth: float,
    flops: float = T4_FP16_FLOPS,
    utilization: float = 0.3,
) -> dict[str, float]:
    """Seconds per step of compute and of communication, and the scaling efficiency.

    ``utilization`` is the share of the GPU's peak arithmetic a training step reaches (an
    assumption; measure yours: FULL mode prints the measured step time). Communication is
    assumed not to overlap compute (a pessimistic bound); efficiency = compute / (compute +
    communication): 1.0 means N GPUs are N times as fast as one.
    """
    compute = step_flops(params, tokens_per_gpu, full=full) / (flops * utilization)
    comm = comm_bytes / bandwidth
    return {"compute_s": compute, "comm_s": comm, "efficiency": compute / (compute + comm)}
