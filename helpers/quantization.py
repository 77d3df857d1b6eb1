"""Quantization you can read: buckets, absmax, blockwise scaling, NF4, double quantization.

Plain PyTorch, written to be read next to notebook 02. Every quantizer here follows the
same three steps:

1. **scale**: divide a block of numbers by its largest magnitude (its *absmax*), so that
   the block lies in [-1, 1];
2. **round**: replace each scaled number by the index of the nearest level of a *code
   book* (127 evenly spaced levels per side for int8, 16 normal quantiles for NF4);
3. **store** the small integer indices plus one absmax per block; to dequantize, look the
   level up and multiply by the absmax again.

The NF4 functions reproduce bitsandbytes (``bitsandbytes.functional.quantize_4bit`` with
``quant_type="nf4"``, as used by ``BitsAndBytesConfig(load_in_4bit=True)``) bit for bit:
the same code book, the same packed bytes, the same dequantized values, with and without
double quantization of the block constants. The tests in ``tests/test_quantization.py``
check this against bitsandbytes' CPU implementation.
"""

from __future__ import annotations

import math
from typing import Any

import torch

# ---------------------------------------------------------------------------------------
# 1. Buckets: a range cut into equal pieces
# ---------------------------------------------------------------------------------------


def uniform_quantize(x: torch.Tensor, low: float, high: float, n_buckets: int) -> torch.Tensor:
    """Cut ``[low, high]`` into ``n_buckets`` equal buckets; return each value's bucket index.

    Values outside the range go to the first or last bucket.
    """
    width = (high - low) / n_buckets
    index = torch.floor((x - low) / width).long()
    return index.clamp(0, n_buckets - 1)


def uniform_dequantize(
    index: torch.Tensor, low: float, high: float, n_buckets: int
) -> torch.Tensor:
    """The value a bucket index stands for: the centre of its bucket (float64)."""
    width = (high - low) / n_buckets
    return low + (index.double() + 0.5) * width


def bits_per_number(n_levels: int) -> int:
    """How many bits an index into ``n_levels`` levels needs: ``ceil(log2(n_levels))``."""
    return max(1, math.ceil(math.log2(n_levels)))


# ---------------------------------------------------------------------------------------
# 2. Absmax: one scale for the whole tensor, then blockwise
# ---------------------------------------------------------------------------------------


def absmax_quantize(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantization of a whole tensor to signed ``bits``-bit integers.

    The largest magnitude maps to ``qmax = 2**(bits-1) - 1`` (127 for int8) and every value
    to ``round(x * qmax / absmax)``.

    Returns:
        ``(q, absmax)``: the integers (int8 for ``bits <= 8``, else int32), same shape as
        ``x``, and the absmax (a 0-d float32 tensor) needed to dequantize.
    """
    qmax = 2 ** (bits - 1) - 1
    absmax = x.abs().max().float()
    q = torch.round(x.float() * (qmax / absmax.clamp(min=1e-38)))
    return q.to(torch.int8 if bits <= 8 else torch.int32), absmax


def absmax_dequantize(q: torch.Tensor, absmax: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Undo :func:`absmax_quantize`: ``q * absmax / qmax`` (float32)."""
    qmax = 2 ** (bits - 1) - 1
    return q.float() * (absmax / qmax)


def _blocks(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """The flattened ``x`` as rows of ``block_size`` values, the last row padded with zeros.

    Zeros never change a block's absmax, so padding is harmless; callers cut it off again.
    """
    flat = x.reshape(-1).float()
    n_blocks = math.ceil(flat.numel() / block_size)
    padded = torch.nn.functional.pad(flat, (0, n_blocks * block_size - flat.numel()))
    return padded.reshape(n_blocks, block_size)


def blockwise_absmax_quantize(
    x: torch.Tensor, block_size: int = 64, bits: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmax quantization with one scale per block of ``block_size`` consecutive values.

    An outlier now only coarsens its own block. With ``block_size`` equal to a row's length
    this is the row-wise ("vector-wise") int8 quantization of LLM.int8().

    Returns:
        ``(q, absmax)``: integers with the shape of ``x`` and one float32 absmax per block
        (``ceil(x.numel() / block_size)`` of them).
    """
    qmax = 2 ** (bits - 1) - 1
    blocks = _blocks(x, block_size)
    absmax = blocks.abs().amax(dim=1)
    q = torch.round(blocks * (qmax / absmax.clamp(min=1e-38)).unsqueeze(1))
    q = q.reshape(-1)[: x.numel()].reshape(x.shape)
    return q.to(torch.int8 if bits <= 8 else torch.int32), absmax


def blockwise_absmax_dequantize(
    q: torch.Tensor, absmax: torch.Tensor, block_size: int = 64, bits: int = 8
) -> torch.Tensor:
    """Undo :func:`blockwise_absmax_quantize` (float32, shape of ``q``)."""
    qmax = 2 ** (bits - 1) - 1
    blocks = _blocks(q, block_size)
    values = blocks * (absmax / qmax).unsqueeze(1)
    return values.reshape(-1)[: q.numel()].reshape(q.shape)


# ---------------------------------------------------------------------------------------
# 3. Code books: where the levels sit in [-1, 1]
# ---------------------------------------------------------------------------------------

# Where NF4's outermost quantile sits: halfway between 1 - 1/(2*15) and 1 - 1/(2*16)
# (QLoRA, appendix E), written to 7 digits as in the QLoRA code and bitsandbytes.
NF4_OFFSET = 0.9677083


def uniform_code(bits: int = 4) -> torch.Tensor:
    """Evenly spaced symmetric levels of absmax ``bits``-bit integers, scaled to [-1, 1].

    For 4 bits: -7/7, -6/7, ..., 0, ..., 7/7 (15 levels; the 16th bit pattern is unused).
    """
    qmax = 2 ** (bits - 1) - 1
    return torch.arange(-qmax, qmax + 1, dtype=torch.float32) / qmax


def nf4_code(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 levels of 4-bit NormalFloat (NF4), sorted, in [-1, 1], with an exact zero.

    Built as in the QLoRA paper (Dettmers et al. 2023, section 3 and appendix E): take
    evenly spaced probabilities from ``offset`` down to 1/2 and the quantiles of a standard
    normal at them: 8 positive levels (9 points, dropping the median) and 7 negative ones
    (8 points, mirrored), then 0 and a division by the largest level. Each level then stands
    for an equal share of normally distributed weights. The arithmetic (probabilities in
    float32, quantiles in float64, levels in float32) follows bitsandbytes'
    ``create_normal_map``, so the result equals ``get_4bit_type("nf4")`` exactly.
    """
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    positive = normal.icdf(torch.linspace(offset, 0.5, 9)[:-1].double())
    negative = -normal.icdf(torch.linspace(offset, 0.5, 8)[:-1].double())
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).float()
    levels = levels.sort().values
    return levels / levels.max()


def dynamic_code() -> torch.Tensor:
    """bitsandbytes' signed 8-bit "dynamic" code (256 sorted levels in [-1, 1]).

    Used for 8-bit optimizer states and for double quantization. Like a float it spends
    its levels across magnitudes: 7 decades, 10^-6 ... 1, with 2^i levels in decade i
    (more levels for larger numbers), both signs, plus 0 and 1. Same construction as
    ``bitsandbytes.functional.create_dynamic_map()``.
    """
    levels: list[float] = []
    for i in range(7):
        edges = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0
        levels += ((10 ** (-6 + i)) * means).tolist()
        levels += (-(10 ** (-6 + i)) * means).tolist()
    levels += [0.0, 1.0]
    return torch.tensor(sorted(levels), dtype=torch.float32)


def nearest_level(scaled: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the level of the sorted ``code`` nearest to each value of ``scaled``.

    The decision boundaries are the midpoints between neighbouring levels; a value exactly
    on a midpoint goes to the lower level (as in bitsandbytes).
    """
    midpoints = (code[:-1] + code[1:]) / 2
    return torch.bucketize(scaled, midpoints)


def snap_to_grid(scaled: torch.Tensor, points: int = 65536) -> torch.Tensor:
    """Round values in [-1, 1] to the nearest of ``points`` evenly spaced values in [-1, 1].

    bitsandbytes' CPU kernel for 8-bit blockwise quantization does this before it looks the
    nearest code up in a table of ``points`` entries, so a value within half a grid step
    (about 1.5e-5) of a decision boundary can land on the neighbouring level, and levels
    closer together than the grid (the tiniest ones, around 0) are never used. We copy it,
    float32 operation by float32 operation, so that double quantization gives the same bytes
    as bitsandbytes.
    """
    steps = points - 1
    position = (scaled.float() + 1.0) * 0.5
    # position * steps + 0.5 rounded once to float32 (the kernel uses a fused multiply-add)
    index = (position.double() * steps + 0.5).float().floor()
    return (2 * index) / steps - 1.0


# ---------------------------------------------------------------------------------------
# 4. Blockwise quantization with any code book
# ---------------------------------------------------------------------------------------


def scale_blocks(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: split the flattened ``x`` into blocks and scale each block into [-1, 1].

    Returns ``(scaled, absmax)``: the ``x.numel()`` scaled values (flat, float32) and the
    absmax of each block. Like bitsandbytes we multiply by ``1 / absmax`` (computed once per
    block) instead of dividing every value.
    """
    blocks = _blocks(x, block_size)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks * (1.0 / absmax.clamp(min=1e-38)).unsqueeze(1)
    return scaled.clamp(-1, 1).reshape(-1)[: x.numel()], absmax


def quantize_blockwise(
    x: torch.Tensor, code: torch.Tensor, block_size: int = 64, grid_points: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantization to the nearest level of ``code``.

    Args:
        x: any float tensor.
        code: the sorted levels in [-1, 1] (:func:`nf4_code`, :func:`uniform_code`,
            :func:`dynamic_code` ...).
        block_size: values per absmax.
        grid_points: if given, first round the scaled values with :func:`snap_to_grid`
            (what bitsandbytes' CPU kernel does for 8-bit codes); ``None`` rounds exactly.

    Returns:
        ``(indices, absmax)``: int64 level indices with the shape of ``x`` and one float32
        absmax per block.
    """
    scaled, absmax = scale_blocks(x, block_size)
    if grid_points is None:
        return nearest_level(scaled, code).reshape(x.shape), absmax
    indices = nearest_level(snap_to_grid(scaled, grid_points), code)
    # bitsandbytes' CPU kernel writes index 0 for a block of zeros (0 times any level is 0)
    zero_block = (absmax == 0).repeat_interleave(block_size)[: x.numel()]
    indices[zero_block] = 0
    return indices.reshape(x.shape), absmax


def dequantize_blockwise(
    indices: torch.Tensor,
    absmax: torch.Tensor,
    code: torch.Tensor,
    block_size: int = 64,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Look every index up in ``code`` and multiply by its block's absmax (shape of ``indices``)."""
    levels = code[indices.reshape(-1).long()]
    values = _blocks(levels, block_size) * absmax.float().unsqueeze(1)
    return values.reshape(-1)[: indices.numel()].reshape(indices.shape).to(dtype)


def level_occupancy(indices: torch.Tensor, n_levels: int) -> torch.Tensor:
    """The share of values that landed on each of the ``n_levels`` levels (sums to 1)."""
    counts = torch.bincount(indices.reshape(-1).long(), minlength=n_levels)
    return counts.double() / indices.numel()


# ---------------------------------------------------------------------------------------
# 5. Double quantization of the block constants (QLoRA section 3)
# ---------------------------------------------------------------------------------------


def double_quantize(absmax: torch.Tensor, block_size: int = 256) -> dict[str, torch.Tensor]:
    """Quantize the float32 block constants themselves to 8 bits, in blocks of 256.

    The absmax values are all positive, so their mean is subtracted first (it is kept as
    one float32 ``offset``) to use both signs of bitsandbytes' 8-bit dynamic code.

    Returns:
        ``{"codes": uint8 per constant, "absmax": float32 per block of constants,
        "offset": 0-d float32}``.
    """
    offset = absmax.mean()
    codes, absmax2 = quantize_blockwise(absmax - offset, dynamic_code(), block_size, 65536)
    return {"codes": codes.to(torch.uint8), "absmax": absmax2, "offset": offset}


def double_dequantize(quantized: dict[str, torch.Tensor], block_size: int = 256) -> torch.Tensor:
    """Undo :func:`double_quantize`: the (approximate) float32 block constants."""
    absmax = dequantize_blockwise(
        quantized["codes"], quantized["absmax"], dynamic_code(), block_size
    )
    return absmax + quantized["offset"]


def constants_bits_per_parameter(
    block_size: int = 64, double_quant: bool = False, block_size2: int = 256
) -> float:
    """Memory of the block constants, in bits per quantized parameter.

    Without double quantization one float32 absmax per block: ``32 / 64 = 0.5`` bits. With
    it, one 8-bit code per block plus one float32 per ``block_size2`` blocks:
    ``8/64 + 32/(64*256) = 0.127`` bits (QLoRA, section 3).
    """
    if not double_quant:
        return 32 / block_size
    return 8 / block_size + 32 / (block_size * block_size2)


def constants_nbytes(
    n: int, block_size: int = 64, double_quant: bool = False, block_size2: int = 256
) -> int:
    """Bytes of the block constants of one quantized tensor of ``n`` values, as stored.

    Without double quantization one float32 absmax per block; with it one byte per block,
    one float32 per ``block_size2`` blocks and the float32 offset. (bitsandbytes also keeps
    its code tables with every tensor, 16 and 256 float32 levels; they are not counted.)
    """
    blocks = math.ceil(n / block_size)
    if not double_quant:
        return 4 * blocks
    return blocks + 4 * math.ceil(blocks / block_size2) + 4


# ---------------------------------------------------------------------------------------
# 6. NF4: 4-bit NormalFloat in blocks of 64, packed two per byte
# ---------------------------------------------------------------------------------------


def pack_4bit(indices: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit indices two per byte, the first in the high nibble (bitsandbytes' layout).

    An odd count is padded with one index 0. Returns uint8 of shape ``(ceil(n/2), 1)``.
    """
    flat = indices.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.nn.functional.pad(flat, (0, 1))
    return ((flat[0::2] << 4) | flat[1::2]).unsqueeze(1)


def unpack_4bit(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Undo :func:`pack_4bit`: the first ``n`` indices (int64, flat)."""
    flat = packed.reshape(-1)
    indices = torch.stack([flat >> 4, flat & 0x0F], dim=1).reshape(-1)
    return indices[:n].long()


def nf4_quantize(
    x: torch.Tensor, block_size: int = 64, double_quant: bool = False
) -> dict[str, Any]:
    """Quantize ``x`` to NF4 like ``bitsandbytes.functional.quantize_4bit(quant_type="nf4")``.

    Args:
        x: a float tensor (float32, float16 or bfloat16), typically a weight matrix.
        block_size: values per absmax (64 in QLoRA).
        double_quant: also quantize the absmax values (``compress_statistics=True``,
            ``bnb_4bit_use_double_quant=True``).

    Returns:
        ``{"packed": uint8 (ceil(n/2), 1), "absmax": float32 per block, or the dict of
        :func:`double_quantize`, "shape", "dtype", "block_size"}``.
    """
    scaled, absmax = scale_blocks(x, block_size)
    if x.numel() % block_size:
        # bitsandbytes divides by the absmax in a partial last block (it multiplies by
        # 1/absmax everywhere else); copied so that the last bit agrees there too.
        tail = x.numel() - x.numel() % block_size
        scaled[tail:] = (x.reshape(-1)[tail:].float() / absmax[-1].clamp(min=1e-38)).clamp(-1, 1)
    if scaled.numel() % 2:  # an odd count gets one more 0.0, packed with the last value
        scaled = torch.nn.functional.pad(scaled, (0, 1))
    indices = nearest_level(scaled, nf4_code())
    return {
        "packed": pack_4bit(indices),
        "absmax": double_quantize(absmax) if double_quant else absmax,
        "shape": tuple(x.shape),
        "dtype": x.dtype,
        "block_size": block_size,
    }


def nf4_indices(quantized: dict[str, Any]) -> torch.Tensor:
    """The NF4 level index (0-15) of every value, in the shape of the original tensor."""
    shape = quantized["shape"]
    return unpack_4bit(quantized["packed"], math.prod(shape)).reshape(shape)


def nf4_dequantize(quantized: dict[str, Any], dtype: torch.dtype | None = None) -> torch.Tensor:
    """Undo :func:`nf4_quantize`: level times block absmax, in ``dtype`` (default: the input's)."""
    absmax = quantized["absmax"]
    if isinstance(absmax, dict):
        absmax = double_dequantize(absmax)
    return dequantize_blockwise(
        nf4_indices(quantized),
        absmax,
        nf4_code(),
        quantized["block_size"],
        dtype or quantized["dtype"],
    )


def quantized_nbytes(quantized: dict[str, Any]) -> int:
    """Bytes of every tensor in a quantized result (codes and constants), nested dicts too."""
    total = 0
    for value in quantized.values():
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            total += quantized_nbytes(value)
    return total


# ---------------------------------------------------------------------------------------
# 7. Error measures
# ---------------------------------------------------------------------------------------


def error_stats(original: torch.Tensor, reconstructed: torch.Tensor) -> dict[str, float]:
    """How far ``reconstructed`` is from ``original``.

    Returns ``max_abs`` and ``mean_abs`` (of ``|x - x_hat|``), ``rmse``, ``relative``
    (``||x - x_hat|| / ||x||``, Euclidean norms) and ``sqnr_db`` (signal-to-quantization-
    noise ratio, ``10 log10(sum x^2 / sum (x - x_hat)^2)``; infinite for an exact copy).
    """
    x = original.double().reshape(-1)
    error = x - reconstructed.double().reshape(-1)
    signal, noise = float(x.pow(2).sum()), float(error.pow(2).sum())
    return {
        "max_abs": float(error.abs().max()),
        "mean_abs": float(error.abs().mean()),
        "rmse": math.sqrt(noise / x.numel()),
        "relative": math.sqrt(noise / signal) if signal > 0 else math.inf,
        "sqnr_db": 10 * math.log10(signal / noise) if noise > 0 else math.inf,
    }
