import torch

from helpers.training import keep_trainable_fp32


def test_trainable_parameters_become_fp32_and_frozen_ones_stay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)).to(torch.bfloat16)
    model[0].requires_grad_(False)
    assert keep_trainable_fp32(model) == 2  # the second layer's weight and bias
    assert {p.dtype for p in model[1].parameters()} == {torch.float32}
    assert {p.dtype for p in model[0].parameters()} == {torch.bfloat16}
    assert keep_trainable_fp32(model) == 0  # nothing left to cast


def test_the_cast_keeps_the_values_and_the_parameter_objects():
    layer = torch.nn.Linear(3, 3).to(torch.bfloat16)
    weight, before = layer.weight, layer.weight.detach().clone()
    keep_trainable_fp32(layer)
    assert layer.weight is weight  # an optimizer built later sees the same parameter
    assert torch.equal(layer.weight.detach(), before.float())
