"""Static checks of notebook 08's FULL configuration, without a GPU or the Hub.

The settings come from the notebook's own CONFIG cell; the script's arguments are parsed by
``distributed/train.py`` itself; memory comes from notebook 01's estimator.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import BitsAndBytesConfig

from helpers.architectures import MISTRAL_7B_INSTRUCT, meta_model, real_config
from helpers.distributed import DISTRIBUTED, ZERO_STAGE, launch_command
from helpers.memory import COURSE_PLANS, T4_MEMORY_BYTES, estimate_memory
from helpers.notebook_code import code_cells, config
from helpers.scaling import per_gpu

NOTEBOOK = "08_beyond_one_gpu.ipynb"
spec = importlib.util.spec_from_file_location("train", DISTRIBUTED / "train.py")
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)


@pytest.fixture(scope="module")
def full() -> dict:
    return config(NOTEBOOK, "full")


def test_full_and_small_set_the_same_keys():
    assert set(config(NOTEBOOK, "full")) == set(config(NOTEBOOK, "small"))


def test_full_is_notebook_04s_qlora_on_gpus(full):
    assert full["model"] == MISTRAL_7B_INSTRUCT and not full["standin"] and not full["cpu"]
    assert full["load_in_4bit"] and full["method"] == "qlora" and full["dtype"] == "float16"
    assert full["fsdp_quant_storage"] == "float16", "a T4 has no bf16; FSDP needs a float dtype"
    assert full["gradient_checkpointing"] and full["max_length"] == 512
    # the script's LoRA defaults are notebook 04's plan
    args = train.parse_args(["--model", "m", "--output-dir", "o"])
    lora = COURSE_PLANS["04"]["lora"]
    assert (args.lora_r, args.lora_alpha, args.target_modules.split(",")) == (
        lora["r"],
        lora["lora_alpha"],
        lora["target_modules"],
    )


def test_the_preamble_asks_for_two_gpus():
    assert "preamble(seed=42, needs_gpu=True, gpus=2)" in code_cells(NOTEBOOK)[0]


@pytest.mark.parametrize("strategy", ["single", "ddp", "fsdp"])
def test_full_launch_arguments_parse(full, strategy):
    storage = full["fsdp_quant_storage"] if strategy == "fsdp" else "uint8"
    command = launch_command(
        strategy,
        {
            "model": full["model"],
            "output_dir": "o",
            "steps": full["steps"],
            "per_device_batch_size": full["per_device_batch_size"],
            "learning_rate": full["learning_rate"],
            "max_length": full["max_length"],
            "load_in_4bit": full["load_in_4bit"],
            "quant_storage": storage,
            "dtype": full["dtype"],
            "gradient_checkpointing": full["gradient_checkpointing"],
            "cpu": full["cpu"],
        },
    )
    script = command.index(str(DISTRIBUTED / "train.py"))
    args = train.parse_args(command[script + 1 :])
    assert args.load_in_4bit and args.quant_storage == storage and not args.cpu
    BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_storage=getattr(torch, storage))


def _adapter_sizes() -> list[int]:
    lora = COURSE_PLANS["04"]["lora"]
    model = get_peft_model(
        meta_model(MISTRAL_7B_INSTRUCT),
        LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"], target_modules=["q_proj"]),
    )
    return [p.numel() for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize(
    ("strategy", "processes", "factor"), [("single", 1, 2), ("ddp", 2, 1), ("fsdp", 2, 1)]
)
def test_every_full_run_fits_a_t4_by_notebook_01s_estimate(full, strategy, processes, factor):
    sizes = _adapter_sizes()
    assert sum(sizes) == 2_097_152  # notebook 04's adapter
    one_gpu = estimate_memory(
        real_config(full["model"]),
        full["method"],
        trainable_tensor_sizes=sizes,
        optimizer="adamw",
        batch_size=factor * full["per_device_batch_size"],
        seq_len=full["max_length"],
        gradient_checkpointing=full["gradient_checkpointing"],
    )
    need = per_gpu(one_gpu, processes, ZERO_STAGE[strategy], trainable_tensors=len(sizes))
    assert need["total"] <= 0.9 * T4_MEMORY_BYTES
