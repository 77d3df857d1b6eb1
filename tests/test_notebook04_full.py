"""Static checks of notebook 04's FULL configuration, without downloading anything.

The settings are read from the notebook itself (its CONFIG cell, and the LoraConfig,
BitsAndBytesConfig and SFTConfig calls in its code), so the test checks what a learner runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from peft import LoraConfig, get_peft_model
from trl import SFTConfig

from helpers.architectures import (
    MISTRAL_7B_INSTRUCT,
    PUBLISHED_PARAMETERS,
    count_parameters,
    linear_module_names,
    meta_model,
    real_config,
)
from helpers.memory import COURSE_PLANS, estimate_memory, fits_t4
from helpers.notebook_code import code_cells, config, the_call

NOTEBOOK = "04_qlora_mistral_youtube.ipynb"
PLAN = COURSE_PLANS["04"]


@pytest.fixture(scope="module")
def full() -> dict:
    """The notebook's FULL settings: its CONFIG cell, run as in FULL mode."""
    return config(NOTEBOOK, "full")


@pytest.fixture(scope="module")
def lora_config() -> LoraConfig:
    return eval(the_call(NOTEBOOK, "LoraConfig"), {"LoraConfig": LoraConfig})


def test_full_is_the_seeds_recipe_and_notebook_01s_plan(full):
    assert full["model"] == MISTRAL_7B_INSTRUCT == PLAN["model_id"]
    assert not full["standin"]
    assert (full["learning_rate"], full["batch_size"], full["grad_accum"], full["epochs"]) == (
        2e-4,
        4,
        4,
        10,
    )
    # notebook 01 predicts memory for this plan: the notebook must run the same one
    assert full["batch_size"] == PLAN["memory"]["batch_size"]
    assert full["max_length"] == PLAN["memory"]["seq_len"]


def test_real_architecture_on_the_meta_device(full):
    model = meta_model(full["model"])
    assert type(model).__name__ == "MistralForCausalLM"
    assert all(p.device.type == "meta" for p in model.parameters())
    assert count_parameters(model)[0] == PUBLISHED_PARAMETERS[full["model"]]


def test_lora_targets_exist_and_train_2_097_152_parameters(full, lora_config):
    assert lora_config.r == PLAN["lora"]["r"] == 8
    assert lora_config.lora_alpha == PLAN["lora"]["lora_alpha"] == 32
    assert sorted(lora_config.target_modules) == sorted(PLAN["lora"]["target_modules"])
    assert (lora_config.lora_dropout, lora_config.bias) == (0.05, "none")
    model = meta_model(full["model"])
    assert set(lora_config.target_modules) <= set(linear_module_names(model))
    peft_model = get_peft_model(model, lora_config)
    total, trainable = count_parameters(peft_model)
    assert trainable == 2_097_152
    assert total == PUBLISHED_PARAMETERS[full["model"]] + trainable
    adapted = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert len(adapted) == 2 * real_config(full["model"]).num_hidden_layers  # A and B per layer
    assert all(".q_proj.lora_" in n for n in adapted)


def test_predicted_memory_fits_a_t4(full):
    estimate = estimate_memory(
        real_config(full["model"]),
        trainable_params=2_097_152,
        **{**PLAN["memory"], "batch_size": full["batch_size"], "seq_len": full["max_length"]},
    )
    assert fits_t4(estimate)
    assert 4e9 < estimate["weights"] < 5e9  # 7.2B weights: mostly 4-bit, embeddings in fp32


def test_full_training_arguments_construct(full, tmp_path):
    args = eval(
        the_call(NOTEBOOK, "SFTConfig"),
        {"SFTConfig": SFTConfig, "CONFIG": full, "OUTPUT_DIR": tmp_path, "Path": Path},
    )
    assert isinstance(args, SFTConfig)
    assert args.learning_rate == 2e-4
    assert args.per_device_train_batch_size == 4 and args.gradient_accumulation_steps == 4
    assert args.num_train_epochs == 10
    assert args.weight_decay == 0.01 and args.warmup_steps == 2
    assert args.fp16 and not args.bf16
    assert args.optim == "paged_adamw_8bit"
    assert args.eval_strategy == "epoch" and args.save_strategy == "epoch"
    assert args.load_best_model_at_end and args.metric_for_best_model == "loss"
    assert args.activation_checkpointing and args.gradient_checkpointing  # new name, old alias
    assert args.completion_only_loss is True
    assert args.max_length == full["max_length"]
    assert args.report_to == [] or args.report_to == ["none"] or args.report_to == "none"


def test_the_tune_can_resume_from_drive(full):
    # helpers.checkpoints, as in 05 and 06: off by default in both modes, one CONFIG key to
    # turn it on; the trainer saves every epoch, so there is a checkpoint to resume from
    small = config(NOTEBOOK, "small")
    assert full["save_to_drive"] is False and small["save_to_drive"] is False
    source = "\n".join(code_cells(NOTEBOOK))
    assert 'OUTPUT_DIR = output_dir("04_qlora_youtube", drive=CONFIG["save_to_drive"])' in source
    resume = 'resume_from_checkpoint=resume_point(OUTPUT_DIR / "checkpoints")'
    assert f"trainer.train({resume})" in source
