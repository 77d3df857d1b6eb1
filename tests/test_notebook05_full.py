"""Static checks of notebook 05's FULL configuration, without downloading anything.

The settings are read from the notebook itself (its CONFIG cell, and the LoraConfig,
BitsAndBytesConfig and SFTConfig calls in its code), so the test checks what a learner
runs. The course's own summaries (SMALL mode's data) are checked here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from trl import SFTConfig

from helpers.architectures import (
    PHI_2,
    PUBLISHED_PARAMETERS,
    count_parameters,
    linear_module_names,
    meta_model,
    real_config,
)
from helpers.data import data_path, read_jsonl
from helpers.memory import COURSE_PLANS, estimate_memory, fits_t4
from helpers.notebook_code import cell_with, code_cells, config, the_call

NOTEBOOK = "05_qlora_phi2_summarizer.ipynb"
PLAN = COURSE_PLANS["05"]
FULL_TRAINABLE = 20_971_520


@pytest.fixture(scope="module")
def full() -> dict:
    return config(NOTEBOOK, "full")


@pytest.fixture(scope="module")
def small() -> dict:
    return config(NOTEBOOK, "small")


@pytest.fixture(scope="module")
def lora_config() -> LoraConfig:
    return eval(the_call(NOTEBOOK, "LoraConfig"), {"LoraConfig": LoraConfig})


@pytest.fixture(scope="module")
def full_args(full, tmp_path_factory) -> SFTConfig:
    out = tmp_path_factory.mktemp("sft")
    return eval(
        the_call(NOTEBOOK, "SFTConfig"),
        {"SFTConfig": SFTConfig, "CONFIG": full, "OUTPUT_DIR": out, "torch": torch},
    )


def test_full_is_phi2_on_the_hub_dataset_with_notebook_01s_plan(full):
    assert full["model"] == PHI_2 == PLAN["model_id"]
    assert not full["standin"]
    assert full["dataset"] == {"path": "yasminesarraj/texts_summary"}
    assert full["learning_rate"] == 2e-4
    assert full["compute_dtype"] == torch.float16  # a T4: fp16 compute, no bf16
    # Phi-2's whole context: the reports of the data set are long (issue 11), every token counts
    assert full["max_length"] == real_config(PHI_2).max_position_embeddings == 2048
    assert 1 <= full["epochs"] <= 8  # a few passes over a few dozen reports, the best one kept


def test_full_prompts_and_summaries_fit_phi2s_context(full):
    context = real_config(PHI_2).max_position_embeddings
    assert context == 2048
    assert full["max_input_tokens"] < full["max_length"]  # room for the summary in training
    assert full["min_train_reports"] >= 8
    # at evaluation: instruction (under 100 tokens) + report + generated summary
    assert 100 + full["max_input_tokens"] + full["max_new_tokens"] <= context


def test_small_uses_the_course_data_and_the_same_model(small, full):
    assert small["model"] == full["model"] and small["standin"]
    assert small["dataset"]["path"] == "json"
    files = small["dataset"]["data_files"]
    assert set(files) == {"train", "test"}
    for path in map(Path, files.values()):
        assert path.is_file() and path.parent == data_path("summaries")
    assert set(small) == set(full)  # one code path: the same settings, other numbers
    assert small["max_length"] < full["max_length"]


def test_real_architecture_on_the_meta_device(full):
    model = meta_model(full["model"])
    assert type(model).__name__ == "PhiForCausalLM"
    assert all(p.device.type == "meta" for p in model.parameters())
    assert count_parameters(model)[0] == PUBLISHED_PARAMETERS[full["model"]]


def test_lora_targets_exist_and_train_20_971_520_parameters(full, lora_config):
    assert (lora_config.r, lora_config.lora_alpha) == (32, 32)
    assert (PLAN["lora"]["r"], PLAN["lora"]["lora_alpha"]) == (32, 32)
    assert sorted(lora_config.target_modules) == sorted(PLAN["lora"]["target_modules"])
    assert sorted(lora_config.target_modules) == ["dense", "k_proj", "q_proj", "v_proj"]
    assert (lora_config.lora_dropout, lora_config.bias) == (0.05, "none")
    assert lora_config.task_type == "CAUSAL_LM"
    model = meta_model(full["model"])
    assert set(lora_config.target_modules) <= set(linear_module_names(model))
    peft_model = get_peft_model(model, lora_config)
    total, trainable = count_parameters(peft_model)
    assert trainable == FULL_TRAINABLE
    assert total == PUBLISHED_PARAMETERS[full["model"]] + trainable
    adapted = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    layers = real_config(full["model"]).num_hidden_layers
    assert len(adapted) == 2 * 4 * layers  # A and B for 4 matrices per layer
    # "dense" is the attention's output projection in Phi; the MLP (fc1, fc2) is untouched
    assert all(".self_attn." in n for n in adapted)


def test_predicted_memory_fits_a_t4(full, full_args):
    plan = {
        **PLAN["memory"],
        "batch_size": full_args.per_device_train_batch_size,
        "seq_len": full["max_length"],
        "gradient_checkpointing": full_args.activation_checkpointing,
        "optimizer": full_args.optim,
    }
    # notebook 01's plan for 05 (COURSE_PLANS) is at FULL's sequence length
    assert plan == {**PLAN["memory"], "seq_len": full["max_length"]}
    estimate = estimate_memory(real_config(full["model"]), trainable_params=FULL_TRAINABLE, **plan)
    assert fits_t4(estimate)
    assert 1.5e9 < estimate["weights"] < 3e9  # 2.8B weights: mostly 4-bit, embeddings 16/32-bit


def test_full_training_arguments_construct(full, full_args):
    args = full_args
    assert isinstance(args, SFTConfig)
    assert args.learning_rate == 2e-4
    assert args.per_device_train_batch_size == 1 and args.gradient_accumulation_steps == 4
    assert args.num_train_epochs == full["epochs"] and args.max_steps == -1
    assert args.optim == "paged_adamw_8bit"
    assert args.fp16 and not args.bf16
    assert args.activation_checkpointing
    assert args.completion_only_loss is True  # the loss on the summary only
    assert args.max_length == full["max_length"]
    # evaluated and saved every epoch, the best epoch's adapter put back at the end
    assert args.eval_strategy == "epoch" and args.save_strategy == "epoch"
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.greater_is_better is False and args.save_total_limit == 1
    assert args.report_to == [] or args.report_to == ["none"] or args.report_to == "none"


def test_one_prompt_function_for_training_and_evaluation():
    source = "\n".join(code_cells(NOTEBOOK))
    tree = ast.parse(source)
    [to_row] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "to_row"]
    assert "prompt_for(" in ast.get_source_segment(source, to_row)
    assert "test_prompts = [prompt_for(" in source


def test_course_summaries_data():
    train = read_jsonl(data_path("summaries", "train.jsonl"))
    test = read_jsonl(data_path("summaries", "test.jsonl"))
    assert len(train) + len(test) >= 24 and len(test) >= 6
    for row in train + test:
        assert set(row) == {"text", "summary"}  # the Hub data set's columns
        assert len(row["text"].split()) > 2 * len(row["summary"].split()) > 40
    texts = [" ".join(r["text"].lower().split()) for r in train + test]
    assert len(set(texts)) == len(texts)  # no report twice, so train and test are disjoint
    card = (data_path("summaries") / "README.md").read_text()
    assert "MIT" in card and "text" in card and "summary" in card


def _method_calls(name: str) -> list[ast.Call]:
    calls = []
    for source in code_cells(NOTEBOOK):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == name:
                calls.append(node)
    return calls


def test_merged_model_is_saved_in_1gb_shards():
    # the default writes Phi-2 as one 5.6 GB shard, which safetensors copies to host RAM first
    [merged_save] = [
        c
        for c in _method_calls("save_pretrained")
        if any(k.arg == "max_shard_size" for k in c.keywords)
    ]
    [shard] = [k.value for k in merged_save.keywords if k.arg == "max_shard_size"]
    assert ast.literal_eval(shard) == "1GB"
    assert ast.unparse(merged_save.func.value) == "merged"


def test_modelfile_serves_the_file_the_commands_write_in_the_trained_format():
    cell = cell_with(NOTEBOOK, "modelfile = (")
    assert 'f"FROM {GGUF_Q4}' in cell  # the Modelfile's FROM ...
    assert "llama-quantize {GGUF_F16} {GGUF_Q4} Q4_K_M" in cell  # ... is what quantize writes
    assert "--outfile {GGUF_F16}" in cell  # ... from what the conversion writes
    assert 'TEMPLATE = prompt_for("{{ .Prompt }}")' in cell  # the one prompt function
    assert 'PARAMETER stop "{END_MARKER}"' in cell


def test_phi2_attention_implementation_is_named():
    loads = [
        c
        for c in _method_calls("from_pretrained")
        if any(k.arg == "quantization_config" for k in c.keywords)
    ]
    assert len(loads) == 1
    assert any(k.arg == "attn_implementation" for k in loads[0].keywords)


def test_the_tune_can_resume_from_drive(full, small):
    # helpers.checkpoints: off by default in both modes, one CONFIG key to turn it on
    assert full["save_to_drive"] is False and small["save_to_drive"] is False
    source = "\n".join(code_cells(NOTEBOOK))
    assert 'OUTPUT_DIR = output_dir("05_phi2_summarizer", drive=CONFIG["save_to_drive"])' in source
    resume = 'resume_from_checkpoint=resume_point(OUTPUT_DIR / "checkpoints")'
    assert f"trainer.train({resume})" in source
