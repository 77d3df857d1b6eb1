"""Training plumbing the QLoRA notebooks share."""

from __future__ import annotations

import torch


def keep_trainable_fp32(model: torch.nn.Module) -> int:
    """Cast every trainable parameter of ``model`` to fp32, in place; return how many were cast.

    trl's ``SFTTrainer`` stores the LoRA weights of a 4-bit model in bf16 when it is built
    (trl 1.16, ``trl/trainer/sft_trainer.py``, the ``_is_quantized_model`` cast in
    ``__init__``). A T4 has no bf16: outside fp16 autocast (``generate``, logit probes) peft
    then runs the adapter's products in emulated bf16, small late updates are lost to bf16
    rounding, and the adapter is saved in bf16. Call this after building the trainer and
    before ``trainer.train()``, which creates the optimizer: its states are then fp32 too.
    Frozen parameters are left as they are.
    """
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast
