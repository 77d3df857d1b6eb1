"""LoRA by hand, in plain PyTorch: the layer that peft builds, small enough to read.

A LoRA layer keeps a linear layer's weight ``W`` (out x in) frozen and learns a low-rank
update beside it::

    y = x W^T + b  +  (alpha / r) * dropout(x) A^T B^T          i.e.  dW = (alpha / r) B A

with ``A`` (r x in) initialised like ``nn.Linear`` (Kaiming-uniform, as peft does) and
``B`` (out x r) initialised to zero, so the layer starts out *exactly* as the base layer.
After training, ``dW`` can be added into ``W`` (:meth:`LoRALinear.merge`) and the layer is
an ordinary linear layer again: inference costs nothing extra.

The counting functions here say how many numbers LoRA trains for a model and a list of
target modules, by the same rules peft uses (``target_modules`` names match the end of a
module's name; ``"all-linear"`` means every linear layer but the output head), so they
work on full-size models built on the meta device (:func:`helpers.architectures.meta_model`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ALL_LINEAR = "all-linear"
BIAS_CHOICES = ("none", "lora_only", "all")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / r) * B @ A``.

    Args:
        base: the linear layer to adapt; its weight and bias are frozen (not copied).
        r: the rank of the update (rows of ``A``, columns of ``B``).
        alpha: the scale numerator; the update is multiplied by ``alpha / r``.
        dropout: dropout probability on the input of the adapter path only.
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 8, dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"the rank r must be a positive integer, not {r}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        # A like nn.Linear's default weight (peft's init_lora_weights=True); B = 0 so dW = 0.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update the adapter adds to the weight: ``(alpha / r) * B @ A`` (out x in)."""
        return self.scaling * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``base(x) + scaling * B(A(dropout(x)))``; just ``base(x)`` once merged."""
        out = self.base(x)
        if self.merged:
            return out
        # F.linear(x, A) is x @ A.T: the same calls, in the same order, as peft's layer.
        return out + F.linear(F.linear(self.dropout(x), self.A), self.B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into the frozen weight: ``W <- W + dW``. The adapter then idles."""
        if self.merged:
            raise RuntimeError("the adapter is already merged")
        self.base.weight += self.delta_weight()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update out of the weight again: ``W <- W - dW`` (to float round-off)."""
        if not self.merged:
            raise RuntimeError("the adapter is not merged")
        self.base.weight -= self.delta_weight()
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


def lora_parameter_count(in_features: int, out_features: int, r: int) -> int:
    """Trainable numbers of one LoRA adapter on an ``out x in`` weight: ``r * (in + out)``."""
    return r * (in_features + out_features)


def lora_targets(model: nn.Module, target_modules: list[str] | str) -> list[str]:
    """The full names of the linear layers that LoRA would adapt, by peft's rules.

    Args:
        model: any module (a meta-device model works: only names and shapes are read).
        target_modules: short names such as ``["q_proj", "v_proj"]`` (a module matches when
            its full name equals one or ends with ``"." + name``), or ``"all-linear"``: every
            ``nn.Linear`` except the model's output head (``lm_head``).

    Raises:
        ValueError: when no linear layer matches, or a listed name matches none.
    """
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if isinstance(target_modules, str):
        if target_modules != ALL_LINEAR:
            raise ValueError(f"give a list of names or {ALL_LINEAR!r}, not {target_modules!r}")
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        names = [n for n, m in linears.items() if m is not head]
    else:
        names = [n for n in linears if any(_matches(n, t) for t in target_modules)]
        missing = [t for t in target_modules if not any(_matches(n, t) for n in names)]
        if missing:
            short = sorted({n.rsplit(".", 1)[-1] for n in linears})
            raise ValueError(f"no linear layer is named {missing}; there are: {short}")
    if not names:
        raise ValueError(f"no linear layer matches {target_modules!r}")
    return names


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of targets: the full name, or its ending after a dot."""
    return name == target or name.endswith(f".{target}")


def count_lora_parameters(
    model: nn.Module, target_modules: list[str] | str, r: int, bias: str = "none"
) -> int:
    """How many parameters LoRA with rank ``r`` on ``target_modules`` trains in ``model``.

    Args:
        model: the base model (before any adapter; meta-device models work).
        target_modules: as in :func:`lora_targets` (a list of names, or ``"all-linear"``).
        r: the rank.
        bias: peft's ``bias`` setting: ``"none"`` (biases stay frozen), ``"lora_only"``
            (the biases of the adapted layers train too) or ``"all"`` (every bias in the
            model trains).
    """
    if bias not in BIAS_CHOICES:
        raise ValueError(f"bias must be one of {BIAS_CHOICES}, not {bias!r}")
    modules = dict(model.named_modules())
    targets = [modules[n] for n in lora_targets(model, target_modules)]
    count = sum(lora_parameter_count(m.in_features, m.out_features, r) for m in targets)
    if bias == "lora_only":
        count += sum(m.bias.numel() for m in targets if m.bias is not None)
    elif bias == "all":
        count += sum(p.numel() for n, p in model.named_parameters() if n.split(".")[-1] == "bias")
    return count


def add_lora(
    model: nn.Module,
    target_modules: list[str] | str,
    r: int = 8,
    alpha: float = 8,
    dropout: float = 0.0,
) -> nn.Module:
    """Freeze ``model`` and wrap each target linear layer in a :class:`LoRALinear`, in place.

    What ``peft.get_peft_model`` does for LoRA with ``bias="none"``, by hand. Returns the
    model, whose only trainable parameters are then the adapters' ``A`` and ``B``.
    """
    names = lora_targets(model, target_modules)
    for p in model.parameters():
        p.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return model
