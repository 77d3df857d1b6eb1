import pytest
import torch
from peft import LoraConfig, get_peft_model

from helpers import architectures as arch


@pytest.mark.parametrize("model_id", sorted(arch.REAL_CONFIGS))
def test_meta_models_have_the_published_parameter_counts(model_id):
    model = arch.meta_model(model_id)
    assert next(model.parameters()).device == torch.device("meta")
    total, trainable = arch.count_parameters(model)
    assert total == arch.PUBLISHED_PARAMETERS[model_id]
    assert trainable == total


def test_real_configs_are_the_right_architectures():
    assert type(arch.meta_model(arch.MISTRAL_7B_INSTRUCT)).__name__ == "MistralForCausalLM"
    assert type(arch.meta_model(arch.PHI_2)).__name__ == "PhiForCausalLM"
    # transformers 5 keeps the rotary settings in rope_parameters
    assert arch.real_config(arch.PHI_1_5).rope_parameters["partial_rotary_factor"] == 0.5
    assert arch.real_config(arch.PHI_2).rope_parameters["partial_rotary_factor"] == 0.4
    assert arch.real_config(arch.MISTRAL_7B_INSTRUCT).rope_parameters["rope_theta"] == 1e6
    with pytest.raises(KeyError, match="not one of the course's models"):
        arch.real_config("gpt2")


@pytest.mark.parametrize(
    ("model_id", "r", "targets", "expected"),
    [
        (arch.MISTRAL_7B_INSTRUCT, 8, ["q_proj"], 2_097_152),
        (arch.PHI_2, 32, ["q_proj", "k_proj", "v_proj", "dense"], 20_971_520),
    ],
)
def test_lora_trainable_parameters_at_full_size(model_id, r, targets, expected):
    config = LoraConfig(r=r, lora_alpha=32, target_modules=targets, task_type="CAUSAL_LM")
    model = get_peft_model(arch.meta_model(model_id), config)
    assert arch.count_parameters(model)[1] == expected


def test_linear_module_names_are_the_lora_targets():
    assert arch.linear_module_names(arch.meta_model(arch.MISTRAL_7B_INSTRUCT)) == [
        "down_proj",
        "gate_proj",
        "k_proj",
        "lm_head",
        "o_proj",
        "q_proj",
        "up_proj",
        "v_proj",
    ]
    assert arch.linear_module_names(arch.meta_model(arch.PHI_2)) == [
        "dense",
        "fc1",
        "fc2",
        "k_proj",
        "lm_head",
        "q_proj",
        "v_proj",
    ]


def test_phi_special_tokens_are_the_published_values():
    # config.json: phi-2 sets 50256 (its commit 3f879ff), phi-1_5 publishes null
    phi2 = arch.real_config(arch.PHI_2)
    assert (phi2.bos_token_id, phi2.eos_token_id) == (50256, 50256)
    phi15 = arch.real_config(arch.PHI_1_5)
    assert (phi15.bos_token_id, phi15.eos_token_id, phi15.pad_token_id) == (None, None, None)
    # generation_config.json: what generate() stops on
    assert arch.published_generation_config(arch.PHI_2).eos_token_id == 50256
    assert arch.published_generation_config(arch.PHI_1_5).eos_token_id is None
    for model_id in (arch.PHI_2, arch.PHI_1_5):
        specials = arch.PUBLISHED_TOKENIZER_SPECIALS[model_id]
        assert specials["eos_token"] == "<|endoftext|>" and specials["eos_token_id"] == 50256
        assert specials["pad_token"] is None  # Phi's tokenizer has no pad token
    with pytest.raises(KeyError, match="no published generation config"):
        arch.published_generation_config(arch.MISTRAL_7B_INSTRUCT)
