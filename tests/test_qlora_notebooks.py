"""What every QLoRA notebook (04-06) must load: 4-bit NF4, double quantization, fp16 compute."""

import pytest
import torch
from transformers import BitsAndBytesConfig

from helpers.notebook_code import config, the_call

QLORA_NOTEBOOKS = [
    "04_qlora_mistral_youtube.ipynb",
    "05_qlora_phi2_summarizer.ipynb",
    "06_qlora_phi15_ds1000.ipynb",
]


@pytest.mark.parametrize("notebook", QLORA_NOTEBOOKS)
def test_quantization_is_nf4_double_quant_fp16(notebook):
    full = config(notebook, "full")  # as FULL mode runs it: CONFIG may hold the compute dtype
    quantization = eval(
        the_call(notebook, "BitsAndBytesConfig"),
        {"BitsAndBytesConfig": BitsAndBytesConfig, "torch": torch, "CONFIG": full},
    )
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_use_double_quant
    assert quantization.bnb_4bit_compute_dtype == torch.float16  # the T4 has no bf16
