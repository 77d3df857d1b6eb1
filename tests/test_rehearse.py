"""``course.py rehearse``: each notebook's own FULL training code, on a random-weight model.

The real command builds full-width models (minutes on a CPU); here a width-reduced one runs
through exactly the same path. What the rehearsal trains is read from the notebooks, so a
change to a notebook's FULL configuration flows into it, and a disagreement with notebook
01's plan (``COURSE_PLANS``, which its memory prediction uses) fails.
"""

import ast
import json
import shutil

import pytest
import torch

from helpers.memory import COURSE_PLANS
from helpers.notebook_code import NOTEBOOKS
from helpers.rehearsal import (
    PLANS,
    RehearsalError,
    disagreements,
    fill_random_,
    notebook_path,
    predicted_peak,
    rehearse,
    settings,
    summary,
    training_statements,
    write_record,
)

# A width-reduced phi-1.5 for the test (the command itself keeps the published widths).
TINY = {"hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 4, "vocab_size": 512}


def _copy(tmp_path, plan, old, new):
    """A copy of the plan's notebook in tmp_path with ``old`` -> ``new`` in one code cell."""
    source = notebook_path(plan)
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    nb = json.loads(copy.read_text())
    hits = 0
    for cell in nb["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and old in text:
            cell["source"] = text.replace(old, new, 1)
            hits += 1
    assert hits == 1, f"{old!r} in {hits} code cells of {source.name}"
    copy.write_text(json.dumps(nb))
    return tmp_path


def test_every_plan_has_a_notebook():
    assert set(PLANS) == set(COURSE_PLANS) == {"04", "05", "06"}
    assert all(notebook_path(plan).parent == NOTEBOOKS.resolve() for plan in PLANS)


@pytest.mark.parametrize("plan", PLANS)
def test_the_rehearsal_trains_what_the_notebook_and_notebook_01_say(plan):
    found = settings(plan)  # built by the notebook's own BitsAndBytesConfig/LoraConfig/SFTConfig
    assert found["model_id"] == COURSE_PLANS[plan]["model_id"]
    assert disagreements(plan, found) == []


@pytest.mark.parametrize(
    ("plan", "old", "new", "key"),
    [
        ("04", "r=8,", "r=16,", "r"),  # LoraConfig, written in the call
        ("05", "per_device_train_batch_size=1,", "per_device_train_batch_size=2,", "batch_size"),
        ("06", '"batch_size": 4,', '"batch_size": 8,', "batch_size"),  # the FULL dict
        ("06", '"max_length": 1024,', '"max_length": 2048,', "seq_len"),
    ],
)
def test_a_changed_notebook_flows_into_the_rehearsal_and_is_caught(tmp_path, plan, old, new, key):
    copy = _copy(tmp_path, plan, old, new)
    found = settings(plan, copy)
    assert found[key] != settings(plan)[key]  # the rehearsal follows the notebook ...
    problems = disagreements(plan, found)  # ... and says that notebook 01 plans otherwise
    assert len(problems) == 1 and problems[0].startswith(f"{key}:"), problems


def test_a_statement_it_cannot_run_is_an_error_not_a_skip(tmp_path):
    copy = _copy(tmp_path, "06", 'lora_dropout=CONFIG["lora_dropout"]', "lora_dropout=DROPOUT")
    with pytest.raises(RehearsalError, match="DROPOUT"):
        settings("06", copy)


def test_training_plumbing_added_to_a_notebook_is_run_too(tmp_path):
    # e.g. issue 11's fix: every trainable parameter fp32 before training starts
    copy = _copy(tmp_path, "06", "trainer = SFTTrainer(", (
        "from helpers.training import keep_trainable_fp32\n\n\nclass Noted:\n    pass\n\n\n"
        "trainer = SFTTrainer("
    ))
    nb_path = notebook_path("06", copy)
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if "trainer = SFTTrainer(" in text:
            cell["source"] = text.replace(
                "loss_before = trainer.evaluate()",
                'print(f"{keep_trainable_fp32(trainer.model)} cast")\nnoted = Noted()\n'
                "trainer.add_callback(noted)\nloss_before = trainer.evaluate()",
            )
    nb_path.write_text(json.dumps(nb))
    provided = {"MODE", "CONFIG", "FULL", "MODEL_PATH", "tokenizer", "train_dataset",
                "eval_dataset"}
    kept, roles = training_statements("06", provided, copy)
    ran = [ast.unparse(stmt) for _, stmt in kept]
    assert any("keep_trainable_fp32(trainer.model)" in line for line in ran)
    assert any(line.startswith("class Noted") for line in ran)  # needed by add_callback
    assert not any("evaluate()" in line for line in ran)  # the rehearsal trains, no more
    assert roles["trainer"] == "trainer"


def test_the_prediction_is_notebook_01s_for_the_layers_built():
    from peft import LoraConfig, get_peft_model

    from helpers.architectures import meta_model, real_config
    from helpers.memory import estimate_memory

    plan = COURSE_PLANS["06"]
    sizes = [p.numel() for p in get_peft_model(meta_model(plan["model_id"]),
                                               LoraConfig(**plan["lora"])).parameters()
             if p.requires_grad]
    full_depth = real_config(plan["model_id"])
    assert predicted_peak("06", full_depth, sizes) == estimate_memory(
        full_depth, trainable_params=sum(sizes), trainable_tensor_sizes=sizes, **plan["memory"]
    )
    one_layer = real_config(plan["model_id"])
    one_layer.num_hidden_layers = 1
    per_layer = sizes[: len(sizes) // full_depth.num_hidden_layers]
    small = predicted_peak("06", one_layer, per_layer, seq_len=128)
    assert small["total"] < predicted_peak("06", full_depth, sizes)["total"]
    assert small["activations"] < predicted_peak("06", one_layer, per_layer)["activations"]


def test_random_weights_fill_matrices_norms_and_biases():
    layer = torch.nn.ModuleDict({"proj": torch.nn.Linear(64, 64), "norm": torch.nn.LayerNorm(64)})
    fill_random_(layer)
    weight = layer["proj"].weight
    assert 0.01 < weight.std().item() < 0.03 and abs(weight.mean().item()) < 0.01
    assert torch.all(layer["proj"].bias == 0) and torch.all(layer["norm"].weight == 1)
    assert torch.all(layer["norm"].bias == 0)


def test_a_tiny_rehearsal_runs_the_notebooks_training_code(tmp_path):
    record = rehearse("06", layers=1, steps=1, seq_len=32, shrink=TINY)
    assert record["verdict"] == "ran", record
    assert (record["layers"], record["seq_len"], len(record["step_seconds"])) == (1, 32, 1)
    # LoRA r=16 on q_proj, k_proj, v_proj and dense (64 x 64 each): 4 x 16 x (64 + 64)
    assert record["trainable_parameters"] == 4 * 16 * (64 + 64)
    ran = "\n".join(record["statements_run"])
    for call in ("BitsAndBytesConfig(", "prepare_model_for_kbit_training(", "LoraConfig(",
                 "get_peft_model(", "SFTConfig(", "SFTTrainer("):
        assert call in ran, call
    assert record["tokens_per_step"] == 4 * 4 * 32  # the FULL batch x accumulation x seq_len
    assert record["tokens_per_second"] > 0
    assert f"plan 06 ({record['model_id']}): 1 of " in summary(record)
    path = write_record(record, tmp_path)
    assert json.loads(path.read_text())["settings"] == settings("06")
