"""Notebook 06's FULL configuration, checked without a GPU or a download.

The settings and the library calls are read from the notebook itself (its CONFIG cell, its
BitsAndBytesConfig, LoraConfig and SFTConfig statements), so that what is checked here is what
runs on Colab.
"""

import pytest

from helpers.architectures import (
    PHI_1_5,
    REAL_CONFIGS,
    count_parameters,
    linear_module_names,
    meta_model,
    real_config,
)
from helpers.lora import count_lora_parameters, lora_targets
from helpers.memory import COURSE_PLANS, T4_MEMORY_BYTES, estimate_memory, fits_t4
from helpers.notebook_code import cell_with, code_cells, run_statements

NOTEBOOK = "06_qlora_phi15_ds1000.ipynb"
PHI = REAL_CONFIGS[PHI_1_5]


CONFIGS = run_statements(NOTEBOOK, "FULL = {", {"FULL", "SMALL"}, {})
FULL, SMALL = CONFIGS["FULL"], CONFIGS["SMALL"]
PLAN = COURSE_PLANS["06"]


@pytest.fixture(scope="module")
def phi():
    return meta_model(PHI_1_5)


def test_the_config_cell_shows_full_and_small_side_by_side():
    assert set(FULL) == set(SMALL)
    assert "CONFIG = pick(MODE, FULL, SMALL)" in cell_with(NOTEBOOK, "FULL = {")
    # SMALL is the same lesson with small numbers: same model family and adapter plan.
    for key in ("model_id", "lora_r", "lora_alpha", "target_modules", "max_length"):
        assert SMALL[key] == FULL[key], key


def test_full_is_the_real_lesson():
    assert FULL["model_id"] == PHI_1_5 and FULL["standin"] is False
    assert FULL["problems"] == {"path": "xlangai/DS-1000", "split": "test"}
    assert "load_dataset(**CONFIG[\"problems\"])" in cell_with(NOTEBOOK, "load_dataset(")
    assert FULL["fp16"] is True  # a T4 has no bf16
    assert FULL["max_length"] <= PHI["max_position_embeddings"]
    assert FULL["max_new_tokens"] < PHI["max_position_embeddings"] // 2
    assert FULL["eval_limit"] is None or 20 <= FULL["eval_limit"] <= 1000
    assert 0 < FULL["eval_fraction"] < 0.5


def test_one_code_path_the_modes_differ_only_in_config():
    # No cell branches on the mode: what differs is a CONFIG value (issue 11, item 9).
    for source in code_cells(NOTEBOOK):
        assert "MODE ==" not in source and "MODE !=" not in source, source[:200]
    assert SMALL["standin"] is True
    # SMALL's problems are read, with the same call, from the course's own file.
    from datasets import load_dataset

    from helpers.ds1000 import load_problems

    assert load_dataset(**SMALL["problems"]).to_list() == load_problems()
    assert "build_standin(CONFIG[\"model_id\"]) if CONFIG[\"standin\"]" in cell_with(
        NOTEBOOK, "MODEL_PATH = "
    )


def test_kbit_preparation_matches_04_and_05():
    source = cell_with(NOTEBOOK, "prepare_model_for_kbit_training(\n")
    assert 'gradient_checkpointing_kwargs={"use_reentrant": False}' in source


def test_scored_problems_are_stratified_and_compared_paired():
    assert "stratified_sample(" in cell_with(NOTEBOOK, "split_by_origin(")
    after = cell_with(NOTEBOOK, "answers_after = answer_all(")
    assert "mcnemar_exact(" in after and "paired_bootstrap_interval(" in after


def test_generation_stops_at_the_tokenizers_eos():
    source = cell_with(NOTEBOOK, "BitsAndBytesConfig(")
    assert "model.generation_config.eos_token_id = tokenizer.eos_token_id" in source
    assert "model.generation_config.pad_token_id = tokenizer.pad_token_id" in source


def test_trainable_parameters_are_kept_fp32_before_training():
    source = cell_with(NOTEBOOK, "trainer.train(")
    assert source.index("keep_trainable_fp32(model)") < source.index("trainer.train(")
    assert 'check_reference_losses("06", trainer.state.log_history, MODE)' in source


def test_full_follows_the_course_plan_of_notebook_01():
    lora, memory = PLAN["lora"], PLAN["memory"]
    assert PLAN["model_id"] == FULL["model_id"]
    assert (FULL["lora_r"], FULL["lora_alpha"]) == (lora["r"], lora["lora_alpha"])
    assert FULL["target_modules"] == lora["target_modules"]
    assert memory["method"] == "qlora" and memory["optimizer"] == "paged_adamw_8bit"
    assert FULL["batch_size"] == memory["batch_size"]
    assert FULL["max_length"] == memory["seq_len"]
    assert memory["gradient_checkpointing"] is True


def test_the_target_modules_exist_in_the_real_phi15(phi):
    names = lora_targets(phi, FULL["target_modules"])
    assert len(names) == 4 * PHI["num_hidden_layers"]
    assert {"fc1", "fc2"} <= set(linear_module_names(phi))  # the MLP option the notebook shows


def test_trainable_parameters_of_the_full_adapter():
    namespace = run_statements(NOTEBOOK, "LoraConfig(", {"lora_config"}, {"CONFIG": FULL})
    lora_config = namespace["lora_config"]
    assert lora_config.r == 16 and lora_config.lora_alpha == 32
    from peft import get_peft_model

    phi = meta_model(PHI_1_5)  # a fresh one: get_peft_model changes the model in place
    total_before, _ = count_parameters(phi)
    peft_model = get_peft_model(phi, lora_config)
    total, trainable = count_parameters(peft_model)
    hidden, layers = PHI["hidden_size"], PHI["num_hidden_layers"]
    # Four square (hidden x hidden) projections per layer, each with A (r x h) and B (h x r).
    expected = layers * 4 * FULL["lora_r"] * (hidden + hidden)
    assert trainable == expected == 6_291_456
    assert trainable == count_lora_parameters(meta_model(PHI_1_5), FULL["target_modules"], 16)
    assert total == total_before + trainable
    assert trainable / total < 0.005


@pytest.mark.parametrize("extra", [[], ["fc1", "fc2"]])
def test_the_predicted_memory_fits_a_t4(phi, extra):
    trainable = count_lora_parameters(phi, FULL["target_modules"] + extra, FULL["lora_r"])
    estimate = estimate_memory(real_config(PHI_1_5), trainable_params=trainable, **PLAN["memory"])
    assert fits_t4(estimate)
    assert estimate["total"] < T4_MEMORY_BYTES / 2  # phi-1.5 leaves a T4 half free
    # The notebook's own estimate uses the same numbers.
    source = cell_with(NOTEBOOK, 'estimate_memory(\n    real_config(CONFIG["model_id"])')
    for needle in ('"qlora"', 'seq_len=CONFIG["max_length"]', 'optimizer="paged_adamw_8bit"'):
        assert needle in source


def test_the_training_arguments_construct_for_full(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"CONFIG": FULL, "OUTPUT_DIR": tmp_path}
    args = run_statements(NOTEBOOK, "SFTConfig(", {"training_args"}, namespace)["training_args"]
    # Checkpoints (to resume after a disconnect) only when the learner opts in.
    assert FULL["save_to_drive"] is False and args.save_strategy == "no"
    namespace = {"CONFIG": {**FULL, "save_to_drive": True}, "OUTPUT_DIR": tmp_path}
    with_drive = run_statements(NOTEBOOK, "SFTConfig(", {"training_args"}, namespace)
    assert with_drive["training_args"].save_strategy == "steps"
    assert args.optim == "paged_adamw_8bit"
    assert args.fp16 and not args.bf16
    assert args.activation_checkpointing
    assert args.completion_only_loss is True
    assert args.max_length == FULL["max_length"]
    assert args.max_steps == FULL["max_steps"]
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 16
    assert args.eval_strategy == "steps" and args.eval_steps == FULL["eval_steps"]
    assert args.report_to in ([], "none", ["none"])
    # A T4-session-sized run: one to four passes over the ~80% of DS-1000 used for training.
    train_size = 1000 * (1 - FULL["eval_fraction"])
    passes = args.max_steps * 16 / train_size
    assert 1 <= passes <= 4, passes
