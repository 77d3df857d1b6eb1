"""Tests of helpers.quantization, most of them against bitsandbytes' own implementation."""

import math

import bitsandbytes.functional as bnbf
import pytest
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from helpers import quantization as Q
from helpers.architectures import MISTRAL_7B_INSTRUCT
from helpers.standins import build_standin

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def assert_same_as_bnb(x: torch.Tensor, double_quant: bool, dequantize: bool = True) -> None:
    """Our NF4 of ``x`` has bitsandbytes' bytes, constants and dequantized values.

    ``dequantize=False`` skips bitsandbytes' dequantization, which for a tensor whose last
    dimension is odd runs a ``torch.compile``d fallback that takes seconds to compile.
    """
    packed, state = bnbf.quantize_4bit(
        x, blocksize=64, compress_statistics=double_quant, quant_type="nf4"
    )
    ours = Q.nf4_quantize(x, block_size=64, double_quant=double_quant)
    assert ours["packed"].dtype == torch.uint8
    assert torch.equal(ours["packed"], packed)  # the same codes, in the same nibbles
    if double_quant:
        assert torch.equal(ours["absmax"]["codes"], state.absmax)
        assert torch.equal(ours["absmax"]["absmax"], state.state2.absmax)
        assert torch.equal(ours["absmax"]["offset"], state.offset)
    else:
        assert torch.equal(ours["absmax"], state.absmax)
    if not dequantize:
        return
    dequantized = bnbf.dequantize_4bit(packed, state)
    mine = Q.nf4_dequantize(ours)
    assert mine.dtype == dequantized.dtype == x.dtype
    assert mine.shape == x.shape
    # bitsandbytes returns a 1-d input as one row; compare values, bit for bit
    assert torch.equal(mine.reshape(-1), dequantized.reshape(-1))


# --- code books ------------------------------------------------------------------------


def test_nf4_code_equals_bitsandbytes():
    ours, theirs = Q.nf4_code(), bnbf.get_4bit_type("nf4", device="cpu")
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0)
    assert torch.equal(ours, theirs)  # in fact to the last bit


def test_nf4_code_has_the_papers_shape():
    code = Q.nf4_code()
    assert code.numel() == 16
    assert torch.all(code[1:] > code[:-1])  # sorted, distinct
    assert code[0] == -1 and code[-1] == 1
    assert (code == 0).sum() == 1  # an exact zero
    assert (code > 0).sum() == 8 and (code < 0).sum() == 7  # asymmetric: 8 positive levels
    # the offset is the paper's: halfway between 1 - 1/(2*15) and 1 - 1/(2*16)
    assert Q.NF4_OFFSET == pytest.approx(1 - (1 / 30 + 1 / 32) / 2, abs=1e-7)


def test_nf4_levels_are_more_evenly_used_than_int4_on_normal_weights():
    torch.manual_seed(0)
    weights = torch.randn(512, 512)
    nf4, absmax = Q.quantize_blockwise(weights, Q.nf4_code(), 64)
    int4, _ = Q.quantize_blockwise(weights, Q.uniform_code(4), 64)
    nf4_share = Q.level_occupancy(nf4, 16)
    int4_share = Q.level_occupancy(int4, 15)
    assert float(nf4_share.sum()) == pytest.approx(1.0)
    assert float(int4_share.sum()) == pytest.approx(1.0)
    # equally populated: NF4's busiest level holds far less than int4's busiest
    assert nf4_share[1:-1].max() < 0.12 < int4_share.max()
    assert nf4_share[1:-1].min() > 0.03 > int4_share.min()
    # ... and on normal weights it has the smaller error
    nf4_error = Q.error_stats(weights, Q.dequantize_blockwise(nf4, absmax, Q.nf4_code(), 64))
    int4_error = Q.error_stats(weights, Q.dequantize_blockwise(int4, absmax, Q.uniform_code(4)))
    assert nf4_error["rmse"] < int4_error["rmse"]


def test_uniform_code():
    code = Q.uniform_code(4)
    assert code.numel() == 15 and code[0] == -1 and code[-1] == 1 and code[7] == 0
    assert torch.allclose(code[1:] - code[:-1], torch.full((14,), 1 / 7))


def test_dynamic_code_equals_bitsandbytes():
    code = Q.dynamic_code()
    assert code.numel() == 256
    assert torch.equal(code, bnbf.create_dynamic_map())


def test_nearest_level_picks_the_nearest_and_the_lower_one_on_a_tie():
    code = torch.tensor([-1.0, 0.0, 0.5, 1.0])
    values = torch.tensor([-0.9, -0.5, -0.49, 0.2, 0.25, 0.26, 0.74, 0.76, 1.0])
    assert Q.nearest_level(values, code).tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3]
    torch.manual_seed(0)
    scaled = torch.rand(10_000) * 2 - 1
    nf4 = Q.nf4_code()
    brute = (scaled[:, None] - nf4[None, :]).abs().argmin(dim=1)
    assert torch.equal(Q.nearest_level(scaled, nf4), brute)


# --- NF4 against bitsandbytes -----------------------------------------------------------


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(128, 128), (256, 384), (4096, 64), (96, 200)])
def test_nf4_equals_bitsandbytes_on_random_matrices(shape, dtype, double_quant):
    torch.manual_seed(sum(shape))
    x = (torch.randn(shape) * 0.02).to(dtype)
    x[3, 5] = 0.5  # an outlier
    x[-1, :64] = 0  # a block of zeros
    assert_same_as_bnb(x, double_quant)


@pytest.mark.parametrize("double_quant", [False, True])
def test_nf4_equals_bitsandbytes_on_awkward_sizes(double_quant):
    torch.manual_seed(1)
    # a partial last block, an odd count, and constants that span many decades
    x = torch.randn(300 * 64 + 45) * torch.logspace(-4, 1, 300 * 64 + 45)
    assert_same_as_bnb(x, double_quant, dequantize=False)  # odd: the last byte is half padding
    assert_same_as_bnb(x.reshape(-1, 5)[:, :4].contiguous(), double_quant)  # even, partial block


def test_nf4_equals_bitsandbytes_when_every_block_has_the_same_absmax():
    # absmax - mean is 0 everywhere: a block of zeros for the second-level quantizer
    x = torch.sign(torch.randn(256 * 64 * 2))
    assert_same_as_bnb(x, double_quant=True)


@pytest.fixture(scope="module")
def standin_path() -> str:
    return build_standin(MISTRAL_7B_INSTRUCT)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_nf4_equals_bitsandbytes_on_real_weights(standin_path, dtype):
    model = AutoModelForCausalLM.from_pretrained(standin_path, dtype=dtype)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) > 10
    q_proj = model.model.layers[0].self_attn.q_proj.weight.detach()
    assert q_proj.dtype == dtype
    for module in linears:
        for double_quant in (False, True):
            assert_same_as_bnb(module.weight.detach(), double_quant)


def test_nf4_equals_the_weights_of_a_model_loaded_in_4_bit(standin_path):
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    model_4bit = AutoModelForCausalLM.from_pretrained(
        standin_path, quantization_config=config, dtype=torch.float32
    )
    model = AutoModelForCausalLM.from_pretrained(standin_path, dtype=torch.float32)
    for name in ("self_attn.q_proj", "mlp.down_proj"):
        layer_4bit = model_4bit.model.layers[1].get_submodule(name)
        weight = model.model.layers[1].get_submodule(name).weight.detach()
        ours = Q.nf4_quantize(weight, double_quant=True)
        assert torch.equal(layer_4bit.weight.data.reshape(-1), ours["packed"].reshape(-1))
        state = layer_4bit.weight.quant_state
        assert state.nested and state.blocksize == 64
        assert torch.equal(state.absmax, ours["absmax"]["codes"])
        theirs = bnbf.dequantize_4bit(layer_4bit.weight.data, state)
        assert torch.equal(Q.nf4_dequantize(ours), theirs)


def test_nf4_round_trip_error_is_within_half_the_widest_gap():
    torch.manual_seed(2)
    x = torch.randn(64 * 500)
    quantized = Q.nf4_quantize(x)
    error = (x - Q.nf4_dequantize(quantized)).abs().reshape(-1, 64)
    code = Q.nf4_code()
    half_gap = float((code[1:] - code[:-1]).max()) / 2
    bound = quantized["absmax"].unsqueeze(1) * half_gap * (1 + 1e-4)  # float32 rounding
    assert torch.all(error <= bound)
    assert Q.nf4_indices(quantized).shape == x.shape


def test_pack_4bit_puts_the_first_index_in_the_high_nibble():
    assert Q.pack_4bit(torch.tensor([1, 2, 15, 0])).reshape(-1).tolist() == [0x12, 0xF0]
    assert Q.pack_4bit(torch.tensor([3, 4, 5])).reshape(-1).tolist() == [0x34, 0x50]
    indices = torch.randint(0, 16, (1001,))
    packed = Q.pack_4bit(indices)
    assert packed.shape == (501, 1) and packed.dtype == torch.uint8
    assert torch.equal(Q.unpack_4bit(packed, 1001), indices)


# --- double quantization ---------------------------------------------------------------


def test_8bit_blockwise_equals_bitsandbytes_cpu_kernel():
    torch.manual_seed(3)
    code = Q.dynamic_code()
    # values exactly on the decision boundaries and on bitsandbytes' grid: the hard cases,
    # in blocks whose absmax is 1 so that they reach the rounding unscaled
    grid = 2 * torch.arange(0, 65536, 7, dtype=torch.float64) / 65535 - 1
    hard = torch.cat([(code[:-1] + code[1:]) / 2, grid.float(), (grid + 1 / 65535).float()])
    rows = math.ceil(hard.numel() / 255)
    hard = torch.nn.functional.pad(hard.clamp(-1, 1), (0, rows * 255 - hard.numel()))
    hard_blocks = torch.cat([torch.ones(rows, 1), hard.reshape(rows, 255)], dim=1)
    n = 256 * 200 + 17
    spread = torch.randn(n) * 10 ** torch.empty(n).uniform_(-4, 1)  # many decades
    x = torch.cat([hard_blocks.reshape(-1), torch.zeros(256), spread])  # and a zero block
    ours, absmax = Q.quantize_blockwise(x, code, 256, grid_points=65536)
    theirs, state = bnbf.quantize_blockwise(x, blocksize=256)
    assert torch.equal(ours.to(torch.uint8), theirs)
    assert torch.equal(absmax, state.absmax)
    assert torch.equal(
        Q.dequantize_blockwise(ours, absmax, code, 256), bnbf.dequantize_blockwise(theirs, state)
    )
    # without the grid it is the exact nearest level, which the kernel misses near zero
    exact, _ = Q.quantize_blockwise(x, code, 256)
    scaled, _ = Q.scale_blocks(x, 256)
    nearest_distance = (scaled[:, None] - code[None, :]).abs().min(dim=1).values
    assert torch.all((scaled - code[exact]).abs() <= nearest_distance + 1e-7)  # 1e-7: ties
    assert not torch.equal(exact, ours)


def test_double_quantization_round_trip():
    torch.manual_seed(4)
    absmax = torch.rand(256 * 10 + 3) * 0.1 + 0.01
    quantized = Q.double_quantize(absmax)
    assert quantized["codes"].dtype == torch.uint8 and quantized["codes"].shape == absmax.shape
    assert quantized["absmax"].numel() == 11
    assert float(quantized["offset"]) == pytest.approx(float(absmax.mean()))
    restored = Q.double_dequantize(quantized)
    code = Q.dynamic_code()
    # half the widest gap of the code, plus the half-step of the 65536-point grid
    step = float((code[1:] - code[:-1]).max()) / 2 + 1 / 65535
    bound = torch.repeat_interleave(quantized["absmax"], 256)[: absmax.numel()] * step
    assert torch.all((restored - absmax).abs() <= bound * (1 + 1e-3))  # float32 rounding


def test_constants_cost_half_a_bit_or_0_127_bits_with_double_quantization():
    assert Q.constants_bits_per_parameter(64) == 0.5
    with_dq = Q.constants_bits_per_parameter(64, double_quant=True)
    assert with_dq == pytest.approx(8 / 64 + 32 / (64 * 256))
    assert round(with_dq, 3) == 0.127  # QLoRA, section 3
    # the formula agrees with what is stored, and with what bitsandbytes stores
    x = torch.randn(1024, 4096)
    for double_quant in (False, True):
        ours = Q.nf4_quantize(x, double_quant=double_quant)
        constants_bytes = Q.quantized_nbytes(ours) - ours["packed"].numel()
        bits = 8 * constants_bytes / x.numel()
        expected = Q.constants_bits_per_parameter(64, double_quant)
        assert bits == pytest.approx(expected, abs=1e-5)  # the 4-byte offset: ~1e-5 bits
        _, state = bnbf.quantize_4bit(x, compress_statistics=double_quant, quant_type="nf4")
        theirs = state.absmax.nbytes + (state.state2.absmax.nbytes + 4 if double_quant else 0)
        assert theirs == constants_bytes == Q.constants_nbytes(x.numel(), 64, double_quant)


@pytest.mark.parametrize("n", [64, 100, 64 * 256, 64 * 256 + 1, 1_000_003])
def test_constants_nbytes_counts_what_is_stored(n):
    x = torch.randn(n)
    for double_quant in (False, True):
        ours = Q.nf4_quantize(x, double_quant=double_quant)
        stored = Q.quantized_nbytes(ours) - ours["packed"].numel()
        assert Q.constants_nbytes(n, 64, double_quant) == stored


# --- absmax and blockwise int8 ---------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 4])
def test_absmax_round_trip_is_within_half_a_step(bits):
    torch.manual_seed(5)
    qmax = 2 ** (bits - 1) - 1
    x = torch.randn(10_000) * 3
    q, absmax = Q.absmax_quantize(x, bits)
    assert q.dtype == torch.int8
    assert int(q.abs().max()) == qmax
    assert float(absmax) == float(x.abs().max())
    error = (x - Q.absmax_dequantize(q, absmax, bits)).abs()
    assert float(error.max()) <= float(absmax) / (2 * qmax) * (1 + 1e-3)  # float32 rounding
    # rounding is to the nearest step: about a quarter step on average, not half
    assert float(error.mean()) < 0.3 * float(absmax) / qmax


def test_one_outlier_ruins_absmax_and_blocks_contain_it():
    torch.manual_seed(6)
    x = torch.randn(4096)
    q, _ = Q.absmax_quantize(x)
    assert q.unique().numel() > 150  # without the outlier most of the 255 levels are used
    x[100] = 60.0
    q, absmax = Q.absmax_quantize(x)
    assert q[x.abs() < 10].unique().numel() < 20  # with it, the other weights get a handful
    blocked_q, blocked_absmax = Q.blockwise_absmax_quantize(x, 64)
    whole = Q.error_stats(x, Q.absmax_dequantize(q, absmax))
    blocked = Q.error_stats(x, Q.blockwise_absmax_dequantize(blocked_q, blocked_absmax, 64))
    assert blocked["mean_abs"] < whole["mean_abs"] / 5


@pytest.mark.parametrize("block_size", [16, 64, 100, 4096])
def test_blockwise_round_trip_is_within_each_blocks_half_step(block_size):
    torch.manual_seed(7)
    x = torch.randn(3000) * torch.linspace(0.01, 5, 3000)
    q, absmax = Q.blockwise_absmax_quantize(x, block_size)
    assert q.shape == x.shape
    assert absmax.numel() == math.ceil(x.numel() / block_size)
    restored = Q.blockwise_absmax_dequantize(q, absmax, block_size)
    bound = torch.repeat_interleave(absmax / (2 * 127), block_size)[: x.numel()]
    assert torch.all((x - restored).abs() <= bound * (1 + 1e-3))  # float32 rounding
    assert torch.equal(absmax[0], x[:block_size].abs().max())


def test_row_wise_int8_equals_llm_int8():
    torch.manual_seed(8)
    x = torch.randn(64, 256) * torch.rand(64, 1)
    q, absmax = Q.blockwise_absmax_quantize(x, block_size=x.shape[1])
    theirs, row_stats, _ = bnbf.int8_vectorwise_quant(x.clone())
    assert torch.equal(absmax, row_stats)
    assert torch.equal(q, theirs)


# --- buckets and errors ----------------------------------------------------------------


def test_buckets():
    torch.manual_seed(9)
    x = torch.rand(10_000, dtype=torch.float64) * 100
    ten = Q.uniform_dequantize(Q.uniform_quantize(x, 0, 100, 10), 0, 100, 10)
    assert set(ten.unique().tolist()) == {5.0 + 10 * k for k in range(10)}
    assert float((x - ten).abs().max()) <= 5
    whole = Q.uniform_dequantize(Q.uniform_quantize(x, -0.5, 100.5, 101), -0.5, 100.5, 101)
    assert torch.allclose(whole, torch.round(x))  # 101 buckets of width 1 = whole numbers
    assert Q.uniform_quantize(torch.tensor([-3.0, 250.0]), 0, 100, 10).tolist() == [0, 9]
    assert [Q.bits_per_number(n) for n in (2, 10, 16, 17, 101, 256)] == [1, 4, 4, 5, 7, 8]


def test_error_stats():
    stats = Q.error_stats(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 0.0]))
    assert stats["max_abs"] == 4 and stats["mean_abs"] == 2
    assert stats["rmse"] == pytest.approx(math.sqrt(8))
    assert stats["relative"] == pytest.approx(4 / 5)
    assert stats["sqnr_db"] == pytest.approx(10 * math.log10(25 / 16))
    same = Q.error_stats(torch.ones(3), torch.ones(3))
    assert same["max_abs"] == 0 and same["sqnr_db"] == math.inf


def test_level_occupancy():
    share = Q.level_occupancy(torch.tensor([0, 0, 1, 3]), 5)
    assert share.tolist() == [0.5, 0.25, 0.0, 0.25, 0.0]
