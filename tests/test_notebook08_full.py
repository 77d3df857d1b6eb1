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
from helpers.notebook_code import code_cells, config, run_statements
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
    assert full["dtype"] == "float16" and full["max_length"] == 512
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


@pytest.fixture(scope="module")
def runs(full) -> dict:
    """The notebook's RUNS, as its cell defines them in FULL mode."""
    return run_statements(NOTEBOOK, "RUNS = {", {"b", "RUNS"}, {"CONFIG": full})["RUNS"]


def test_fsdp_stores_4bit_weights_in_fp16(runs):
    storage = {strategy: dtype for strategy, _, _, dtype in runs.values()}
    assert storage == {"single": "uint8", "ddp": "uint8", "fsdp": "float16"}  # no bf16 on a T4


def test_full_launch_arguments_parse(full, runs):
    for strategy, processes, batch, storage in runs.values():
        command = launch_command(
            strategy,
            {
                "model": full["model"],
                "output_dir": "o",
                "steps": full["steps"],
                "per_device_batch_size": batch,
                "learning_rate": full["learning_rate"],
                "max_length": full["max_length"],
                "load_in_4bit": True,
                "quant_storage": storage,
                "dtype": full["dtype"],
                "gradient_checkpointing": True,
                "cpu": full["cpu"],
            },
            num_processes=processes,
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


def test_every_full_run_fits_a_t4_by_notebook_01s_estimate(full, runs):
    sizes = _adapter_sizes()
    assert sum(sizes) == 2_097_152  # notebook 04's adapter
    for strategy, processes, batch, _ in runs.values():
        one_gpu = estimate_memory(
            real_config(full["model"]),
            "qlora",
            trainable_tensor_sizes=sizes,
            optimizer="adamw",
            batch_size=batch,
            seq_len=full["max_length"],
        )
        need = per_gpu(one_gpu, processes, ZERO_STAGE[strategy], trainable_tensors=len(sizes))
        assert need["total"] <= 0.9 * T4_MEMORY_BYTES, strategy
