"""FULL mode of the three QLoRA tunes, checked without the Hub or a GPU.

Each section reads its notebook's own code (``helpers.notebook_code``), so what is checked is
what a learner runs: the stand-ins and meta-device models stand in for the downloads.
"""

# =========================================================================================
# Notebook 04: Mistral-7B-Instruct replies to YouTube comments
# =========================================================================================

import ast as _ast

import pytest as _pytest
import torch as _torch

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
    built, cast = code.index("SFTTrainer("), code.index("keep_trainable_fp32(model)")
    trains = code.index("trainer.train()")
    assert built < cast < trains
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


# (end of the 05 section)


# =========================================================================================
# Notebook 06: phi-1.5 on DS-1000
# =========================================================================================


# (end of the 06 section)
