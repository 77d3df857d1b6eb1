"""FULL mode of the three QLoRA tunes, checked without the Hub or a GPU.

Each section reads its notebook's own code (``helpers.notebook_code``), so what is checked is
what a learner runs: the stand-ins and meta-device models stand in for the downloads.
"""

import ast

# =========================================================================================
# Notebook 04: Mistral-7B-Instruct replies to YouTube comments
# =========================================================================================
import ast as _ast

import pytest
import pytest as _pytest
import torch
import torch as _torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.architectures import PHI_1_5

NOTEBOOK_04 = "04_qlora_mistral_youtube.ipynb"

# The chat template of mistralai/Mistral-7B-Instruct-v0.2 on the Hub today (tokenizer_config.json,
# line 42), a fact the stand-in must match. The Hub cannot be reached here; this is the copy in
# guidance-ai/guidance, guidance/chat.py at commit 025fac921a76aa05b54633f39b4e4df6ff9b957c,
# taken from https://huggingface.co/mistralai/Mistral-7B-Instruct-v0.2/blob/main/tokenizer_config.json#L42
# on 2024-05-08, and the same text is in ggml-org/llama.cpp, tests/test-chat-template.cpp
# ("mistralai/Mistral-7B-Instruct-v0.2 (mistralai 'v1' template with a system prompt)").
# The release's template (e.g. Hub revision b70aa86578567ba3301b21c8a27bea4e8f6d6d61) had no
# system role and no spaces around [INST]; this one replaced it.
MISTRAL_V02_TEMPLATE = "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n"  # noqa: E501

CHATS_04 = {
    "system+user": [
        {"role": "system", "content": "Sign every reply with -LabGPT."},
        {"role": "user", "content": "Great video, thanks!"},
    ],
    "multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is NF4?"},
        {"role": "assistant", "content": "A 4-bit data type. -LabGPT"},
        {"role": "user", "content": "And double quantization?"},
        {"role": "assistant", "content": "The scales are quantized too. -LabGPT"},
        {"role": "user", "content": "Thanks!"},
    ],
}


@_pytest.fixture(scope="module")
def mistral_standin_04():
    from transformers import AutoTokenizer

    from helpers.architectures import MISTRAL_7B_INSTRUCT
    from helpers.standins import build_standin

    path = build_standin(MISTRAL_7B_INSTRUCT)
    return path, AutoTokenizer.from_pretrained(path)


@_pytest.mark.parametrize("name", sorted(CHATS_04))
def test_04_standin_template_renders_the_real_v02_ids(mistral_standin_04, name):
    _, tok = mistral_standin_04
    chat = CHATS_04[name]
    for generation_prompt in (False, True):
        if generation_prompt and chat[-1]["role"] == "assistant":
            chat = chat[:-1]
        ours = tok.apply_chat_template(chat, add_generation_prompt=generation_prompt)
        real = tok.apply_chat_template(
            chat, chat_template=MISTRAL_V02_TEMPLATE, add_generation_prompt=generation_prompt
        )
        assert ours["input_ids"] == real["input_ids"]
        assert ours["input_ids"].count(tok.bos_token_id) == 1


def test_04_the_real_template_joins_the_system_message_to_the_first_user_turn(
    mistral_standin_04,
):
    """What notebook 04 says about the template, and what helpers.prompts relies on."""
    _, tok = mistral_standin_04
    text = tok.apply_chat_template(CHATS_04["multi-turn"], tokenize=False)
    assert text == (
        "<s> [INST] Be brief.\n\nWhat is NF4? [/INST] A 4-bit data type. -LabGPT</s>"
        " [INST] And double quantization? [/INST] The scales are quantized too. -LabGPT</s>"
        " [INST] Thanks! [/INST]"
    )
    with _pytest.raises(Exception, match="Only user and assistant roles"):
        tok.apply_chat_template([CHATS_04["multi-turn"][1], CHATS_04["multi-turn"][0]])


class _Stop(Exception):
    """Raised by the probe once it has seen the parameters: no training step is needed."""


def _trainer_04(mode: str, tmp_path, train_rows: int = 8):
    """Notebook 04's own calls, in its order, on the stand-in: quantized load, kbit prep, LoRA,
    SFTConfig and SFTTrainer with ``mode``'s CONFIG values."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    from helpers.notebook_code import config, the_call
    from helpers.prompts import prompt_completion
    from helpers.standins import build_standin

    full = config(NOTEBOOK_04, mode)
    path = build_standin(full["model"])  # the stand-in, with this mode's training settings
    ns = {"torch": _torch, "CONFIG": full, "OUTPUT_DIR": tmp_path, "Path": type(tmp_path)}
    ns.update(BitsAndBytesConfig=BitsAndBytesConfig, LoraConfig=LoraConfig, SFTConfig=SFTConfig)
    bnb = eval(the_call(NOTEBOOK_04, "BitsAndBytesConfig"), ns)
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=bnb, dtype=_torch.float16
    )
    ns["model"] = model
    ns["prepare_model_for_kbit_training"] = prepare_model_for_kbit_training
    model = eval(the_call(NOTEBOOK_04, "prepare_model_for_kbit_training"), ns)
    model = get_peft_model(model, eval(the_call(NOTEBOOK_04, "LoraConfig"), ns))
    rows = [prompt_completion(f"Comment {i}", f"Reply {i} -LabGPT", "Be brief.") for i in range(8)]
    ns.update(
        model=model,
        args=eval(the_call(NOTEBOOK_04, "SFTConfig"), ns),
        train_data=Dataset.from_list(rows[:train_rows]),
        eval_data=Dataset.from_list(rows[:2]),
        tokenizer=AutoTokenizer.from_pretrained(path),
        SFTTrainer=SFTTrainer,
    )
    return model, eval(the_call(NOTEBOOK_04, "SFTTrainer"), ns)


def _dtypes_at_train_begin(trainer) -> dict[str, _torch.dtype]:
    from transformers import TrainerCallback

    seen: dict[str, _torch.dtype] = {}

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen.update({n: p.dtype for n, p in model.named_parameters() if p.requires_grad})
            raise _Stop

    trainer.add_callback(Probe())
    with _pytest.raises(_Stop):
        trainer.train()
    assert seen, "the probe saw no trainable parameter"
    return seen


def test_04_calls_keep_trainable_fp32_between_the_trainer_and_train():
    from helpers.notebook_code import code_cells

    code = "\n".join(code_cells(NOTEBOOK_04))
    at_trainer, at_cast = code.index("SFTTrainer("), code.index("keep_trainable_fp32(model)")
    at_train = code.index("trainer.train(")
    assert at_trainer < at_cast < at_train
    calls = [
        n.func.id
        for n in _ast.walk(_ast.parse(code))
        if isinstance(n, _ast.Call) and isinstance(n.func, _ast.Name)
    ]
    assert calls.count("keep_trainable_fp32") == 1


@_pytest.mark.parametrize("mode", ["full", "small"])
def test_04_every_trainable_parameter_is_fp32_when_training_starts(mode, tmp_path):
    from helpers.training import keep_trainable_fp32

    model, trainer = _trainer_04(mode, tmp_path)
    # What trl 1.16 does on its own (sft_trainer.py, the _is_quantized_model cast in __init__):
    # the adapter of a 4-bit model in bf16, which a T4 cannot compute in.
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {_torch.bfloat16}
    assert keep_trainable_fp32(model) > 0  # the notebook's call, in the notebook's place
    dtypes = _dtypes_at_train_begin(trainer)
    assert set(dtypes.values()) == {_torch.float32}, dtypes
    assert all(".lora_" in name for name in dtypes)


# (end of the 04 section)


# =========================================================================================
# Notebook 05: the Phi-2 summarizer
# =========================================================================================

NOTEBOOK_05 = "05_qlora_phi2_summarizer.ipynb"


def _code_order(notebook: str, *markers: str) -> list[int]:
    """Where each marker first occurs in the notebook's code, in reading order."""
    from helpers.notebook_code import code_cells

    source = "\n".join(code_cells(notebook))
    return [source.index(marker) for marker in markers]


@_pytest.mark.parametrize("mode", ["full", "small"])
def test_05_trainable_parameters_are_fp32_when_training_starts(mode, tmp_path):
    """Notebook 05's exact configuration, FULL's (fp16) and SMALL's, on the stand-in: trl
    leaves the adapters in bf16, the notebook's cast makes every trainable parameter fp32
    before the optimizer is built."""
    import dataclasses

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        TrainerCallback,
    )
    from trl import SFTConfig, SFTTrainer

    from helpers.architectures import PHI_2
    from helpers.notebook_code import config, the_call
    from helpers.standins import build_standin
    from helpers.training import keep_trainable_fp32

    build, cast, train = _code_order(
        NOTEBOOK_05,
        "trainer = SFTTrainer(",
        "keep_trainable_fp32(trainer.model)",
        "trainer.train(",
    )
    assert build < cast < train  # the notebook casts after trl's cast and before training

    cfg = config(NOTEBOOK_05, mode)
    path = build_standin(cfg["model"])  # the stand-in of PHI_2, in FULL too
    assert cfg["model"] == PHI_2
    names = {"torch": torch, "CONFIG": cfg, "BitsAndBytesConfig": BitsAndBytesConfig}
    names["LoraConfig"] = LoraConfig
    bnb_config = eval(the_call(NOTEBOOK_05, "BitsAndBytesConfig"), names)
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=bnb_config, dtype=cfg["compute_dtype"]
    )
    model = eval(
        the_call(NOTEBOOK_05, "prepare_model_for_kbit_training"),
        {"prepare_model_for_kbit_training": prepare_model_for_kbit_training, "model": model},
    )
    model = get_peft_model(model, eval(the_call(NOTEBOOK_05, "LoraConfig"), names))
    args = eval(
        the_call(NOTEBOOK_05, "SFTConfig"),
        {"SFTConfig": SFTConfig, "CONFIG": cfg, "OUTPUT_DIR": tmp_path, "torch": torch},
    )
    assert args.fp16 == (mode == "full")  # FULL trains under fp16 autocast, as on the T4
    # the notebook's arguments, for one step and without the per-epoch evaluation and saving
    args = dataclasses.replace(
        args, max_steps=1, eval_strategy="no", save_strategy="no", load_best_model_at_end=False
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = Dataset.from_list(
        [
            {
                "prompt": "### Input:\nPump 2 failed.\n\n### Output:\n",
                "completion": "The pump failed.\n### End",
            }
        ]
        * 4
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert {p.dtype for p in trainable} == {torch.bfloat16}  # what trl does to a 4-bit model

    seen: dict[str, set] = {}

    class Dtypes(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen["params"] = {p.dtype for p in model.parameters() if p.requires_grad}

    trainer.add_callback(Dtypes())
    assert keep_trainable_fp32(trainer.model) == len(trainable)
    trainer.train()
    assert seen["params"] == {torch.float32}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters() if p.requires_grad)


def test_05_phi_generation_configs_stop_at_eos():
    """Phi-2 publishes an end-of-text id for generate, phi-1_5 none; the notebook sets it from
    the tokenizer right after loading, and its merged model keeps it."""
    from types import SimpleNamespace

    from helpers.architectures import (
        PHI_1_5,
        PHI_2,
        PUBLISHED_TOKENIZER_SPECIALS,
        published_generation_config,
    )
    from helpers.generation import stop_at_end_of_text
    from helpers.notebook_code import cell_with

    assert published_generation_config(PHI_1_5).eos_token_id is None  # would never stop
    for model_id in (PHI_2, PHI_1_5):
        specials = PUBLISHED_TOKENIZER_SPECIALS[model_id]
        tokenizer = SimpleNamespace(eos_token_id=specials["eos_token_id"], pad_token_id=None)
        model = SimpleNamespace(generation_config=published_generation_config(model_id))
        assert stop_at_end_of_text(model, tokenizer) == (50256, 50256)
        assert model.generation_config.eos_token_id == 50256  # generate stops at <|endoftext|>
        assert model.generation_config.pad_token_id == 50256  # and pads with it (no pad token)

    load = cell_with(NOTEBOOK_05, "quantization_config=bnb_config")
    assert load.index("from_pretrained(") < load.index("stop_at_end_of_text(model, tokenizer)")
    merge = cell_with(NOTEBOOK_05, "merge_and_unload()")
    assert merge.index("stop_at_end_of_text(base16, tokenizer)") < merge.index("merge_and_unload()")


def test_05_full_plan_fits_a_t4():
    """Steps, epochs and input budget of 05's FULL plan, by notebook 01's estimator."""
    import math
    from pathlib import Path

    import torch
    from trl import SFTConfig

    from helpers.architectures import PHI_2, real_config
    from helpers.memory import COURSE_PLANS, estimate_memory, fits_t4
    from helpers.notebook_code import config, the_call

    full = config(NOTEBOOK_05, "full")
    args = eval(
        the_call(NOTEBOOK_05, "SFTConfig"),
        {"SFTConfig": SFTConfig, "CONFIG": full, "OUTPUT_DIR": Path("unused"), "torch": torch},
    )
    phi2 = real_config(PHI_2)
    # input budget: the report, the instruction (under 100 tokens) and the summary fit the
    # context at evaluation; the report and its summary fit max_length in training
    assert 100 + full["max_input_tokens"] + full["max_new_tokens"] <= phi2.max_position_embeddings
    assert full["max_input_tokens"] < full["max_length"] <= phi2.max_position_embeddings
    # memory: notebook 01's plan for 05 at FULL's sequence length and the notebook's batch
    plan = {
        **COURSE_PLANS["05"]["memory"],
        "seq_len": full["max_length"],
        "batch_size": args.per_device_train_batch_size,
        "optimizer": args.optim,
        "gradient_checkpointing": args.activation_checkpointing,
    }
    estimate = estimate_memory(phi2, trainable_params=20_971_520, **plan)
    assert fits_t4(estimate)
    # steps and epochs: at most the 47 training reports of the Hub data set (its viewer)
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    steps = full["epochs"] * math.ceil(47 / per_step)
    assert args.num_train_epochs == full["epochs"] and args.max_steps == -1
    # the notebook's own estimate: 6N FLOPs per token at a fifth of the T4's 65 TFLOPS
    t4_step = 6 * 2_779_683_840 * per_step * full["max_length"] / (65e12 * 0.2)
    assert steps * t4_step / 60 < 30  # minutes of training, at most: a workshop slot


# (end of the 05 section)


# =========================================================================================
# Notebook 06: phi-1.5 on DS-1000
# =========================================================================================

NOTEBOOK_06 = "06_qlora_phi15_ds1000.ipynb"


class _TrainingStarts(Exception):
    """Raised by :class:`_DtypesAtTrainBegin` so that no step runs."""


def _dtypes_when_06_starts_training(full: dict, keep_fp32: bool) -> dict[str, torch.dtype]:
    """Build 06's model, adapters and trainer from its own cells; the trainable dtypes at
    ``on_train_begin`` (after the trainer made its optimizer and prepared the model).

    The real phi-1.5 cannot be downloaded here, so the stand-in (same architecture, same
    module names) takes its place; every setting is FULL's, except the number of steps.
    """
    from datasets import Dataset
    from transformers import TrainerCallback

    from helpers.ds1000 import load_problems, training_pair
    from helpers.mode import keep_4bit_cpu_layers_trainable
    from helpers.notebook_code import cell_with, run_statements
    from helpers.standins import build_standin

    keep_4bit_cpu_layers_trainable()  # as the notebook's preamble does on a CPU
    CONFIG = {**full, "max_steps": 1}
    names = run_statements(
        NOTEBOOK_06, "BitsAndBytesConfig(", {"bnb_config", "model"},
        {"MODEL_PATH": build_standin(full["model_id"])},
    )
    names = run_statements(
        NOTEBOOK_06, "prepare_model_for_kbit_training(\n", {"model", "lora_config"},
        {"CONFIG": CONFIG, "model": names["model"]},
    )
    model = names["model"]
    rows = [training_pair(p) for p in load_problems()[:4]]
    namespace = {
        "CONFIG": CONFIG,
        "model": model,
        "torch": torch,
        "tokenizer": AutoTokenizer.from_pretrained(build_standin(full["model_id"])),
        "train_dataset": Dataset.from_list(rows),
        "eval_dataset": Dataset.from_list(rows[:2]),
    }
    # The training cell up to trainer.train(), as written (the fp32 cast included), without
    # its prints and the evaluation before training.
    tree = ast.parse(cell_with(NOTEBOOK_06, "trainer.train("))
    before_train = []
    for node in tree.body:
        text = ast.unparse(node)
        if "trainer.train(" in text:
            break
        cast = "keep_trainable_fp32(model)" in text or isinstance(node, ast.Assert)
        if "evaluate(" in text or text.startswith("print(") or (cast and not keep_fp32):
            continue
        before_train.append(node)
    exec(compile(ast.Module(body=before_train, type_ignores=[]), NOTEBOOK_06, "exec"), namespace)
    seen: dict[str, torch.dtype] = {}

    class _DtypesAtTrainBegin(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            seen.update({n: p.dtype for n, p in model.named_parameters() if p.requires_grad})
            raise _TrainingStarts

    trainer = namespace["trainer"]
    trainer.add_callback(_DtypesAtTrainBegin())
    with pytest.raises(_TrainingStarts):
        trainer.train()
    assert seen, "no trainable parameter seen"
    return seen


@pytest.fixture
def full_06(tmp_path, monkeypatch):
    from helpers.notebook_code import config

    monkeypatch.chdir(tmp_path)  # the trainer's output_dir is relative
    return config(NOTEBOOK_06, "full")


def test_06_every_trainable_parameter_is_fp32_when_training_starts(full_06):
    dtypes = _dtypes_when_06_starts_training(full_06, keep_fp32=True)
    assert all("lora_" in name for name in dtypes)
    assert set(dtypes.values()) == {torch.float32}, set(dtypes.values())


def test_06_without_the_cast_trl_would_train_bf16_adapters(full_06):
    # The finding behind the cast (trl 1.16 stores a quantized model's adapters in bf16): if
    # this starts failing, trl changed and the cast may no longer be needed.
    dtypes = _dtypes_when_06_starts_training(full_06, keep_fp32=False)
    assert torch.bfloat16 in set(dtypes.values())


def test_06_generation_stops_at_the_tokenizers_eos():
    # The notebook sets both ids from the tokenizer, whatever the checkpoint's generation config
    # says; on the stand-in, whose generation config is emptied first, generation then stops.
    from helpers.notebook_code import cell_with
    from helpers.standins import build_standin

    tree = ast.parse(cell_with(NOTEBOOK_06, "BitsAndBytesConfig("))
    # The cell's pad-token fallback and its two generation-config assignments, as written.
    nodes = [
        node for node in tree.body
        if (isinstance(node, ast.If) and "pad_token" in ast.unparse(node.test))
        or (isinstance(node, ast.Assign)
            and ast.unparse(node.targets[0]).startswith("model.generation_config."))
    ]
    assert len(nodes) == 3
    path = build_standin(PHI_1_5)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = None
    code = compile(ast.Module(body=nodes, type_ignores=[]), NOTEBOOK_06, "exec")
    exec(code, {"model": model, "tokenizer": tokenizer})
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id is not None
    # Make EOS the only possible next token: generation must stop after one token.
    with torch.no_grad():
        model.lm_head.bias.fill_(-1e4)
        model.lm_head.bias[tokenizer.eos_token_id] = 1e4
    ids = tokenizer(["x = 1", "import numpy as np"], return_tensors="pt", padding=True)
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 1


# (end of the 06 section)
