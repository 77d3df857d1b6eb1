"""Tests of helpers.lora: the hand-built LoRA layer against the base layer, its merged form
and peft's own LoRA layer; the trainable-parameter counts against peft's at full size."""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from helpers.architectures import MISTRAL_7B_INSTRUCT, PHI_1_5, PHI_2, count_parameters, meta_model
from helpers.lora import (
    ALL_LINEAR,
    LoRALinear,
    add_lora,
    count_lora_parameters,
    lora_parameter_count,
    lora_targets,
)

PHI_TARGETS = ["q_proj", "k_proj", "v_proj", "dense"]

# The settings of the course's later notebooks (04: Mistral, 05: phi-2, 06: phi-1.5).
SETTINGS = [
    (MISTRAL_7B_INSTRUCT, 8, ["q_proj"]),
    (PHI_2, 32, PHI_TARGETS),
    (PHI_1_5, 16, PHI_TARGETS),
]


def randomised(layer: LoRALinear, seed: int = 1) -> LoRALinear:
    """Give B non-zero values, as after training (at init B = 0 hides most mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.B.copy_(torch.randn(layer.B.shape, generator=generator) / math.sqrt(layer.r))
    return layer


def peft_twin(layer: LoRALinear, dropout: float = 0.0) -> nn.Module:
    """peft's LoRA layer on a copy of the same base layer, holding the same A and B."""
    net = nn.Sequential(OrderedDict(proj=copy.deepcopy(layer.base)))
    config = LoraConfig(
        r=layer.r,
        lora_alpha=layer.alpha,
        target_modules=["proj"],
        lora_dropout=dropout,
        bias="none",
    )
    twin = get_peft_model(net, config).base_model.model.proj
    with torch.no_grad():
        twin.lora_A["default"].weight.copy_(layer.A)
        twin.lora_B["default"].weight.copy_(layer.B)
    return twin


def train(layer: nn.Module, steps: int = 30, seed: int = 0) -> list[float]:
    """A few Adam steps of the adapter towards a random linear target; returns the losses."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(64, layer.base.in_features, generator=generator)
    targets = torch.randn(64, layer.base.out_features, generator=generator)
    optimizer = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = (layer(inputs) - targets).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------------------- the layer


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(16, 24), (40, 8)])
def test_layer_equals_base_at_init(bias, shape):
    torch.manual_seed(0)
    base = nn.Linear(*shape, bias=bias)
    layer = LoRALinear(base, r=4, alpha=16, dropout=0.1)
    x = torch.randn(3, 5, shape[0])
    layer.train()  # dropout on: still exact, because B = 0
    assert torch.equal(layer(x), base(x))
    assert torch.count_nonzero(layer.delta_weight()) == 0


def test_init_like_peft_and_frozen_base():
    torch.manual_seed(0)
    base = nn.Linear(50, 30)
    layer = LoRALinear(base, r=6, alpha=12)
    assert layer.A.shape == (6, 50) and layer.B.shape == (30, 6)
    assert layer.scaling == 2.0
    # Kaiming-uniform with a=sqrt(5) draws from U(-1/sqrt(in), 1/sqrt(in)).
    bound = 1 / math.sqrt(50)
    largest = layer.A.detach().abs().max().item()
    assert 0.8 * bound < largest <= bound
    assert layer.A.detach().std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    assert torch.all(layer.B == 0)
    assert layer.base is base  # wrapped, not copied
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"A", "B"}
    assert sum(p.numel() for p in layer.parameters() if p.requires_grad) == lora_parameter_count(
        50, 30, 6
    )


def test_rank_must_be_positive():
    with pytest.raises(ValueError):
        LoRALinear(nn.Linear(4, 4), r=0)


def test_only_b_moves_on_the_first_step():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(12, 10), r=3)
    layer(torch.randn(7, 12)).square().sum().backward()
    assert torch.count_nonzero(layer.A.grad) == 0  # dL/dA = scaling * B^T ... and B = 0
    assert torch.count_nonzero(layer.B.grad) > 0
    assert layer.base.weight.grad is None


def test_training_changes_only_the_adapter():
    torch.manual_seed(0)
    base = nn.Linear(20, 16)
    weight, bias = base.weight.clone(), base.bias.clone()
    layer = LoRALinear(base, r=4, alpha=8)
    losses = train(layer)
    assert losses[-1] < 0.8 * losses[0]
    assert torch.equal(base.weight, weight) and torch.equal(base.bias, bias)
    assert torch.count_nonzero(layer.B) > 0


def test_delta_weight_is_the_update():
    torch.manual_seed(0)
    layer = randomised(LoRALinear(nn.Linear(9, 11), r=2, alpha=5))
    x = torch.randn(4, 9)
    expected = x @ (layer.base.weight + layer.delta_weight()).T + layer.base.bias
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.delta_weight(), 2.5 * layer.B @ layer.A)


@pytest.mark.parametrize("bias", [True, False])
def test_merged_equals_adapter_after_training(bias):
    torch.manual_seed(0)
    base = nn.Linear(24, 18, bias=bias)
    original = base.weight.clone()
    layer = LoRALinear(base, r=4, alpha=8)
    train(layer)
    layer.eval()
    x = torch.randn(2, 6, 24)
    with torch.no_grad():
        adapted = layer(x)
        layer.merge()
        assert layer.merged
        torch.testing.assert_close(base(x), adapted)  # a plain nn.Linear now does it all
        torch.testing.assert_close(layer(x), adapted)
        torch.testing.assert_close(base.weight, original + layer.delta_weight())
        with pytest.raises(RuntimeError):
            layer.merge()
        layer.unmerge()
        torch.testing.assert_close(base.weight, original)
        torch.testing.assert_close(layer(x), adapted)
        with pytest.raises(RuntimeError):
            layer.unmerge()


def test_merged_layer_ignores_the_adapter_path():
    torch.manual_seed(0)
    layer = randomised(LoRALinear(nn.Linear(8, 8), r=2))
    layer.merge()
    x = torch.randn(3, 8)
    before = layer(x)
    with torch.no_grad():
        layer.A.zero_()  # the update now lives in W; A and B are not used
    assert torch.equal(layer(x), before)


def test_dropout_only_on_the_adapter_path():
    torch.manual_seed(0)
    layer = randomised(LoRALinear(nn.Linear(32, 32), r=4, dropout=0.5))
    x = torch.randn(16, 32)
    layer.train()
    assert not torch.equal(layer(x), layer(x))  # random masks
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    with torch.no_grad():
        layer.B.zero_()
    layer.train()
    assert torch.equal(layer(x), layer.base(x))  # the base path never sees dropout


# ---------------------------------------------------------------------------- against peft


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("r, alpha", [(1, 1), (4, 16), (8, 32), (16, 8)])
def test_equals_peft_layer_forward_and_backward(bias, r, alpha):
    torch.manual_seed(0)
    mine = randomised(LoRALinear(nn.Linear(40, 24, bias=bias), r=r, alpha=alpha))
    twin = peft_twin(mine)
    assert twin.scaling["default"] == mine.scaling
    x = torch.randn(3, 7, 40)
    x_mine, x_twin = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_mine, out_twin = mine(x_mine), twin(x_twin)
    torch.testing.assert_close(out_mine, out_twin)
    weights = torch.randn(out_mine.shape)
    (out_mine * weights).sum().backward()
    (out_twin * weights).sum().backward()
    torch.testing.assert_close(mine.A.grad, twin.lora_A["default"].weight.grad)
    torch.testing.assert_close(mine.B.grad, twin.lora_B["default"].weight.grad)
    torch.testing.assert_close(x_mine.grad, x_twin.grad)
    assert torch.count_nonzero(mine.A.grad) > 0 and torch.count_nonzero(mine.B.grad) > 0
    assert twin.base_layer.weight.grad is None


def test_equals_peft_layer_with_dropout_in_training():
    torch.manual_seed(0)
    mine = randomised(LoRALinear(nn.Linear(32, 32), r=4, alpha=8, dropout=0.3))
    twin = peft_twin(mine, dropout=0.3)
    mine.train()
    twin.train()
    x = torch.randn(10, 32)
    torch.manual_seed(123)
    out_mine = mine(x)
    torch.manual_seed(123)
    out_twin = twin(x)
    torch.testing.assert_close(out_mine, out_twin)
    torch.manual_seed(7)
    assert not torch.allclose(mine(x), out_mine)  # another mask gives another output


def test_merge_equals_peft_merge_after_training():
    torch.manual_seed(0)
    mine = LoRALinear(nn.Linear(30, 20), r=4, alpha=8)
    train(mine)
    twin = peft_twin(mine)
    mine.merge()
    twin.merge()
    torch.testing.assert_close(mine.base.weight, twin.base_layer.weight)


# ---------------------------------------------------------------------------- counting


class Tiny(nn.Module):
    """A two-block toy with an output head, named like a transformer."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "q_proj": nn.Linear(8, 8),
                    "v_proj": nn.Linear(8, 4, bias=False),
                    "norm": nn.LayerNorm(8),
                }
            )
            for _ in range(2)
        )
        self.lm_head = nn.Linear(8, 100, bias=False)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head


def test_lora_targets_by_name_and_all_linear():
    model = Tiny()
    assert lora_targets(model, ["q_proj"]) == ["layers.0.q_proj", "layers.1.q_proj"]
    assert lora_targets(model, ["layers.1.v_proj"]) == ["layers.1.v_proj"]
    assert lora_targets(model, ALL_LINEAR) == [
        "layers.0.q_proj",
        "layers.0.v_proj",
        "layers.1.q_proj",
        "layers.1.v_proj",
    ]
    with pytest.raises(ValueError, match="o_proj"):
        lora_targets(model, ["q_proj", "o_proj"])
    with pytest.raises(ValueError):
        lora_targets(model, ["norm"])  # not a linear layer
    with pytest.raises(ValueError):
        lora_targets(model, "q_proj")  # a bare string is only for "all-linear"


def test_count_lora_parameters_small_model_by_hand():
    model = Tiny()
    assert count_lora_parameters(model, ["q_proj"], r=2) == 2 * 2 * (8 + 8)
    assert count_lora_parameters(model, ALL_LINEAR, r=2) == 2 * (2 * 16 + 2 * 12)
    assert count_lora_parameters(model, ["q_proj"], r=2, bias="lora_only") == 64 + 2 * 8
    assert count_lora_parameters(model, ["q_proj"], r=2, bias="all") == 64 + 2 * 8 + 2 * 8
    with pytest.raises(ValueError):
        count_lora_parameters(model, ["q_proj"], r=2, bias="some")


def peft_trainable(model_id: str, r: int, targets, bias: str = "none") -> int:
    config = LoraConfig(
        r=r, lora_alpha=2 * r, target_modules=targets, bias=bias, task_type="CAUSAL_LM"
    )
    model = get_peft_model(meta_model(model_id), config, low_cpu_mem_usage=True)
    trainable, _ = model.get_nb_trainable_parameters()
    return trainable


@pytest.mark.parametrize("model_id, r, targets", SETTINGS)
@pytest.mark.parametrize("all_linear", [False, True], ids=["notebook", "all-linear"])
def test_counts_match_peft_at_full_size(model_id, r, targets, all_linear):
    targets = ALL_LINEAR if all_linear else targets
    ours = count_lora_parameters(meta_model(model_id), targets, r)
    assert ours == peft_trainable(model_id, r, targets)


def test_counts_of_the_course_notebooks():
    # The numbers the later notebooks print (issues 6 and 7 state them).
    assert count_lora_parameters(meta_model(MISTRAL_7B_INSTRUCT), ["q_proj"], 8) == 2_097_152
    assert count_lora_parameters(meta_model(PHI_2), PHI_TARGETS, 32) == 20_971_520


@pytest.mark.parametrize("bias", ["lora_only", "all"])
def test_bias_counts_match_peft(bias):
    ours = count_lora_parameters(meta_model(PHI_1_5), PHI_TARGETS, 16, bias=bias)
    assert ours > count_lora_parameters(meta_model(PHI_1_5), PHI_TARGETS, 16)
    assert ours == peft_trainable(PHI_1_5, 16, PHI_TARGETS, bias=bias)


@pytest.mark.parametrize("model_id", [MISTRAL_7B_INSTRUCT, PHI_2])
def test_add_lora_on_meta_model_matches_peft(model_id):
    model = meta_model(model_id)
    total_before, _ = count_parameters(model)
    add_lora(model, ALL_LINEAR, r=4, alpha=8)
    total, trainable = count_parameters(model)
    expected = peft_trainable(model_id, 4, ALL_LINEAR)
    assert trainable == expected
    assert total == total_before + expected
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == len(lora_targets(meta_model(model_id), ALL_LINEAR))
    assert not isinstance(model.lm_head, LoRALinear)


def test_add_lora_starts_as_the_base_model():
    torch.manual_seed(0)
    model = Tiny()
    frozen = copy.deepcopy(model)
    add_lora(model, ["q_proj", "v_proj"], r=2, alpha=4, dropout=0.1)
    assert isinstance(model.layers[0]["q_proj"], LoRALinear)
    assert not isinstance(model.lm_head, LoRALinear)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith((".A", ".B")) for n in trainable)
    x = torch.randn(5, 8)
    model.train()
    for block, reference in zip(model.layers, frozen.layers, strict=True):
        assert torch.equal(block["q_proj"](x), reference["q_proj"](x))
        assert torch.equal(block["v_proj"](x), reference["v_proj"](x))
