"""How much GPU memory fine-tuning needs: an estimator, and an exact accountant to check it.

:func:`estimate_memory` predicts the bytes of every component of training memory from a
parameter count or a transformers config, for four methods:

========== =============================================================================
full_fp32  every weight trainable, all in fp32: 4 (weights) + 4 (gradients) + 8 (AdamW's
           two moments) = 16 bytes per parameter.
full_mixed mixed precision as in the ZeRO paper (Rajbhandari et al. 2020, section 3.1):
           2 (fp16 weights) + 2 (fp16 gradients) + 4 (fp32 master weights) + 8 (Adam's
           moments) = 16 bytes per parameter; the paper counts the master copy with the
           optimizer states (K = 12).
lora       a frozen 16-bit base (2 bytes per parameter) plus small trainable adapters.
qlora      a frozen base stored in 4-bit NF4 (0.5 byte per parameter) plus its quantization
           constants (Dettmers et al. 2023, section 3), plus the adapters.
========== =============================================================================

Every assumption is a keyword argument with a default and a line of documentation; the
defaults describe the course's own pipeline (transformers + peft + bitsandbytes on a T4).
Each component has its own function (:func:`weights_memory`, :func:`optimizer_memory`,
:func:`activation_memory`), and :func:`estimate_memory` adds them up. The prediction is for
``torch.cuda.max_memory_allocated``, not for what ``nvidia-smi`` shows. Device memory is
counted in GiB (:data:`GIB`).

:func:`measure_memory` is the accountant: given a real model (and optimizer) after a
training step, it adds up the bytes the tensors actually hold, so that the estimate can
be checked, component by component. On CUDA it also reads the peak allocated memory.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig

METHODS = ("full_fp32", "full_mixed", "lora", "qlora")
OPTIMIZERS = ("adamw", "paged_adamw_8bit")
COMPONENTS = (
    "weights",
    "quantization_constants",
    "adapter",
    "gradients",
    "optimizer_states",
    "activations",
    "lm_head_copy",
    "temporaries",
)

# Device memory is counted in GiB (2**30 bytes), the unit GPUs are sold and reported in: an
# "80 GB" A100 or H100 has 80 GiB (85.9e9 bytes); a "16 GB" T4 has 16 GiB, of which CUDA
# reports 15,110 MiB (deviceQuery; ECC keeps the rest). The CUDA context (driver, kernels,
# cuBLAS workspace) takes its share before PyTorch allocates a byte; what remains is what a
# plan may use.
GIB = 2**30
GPU_80GB_BYTES = 80 * GIB
T4_TOTAL_BYTES = 15_110 * 2**20
CUDA_CONTEXT_BYTES = 500_000_000
T4_MEMORY_BYTES = T4_TOTAL_BYTES - CUDA_CONTEXT_BYTES

# Facts of the storage formats (not assumptions): bitsandbytes keeps, for every 4-bit
# tensor, its 16 NF4 levels in fp32; with double quantization also the 256-value 8-bit map
# of the second quantization and an fp32 offset. Its 8-bit optimizers share two 256-value
# fp32 maps (signed and unsigned) between all tensors.
NF4_CODE_BYTES = 16 * 4
DOUBLE_QUANT_CODE_BYTES = 256 * 4 + 4
OPTIMIZER_8BIT_QMAP_BYTES = 2 * 256 * 4


# ---------------------------------------------------------------------------------------
# The model's tensors, from its config
# ---------------------------------------------------------------------------------------


_INVENTORIES: dict[str, tuple[tuple[str, str, int], ...]] = {}


def _inventory(config: PretrainedConfig) -> tuple[tuple[str, str, int], ...]:
    key = config.to_json_string(use_diff=False)
    if key not in _INVENTORIES:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        kinds: dict[int, str] = {}
        for module in model.modules():
            if type(module) is torch.nn.Linear:
                kinds[id(module.weight)] = "linear_weight"
                if module.bias is not None:
                    kinds[id(module.bias)] = "linear_bias"
        _INVENTORIES[key] = tuple(  # named_parameters lists tied weights once
            (name, kinds.get(id(p), "other"), p.numel()) for name, p in model.named_parameters()
        )
    return _INVENTORIES[key]


def model_tensors(config: PretrainedConfig) -> list[tuple[str, str, int]]:
    """The parameters of the model a config describes, built on the meta device (no memory).

    Returns ``(name, kind, numel)`` rows, where ``kind`` is ``"linear_weight"`` (the weight of
    an ``nn.Linear``: what bitsandbytes can quantize), ``"linear_bias"`` or ``"other"``
    (embeddings, norms). Tied weights appear once.
    """
    return list(_inventory(config))


def _short_name(name: str) -> str:
    parts = name.split(".")
    return parts[-2] if len(parts) > 1 else parts[0]


# ---------------------------------------------------------------------------------------
# The estimator: one function per component, then estimate_memory, which adds them up
# ---------------------------------------------------------------------------------------


def weights_memory(
    tensors: Sequence[tuple[str, str, int]] | None,
    total_params: int,
    method: str,
    *,
    weight_bytes: float,
    double_quant: bool = True,
    keep_unquantized: Sequence[str] = ("lm_head",),
    unquantized_weight_bytes: float = 4,
    quantized_bias_bytes: float = 2,
    unquantized_params: int = 0,
    quant_block_size: int = 64,
    double_quant_block_size: int = 256,
) -> tuple[int, int, int]:
    """Bytes of the model's own weights: ``(weights, quantization_constants, largest)``.

    ``largest`` is the element count of the largest 4-bit layer (0 unless ``qlora`` with a
    config), which :func:`estimate_memory` needs for the dequantization buffer. With
    ``tensors`` (rows of :func:`model_tensors`) every tensor is counted by its kind and
    size; with only ``total_params``, per-parameter rates are used. The keywords are those
    of :func:`estimate_memory`.
    """
    if method != "qlora":
        return round(total_params * weight_bytes), 0, 0
    if tensors is None:
        quantized = total_params - unquantized_params
        per_param_constants = (
            (1 + 4 / double_quant_block_size) / quant_block_size
            if double_quant
            else 4 / quant_block_size
        )
        weights = quantized * weight_bytes + unquantized_params * unquantized_weight_bytes
        return round(weights), round(quantized * per_param_constants), 0
    weights = constants = largest = 0
    quantized_layers = set()
    for name, kind, n in tensors:
        if kind == "linear_weight" and _short_name(name) not in keep_unquantized:
            packed, extra = _nf4_bytes(n, double_quant, quant_block_size, double_quant_block_size)
            weights += packed if weight_bytes == 0.5 else n * weight_bytes
            constants += extra
            largest = max(largest, n)
            quantized_layers.add(name.rsplit(".", 1)[0])
    for name, kind, n in tensors:
        if kind == "linear_weight" and _short_name(name) not in keep_unquantized:
            continue
        if kind == "linear_bias" and name.rsplit(".", 1)[0] in quantized_layers:
            weights += n * quantized_bias_bytes
        else:
            weights += n * unquantized_weight_bytes
    return round(weights), round(constants), largest


def optimizer_memory(
    sizes: Sequence[int] | None,
    total: int,
    optimizer: str,
    *,
    adam_state_bytes: float = 4,
    master_weight_bytes: float = 0,
    adamw_step_bytes: int = 4,
    min_8bit_size: int = 4096,
    optimizer_block_size: int = 256,
) -> int:
    """Bytes of optimizer states for trainable tensors of ``sizes`` (or ``total`` params).

    AdamW keeps two fp32 moments per trainable number (and a step scalar per tensor);
    bitsandbytes' 8-bit AdamW keeps two uint8 moments with one fp32 scale per block, except
    for tensors below ``min_8bit_size`` elements, which keep fp32 moments. The master
    weights of mixed precision (``master_weight_bytes``) are filed here, as in the ZeRO
    paper. Paging (``paged_adamw_8bit``) moves where the states live, not their size.
    """
    if sizes is None:  # only a count is known: per-parameter rates, no per-tensor constants
        if optimizer == "adamw":
            per_param = 2 * adam_state_bytes
        else:
            per_param = 2 + 2 * 4 / optimizer_block_size
        return round(total * (per_param + master_weight_bytes))
    out = 0.0
    any_8bit = False
    for n in sizes:
        out += n * master_weight_bytes
        if optimizer == "adamw":
            out += 2 * n * adam_state_bytes + adamw_step_bytes
        elif n < min_8bit_size:  # bitsandbytes keeps small tensors' states in fp32
            out += 2 * n * 4
        else:  # two uint8 states, each with one fp32 absmax per block
            out += 2 * n + 2 * 4 * math.ceil(n / optimizer_block_size)
            any_8bit = True
    if any_8bit:
        out += OPTIMIZER_8BIT_QMAP_BYTES
    return round(out)


def _nf4_bytes(n: int, double_quant: bool, block: int, block2: int) -> tuple[int, int]:
    """(packed weight bytes, quantization-constant bytes) of one 4-bit tensor of n values."""
    blocks = math.ceil(n / block)
    if double_quant:  # absmax in 8 bits, plus one fp32 absmax per block2 of those
        constants = blocks + 4 * math.ceil(blocks / block2) + NF4_CODE_BYTES
        constants += DOUBLE_QUANT_CODE_BYTES
    else:
        constants = 4 * blocks + NF4_CODE_BYTES
    return (n + 1) // 2, constants


def activation_memory(
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    vocab_size: int,
    batch_size: int,
    seq_len: int,
    gradient_checkpointing: bool = True,
    hidden_state_bytes: float = 2,
    activation_bytes: float = 2,
    layer_activation_factor: float = 34,
    attention_score_factor: float = 5,
    eager_attention: bool = False,
    logit_bytes: float = 12,
) -> dict[str, int]:
    """Activations held at the peak of a training step, in three parts.

    Returns ``layer_inputs`` (with checkpointing: each layer's input, kept for the
    recomputation; without: 0), ``layers`` (with checkpointing: the one layer being
    recomputed during backward; without: every layer's activations) and ``logits`` (the
    batch × seq_len × vocab tensors at the loss). One layer keeps
    ``layer_activation_factor`` bytes per token and hidden unit in 16-bit (34, Korthikanti et
    al. 2022, eq. 1, with SDPA/FlashAttention: no stored scores); every tensor of it doubles
    in fp32, so the factor is scaled by ``activation_bytes / 2``.
    """
    tokens = batch_size * seq_len
    scale = activation_bytes / 2
    per_layer = tokens * hidden_size * layer_activation_factor * scale
    if eager_attention:
        per_layer += attention_score_factor * num_heads * seq_len * tokens * scale
    if gradient_checkpointing:
        inputs = num_layers * tokens * hidden_size * hidden_state_bytes
        layers = per_layer
    else:
        inputs, layers = 0, num_layers * per_layer
    return {
        "layer_inputs": round(inputs),
        "layers": round(layers),
        "logits": round(tokens * vocab_size * logit_bytes),
    }


_METHOD_DEFAULTS: dict[str, dict[str, float]] = {
    # weight, gradient, master weight, hidden state and activation bytes per number
    "full_fp32": {"weight": 4, "gradient": 4, "master": 0, "hidden": 4, "activation": 4},
    "full_mixed": {"weight": 2, "gradient": 2, "master": 4, "hidden": 2, "activation": 2},
    "lora": {"weight": 2, "gradient": 4, "master": 0, "hidden": 2, "activation": 2},
    "qlora": {"weight": 0.5, "gradient": 4, "master": 0, "hidden": 4, "activation": 2},
}


def estimate_memory(
    params_or_config: int | PretrainedConfig,
    method: str,
    *,
    trainable_params: int = 0,
    batch_size: int = 1,
    seq_len: int = 512,
    gradient_checkpointing: bool = True,
    optimizer: str = "adamw",
    double_quant: bool = True,
    trainable_tensor_sizes: Sequence[int] | None = None,
    weight_bytes: float | None = None,
    gradient_bytes: float | None = None,
    master_weight_bytes: float | None = None,
    adapter_bytes: float = 4,
    adam_state_bytes: float = 4,
    adamw_step_bytes: int = 4,
    min_8bit_size: int = 4096,
    optimizer_block_size: int = 256,
    keep_unquantized: Sequence[str] = ("lm_head",),
    unquantized_weight_bytes: float = 4,
    quantized_bias_bytes: float = 2,
    unquantized_params: int = 0,
    quant_block_size: int = 64,
    double_quant_block_size: int = 256,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    num_heads: int | None = None,
    vocab_size: int | None = None,
    hidden_state_bytes: float | None = None,
    activation_bytes: float | None = None,
    layer_activation_factor: float = 34,
    attention_score_factor: float = 5,
    eager_attention: bool = False,
    logit_bytes: float = 12,
    lm_head_copy_bytes: float | None = None,
    dequant_buffer_bytes: float = 2,
) -> dict[str, int]:
    """Estimate the GPU memory of one training step, in bytes per component.

    The prediction is for the peak of memory PyTorch allocates
    (``torch.cuda.max_memory_allocated``). ``nvidia-smi`` shows more: the CUDA context
    (about half a GiB) and what PyTorch's caching allocator reserved but does not use.

    Each component has its own function (:func:`weights_memory`, :func:`optimizer_memory`,
    :func:`activation_memory`); this one picks each method's defaults and adds them up.

    Args:
        params_or_config: a parameter count, or a transformers config (for example
            ``helpers.architectures.real_config(model_id)``). With a config the model is
            built on the meta device and every tensor is accounted for by its kind and size
            (which layers bitsandbytes quantizes, per-tensor constants, small-tensor rules).
        method: ``"full_fp32"``, ``"full_mixed"``, ``"lora"`` or ``"qlora"`` (module doc).
        trainable_params: adapter parameters for ``lora``/``qlora`` (ignored by the full
            methods, which train everything). Count them with ``get_peft_model`` on a meta
            model: ``count_parameters(peft_model)[1]``.
        batch_size, seq_len: the micro-batch (sequences per step, tokens per sequence).
        gradient_checkpointing: keep only each layer's input and recompute the rest.
        optimizer: ``"adamw"`` (torch AdamW, fp32 moments) or ``"paged_adamw_8bit"``
            (bitsandbytes: two uint8 moments with blockwise fp32 scales).
        double_quant: QLoRA's double quantization of the quantization constants.

    Named assumptions (change them to see what they are worth):
        trainable_tensor_sizes: element counts of each trainable tensor (for example
            ``[p.numel() for p in peft_model.parameters() if p.requires_grad]``). When
            given, per-tensor rules apply (small tensors keep 32-bit optimizer states) and
            ``trainable_params`` is their sum. The full methods take them from the config.
        weight_bytes: bytes per weight of the model: 4 (full_fp32), 2 (full_mixed and the
            frozen 16-bit base of lora), 0.5 (qlora's NF4 weights). Frozen weights have no
            gradient (their ``.grad`` stays ``None``) and no optimizer state.
        gradient_bytes: bytes per gradient: 4 (full_fp32), 2 (full_mixed), and for
            lora/qlora the adapter's own precision (``adapter_bytes``); only trainable
            parameters have gradients.
        master_weight_bytes: the fp32 master copy mixed precision keeps with the optimizer
            (4 for full_mixed, else 0).
        adapter_bytes: bytes per adapter weight: 4, because peft keeps adapters in fp32 on
            a 16-bit or 4-bit base (``autocast_adapter_dtype=True``).
        adam_state_bytes: bytes of each of AdamW's two moments (fp32: 4).
        adamw_step_bytes: torch AdamW's step counter, one fp32 scalar per tensor.
        min_8bit_size: bitsandbytes' 8-bit optimizers keep tensors with fewer elements in
            32-bit states (default 4096).
        optimizer_block_size: the block of one fp32 scale in 8-bit optimizer states (256).
        keep_unquantized: short names of linear layers bitsandbytes leaves unquantized;
            transformers skips the output layer (``lm_head``). Embeddings and norms are not
            linear layers and are never quantized.
        unquantized_weight_bytes: qlora: bytes per weight of what stays unquantized
            (embeddings, lm_head, norms): 4, since ``prepare_model_for_kbit_training`` casts
            them from 16-bit to fp32 (2 without it, or for a GPTQ model, which it leaves
            alone).
        quantized_bias_bytes: qlora: bytes per bias of a 4-bit layer: bitsandbytes casts
            it to the compute dtype (fp16: 2) on the first forward pass.
        unquantized_params: qlora with a bare parameter count: how many of them stay
            unquantized (with a config they are counted from the model).
        quant_block_size: NF4 block size, one absmax per block (64).
        double_quant_block_size: with double quantization, one fp32 absmax per this many
            8-bit absmax values (256).
        hidden_size, num_layers, num_heads, vocab_size: the shape used for activations,
            read from the config unless given. With a bare parameter count and no shape the
            activations are not estimated (0).
        hidden_state_bytes: bytes of the hidden state kept at each layer boundary under
            checkpointing: 2 (16-bit) for full_mixed and lora; 4 for full_fp32 and qlora
            (``prepare_model_for_kbit_training`` makes the embeddings fp32, and the
            residual stream stays fp32).
        activation_bytes: bytes per number of the activations inside a layer: 2 (16-bit
            matmuls, which autocast gives qlora too), 4 for full_fp32. The layer factor
            below is for 16-bit and is scaled by ``activation_bytes / 2``.
        layer_activation_factor: bytes per token per hidden unit that one transformer layer
            keeps for backward in 16-bit (34, Korthikanti et al. 2022, eq. 1).
        attention_score_factor, eager_attention: eager attention also keeps the scores,
            5·a·s² bytes per sequence and layer in 16-bit; PyTorch's SDPA kernels
            (transformers' default) and FlashAttention never store them.
        logit_bytes: bytes per logit (batch × seq_len × vocab) at the loss: 2 (fp16
            logits) + 4 (the fp32 copy for the loss) + 4 (log-softmax kept for backward)
            + 2 (its gradient on the way back to fp16). Chunked cross-entropy (as in
            unsloth or lit-gpt) never holds all of them at once.
        lm_head_copy_bytes: qlora: the 16-bit copy autocast makes of the fp32 ``lm_head``
            on every forward pass, kept for backward: 2 bytes per ``lm_head`` weight
            (vocab × hidden). Default: 2 when ``lm_head`` stays unquantized in fp32
            (``unquantized_weight_bytes=4``), else 0.
        dequant_buffer_bytes: qlora: a 4-bit layer is dequantized to fp16 for its matmul;
            the largest one is counted once as a temporary.

    Returns:
        bytes of ``weights`` (the base model, packed if quantized), ``quantization_constants``,
        ``adapter``, ``gradients``, ``optimizer_states`` (master weights included),
        ``activations`` (the sum of :func:`activation_memory`'s parts), ``lm_head_copy``,
        ``temporaries`` and their ``total`` (the predicted peak of allocated memory).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    defaults = _METHOD_DEFAULTS[method]
    weight_bytes = defaults["weight"] if weight_bytes is None else weight_bytes
    if gradient_bytes is None:
        gradient_bytes = adapter_bytes if method in ("lora", "qlora") else defaults["gradient"]
    if master_weight_bytes is None:
        master_weight_bytes = defaults["master"]
    if hidden_state_bytes is None:
        hidden_state_bytes = defaults["hidden"]
    if activation_bytes is None:
        activation_bytes = defaults["activation"]
    if lm_head_copy_bytes is None:
        fp32_head = "lm_head" in keep_unquantized and unquantized_weight_bytes == 4
        lm_head_copy_bytes = 2 if method == "qlora" and fp32_head else 0
    full = method.startswith("full")

    if isinstance(params_or_config, PretrainedConfig):
        config = params_or_config
        tensors = model_tensors(config)
        total_params = sum(n for _, _, n in tensors)
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        hidden_size = hidden_size or text.hidden_size
        num_layers = num_layers or text.num_hidden_layers
        num_heads = num_heads or text.num_attention_heads
        vocab_size = vocab_size or text.vocab_size
    elif isinstance(params_or_config, int) and not isinstance(params_or_config, bool):
        tensors = None
        total_params = params_or_config
    else:
        raise TypeError("params_or_config must be an int or a transformers PretrainedConfig")

    # What trains: everything (full methods) or the adapters
    if full:
        sizes = [n for _, _, n in tensors] if tensors is not None else None
        n_trainable = total_params
    else:
        sizes = list(trainable_tensor_sizes) if trainable_tensor_sizes is not None else None
        if sizes is not None and trainable_params and sum(sizes) != trainable_params:
            raise ValueError(
                f"trainable_params={trainable_params} but trainable_tensor_sizes sum to "
                f"{sum(sizes)}"
            )
        n_trainable = sum(sizes) if sizes is not None else trainable_params

    weights, constants, largest = weights_memory(
        tensors,
        total_params,
        method,
        weight_bytes=weight_bytes,
        double_quant=double_quant,
        keep_unquantized=keep_unquantized,
        unquantized_weight_bytes=unquantized_weight_bytes,
        quantized_bias_bytes=quantized_bias_bytes,
        unquantized_params=unquantized_params,
        quant_block_size=quant_block_size,
        double_quant_block_size=double_quant_block_size,
    )
    shaped = bool(hidden_size and num_layers and num_heads and vocab_size)
    activations = 0
    if shaped:
        activations = sum(
            activation_memory(
                hidden_size=hidden_size,
                num_layers=num_layers,
                num_heads=num_heads,
                vocab_size=vocab_size,
                batch_size=batch_size,
                seq_len=seq_len,
                gradient_checkpointing=gradient_checkpointing,
                hidden_state_bytes=hidden_state_bytes,
                activation_bytes=activation_bytes,
                layer_activation_factor=layer_activation_factor,
                attention_score_factor=attention_score_factor,
                eager_attention=eager_attention,
                logit_bytes=logit_bytes,
            ).values()
        )
    estimate = {
        "weights": weights,
        "quantization_constants": constants,
        "adapter": 0 if full else round(n_trainable * adapter_bytes),
        "gradients": round(n_trainable * gradient_bytes),  # frozen weights have no .grad
        "optimizer_states": optimizer_memory(
            sizes,
            n_trainable,
            optimizer,
            adam_state_bytes=adam_state_bytes,
            master_weight_bytes=master_weight_bytes,
            adamw_step_bytes=adamw_step_bytes,
            min_8bit_size=min_8bit_size,
            optimizer_block_size=optimizer_block_size,
        ),
        "activations": activations,
        "lm_head_copy": round(vocab_size * hidden_size * lm_head_copy_bytes) if shaped else 0,
        "temporaries": round(largest * dequant_buffer_bytes),
    }
    estimate["total"] = sum(estimate.values())
    return estimate


def assumptions() -> list[tuple[str, Any, str]]:
    """Every keyword of :func:`estimate_memory`: ``(keyword, default, description)`` rows.

    The descriptions come from its docstring, so that a notebook can show the assumptions
    next to their defaults.
    """
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in (estimate_memory.__doc__ or "").splitlines():
        entry = re.match(r"^ {8}([a-z_][a-z_0-9, ]*): (.*)$", line)
        if entry:
            names = [n.strip() for n in entry.group(1).split(",")]
            for name in names:
                docs[name] = entry.group(2)
        elif line.startswith(" " * 12) and names:
            for name in names:
                docs[name] += " " + line.strip()
        else:
            names = []
    return [
        (name, p.default, docs.get(name, ""))
        for name, p in inspect.signature(estimate_memory).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def fits_t4(estimate: dict[str, int], headroom: float = 0.1) -> bool:
    """Whether an estimate fits a free Colab T4.

    Args:
        estimate: the result of :func:`estimate_memory`.
        headroom: the share of :data:`T4_MEMORY_BYTES` left free for what the estimate
            leaves out: the allocator's fragmentation and short-lived buffers (10%).
    """
    return estimate["total"] <= (1 - headroom) * T4_MEMORY_BYTES


def shard_estimate(estimate: dict[str, int], n_devices: int, stage: int) -> dict[str, int]:
    """Memory per device when ZeRO (or FSDP) shards the model states over ``n_devices``.

    Stage 1 shards the optimizer states, stage 2 also the gradients, stage 3 (FSDP's full
    sharding) also the weights, quantization constants and adapter (Rajbhandari et al.
    2020). Activations and temporaries stay per device (each device runs its own
    micro-batch).
    """
    if stage not in (0, 1, 2, 3) or n_devices < 1:
        raise ValueError("stage must be 0-3 and n_devices at least 1")
    sharded = {1: {"optimizer_states"}, 2: {"optimizer_states", "gradients"}}.get(stage, set())
    if stage == 3:
        sharded = {"optimizer_states", "gradients", "weights", "quantization_constants"}
        sharded.add("adapter")
    out = {
        key: math.ceil(value / n_devices) if key in sharded else value
        for key, value in estimate.items()
        if key != "total"
    }
    out["total"] = sum(out.values())
    return out


# ---------------------------------------------------------------------------------------
# The course's plans (notebooks 04-06, FULL mode), shared by notebook 01 and the tests
# ---------------------------------------------------------------------------------------

COURSE_PLANS: dict[str, dict[str, Any]] = {
    "04": {
        "title": "Mistral-7B-Instruct replies to YouTube comments",
        "model_id": "mistralai/Mistral-7B-Instruct-v0.2",
        "lora": {"r": 8, "lora_alpha": 32, "target_modules": ["q_proj"]},
        "memory": {
            "method": "qlora",
            "double_quant": True,
            "batch_size": 4,
            "seq_len": 512,
            "gradient_checkpointing": True,
            "optimizer": "paged_adamw_8bit",
        },
    },
    "05": {
        "title": "Phi-2 summarizer",
        "model_id": "microsoft/phi-2",
        "lora": {
            "r": 32,
            "lora_alpha": 32,
            "target_modules": ["q_proj", "k_proj", "v_proj", "dense"],
        },
        "memory": {
            "method": "qlora",
            "double_quant": True,
            "batch_size": 1,
            "seq_len": 2048,
            "gradient_checkpointing": True,
            "optimizer": "paged_adamw_8bit",
        },
    },
    "06": {
        "title": "phi-1.5 on DS-1000",
        "model_id": "microsoft/phi-1_5",
        "lora": {
            "r": 16,
            "lora_alpha": 32,
            "target_modules": ["q_proj", "k_proj", "v_proj", "dense"],
        },
        "memory": {
            "method": "qlora",
            "double_quant": True,
            "batch_size": 4,
            "seq_len": 1024,
            "gradient_checkpointing": True,
            "optimizer": "paged_adamw_8bit",
        },
    },
}


# ---------------------------------------------------------------------------------------
# The accountant
# ---------------------------------------------------------------------------------------


def _storage_key(t: torch.Tensor) -> tuple[int, str]:
    return (t.untyped_storage().data_ptr(), str(t.device))


def _tensor_bytes(tensors: Iterable[torch.Tensor], seen: set) -> int:
    """Bytes of the distinct storages behind ``tensors`` not in ``seen`` (which grows)."""
    total = 0
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = _storage_key(t)
        if storage.data_ptr() == 0 or key in seen:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def _quant_state_tensors(param: torch.Tensor) -> list[torch.Tensor]:
    """The tensors of a bitsandbytes quantization state (absmax, code, offset, nested)."""
    out = []
    state = getattr(param, "quant_state", None)
    while state is not None:
        out += [v for v in vars(state).values() if isinstance(v, torch.Tensor)]
        state = getattr(state, "state2", None)
    return out


def _is_adapter(name: str) -> bool:
    return "lora_" in name


def measure_memory(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, int]:
    """Add up the bytes a model and its optimizer actually hold, by component.

    Every tensor's storage is counted once (shared storages, tied weights, views).

    Returns:
        ``weights`` (parameters that are not adapters, a 4-bit layer's packed uint8
        storage included), ``quantization_constants`` (bitsandbytes' absmax, code tables,
        offsets), ``adapter`` (parameters whose name contains ``lora_``), ``gradients``
        (``.grad`` of every parameter, the optimizer's own copies included),
        ``optimizer_states`` (every tensor in ``optimizer.state``, plus parameters the
        optimizer updates that are not the model's: fp32 master copies) and their
        ``total``; on CUDA also ``peak_allocated`` (``torch.cuda.max_memory_allocated``),
        which is not part of the total.
    """
    seen: set = set()
    params = list(model.named_parameters())
    out = {key: 0 for key in ("weights", "quantization_constants", "adapter")}
    out["weights"] = _tensor_bytes((p for n, p in params if not _is_adapter(n)), seen)
    out["adapter"] = _tensor_bytes((p for n, p in params if _is_adapter(n)), seen)
    out["quantization_constants"] = _tensor_bytes(
        (t for _, p in params for t in _quant_state_tensors(p)), seen
    )
    model_ids = {id(p) for _, p in params}
    extra = []  # parameters of the optimizer that the model does not hold (master weights)
    if optimizer is not None:
        extra = [
            p for group in optimizer.param_groups for p in group["params"] if id(p) not in model_ids
        ]
    grads = [p.grad for _, p in params] + [p.grad for p in extra]
    out["gradients"] = _tensor_bytes((g for g in grads if g is not None), seen)
    states = []
    if optimizer is not None:
        for state in optimizer.state.values():
            states += [v for v in state.values() if isinstance(v, torch.Tensor)]
    out["optimizer_states"] = _tensor_bytes(extra + states, seen)
    out["total"] = sum(out.values())
    if torch.cuda.is_available() and any(p.is_cuda for _, p in params):
        out["peak_allocated"] = torch.cuda.max_memory_allocated()
    return out
