import pytest

from helpers import preflight
from helpers.mode import CourseSetupError


def test_memory_check_passes_when_the_plan_fits(capsys):
    preflight.check_gpu_memory(10 * 10**9, "QLoRA plan", free_bytes=14 * 10**9)
    assert "fits" in capsys.readouterr().out


def test_memory_check_explains_what_to_do_when_it_does_not_fit():
    with pytest.raises(CourseSetupError, match=r"(?s)needs about 16.0 GB.*only 14.0 GB.*Restart"):
        preflight.check_gpu_memory(16 * 10**9, "QLoRA plan", free_bytes=14 * 10**9)


def test_memory_check_is_skipped_without_a_gpu(monkeypatch):
    monkeypatch.setattr(preflight, "gpu_free_bytes", lambda: None)
    preflight.check_gpu_memory(10**15)  # nothing to check on a CPU


def test_gated_model_without_token_says_how_to_add_one(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(preflight, "hf_token", lambda: None)
    with pytest.raises(CourseSetupError, match=r"(?s)No Hugging Face token.*secret named HF_TOKEN"):
        preflight.check_hub_access("mistralai/Mistral-7B-Instruct-v0.2")


def test_hub_check_is_skipped_offline_and_for_open_models(monkeypatch):
    monkeypatch.setattr(preflight, "hf_token", lambda: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preflight.check_hub_access("mistralai/Mistral-7B-Instruct-v0.2")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    preflight.check_hub_access("microsoft/phi-2")  # not gated: nothing to check


def test_token_comes_from_the_environment_first(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_example")
    assert preflight.hf_token() == "hf_example"


def test_gated_advice_names_the_current_login_command_and_an_ungated_model(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(preflight, "hf_token", lambda: None)
    with pytest.raises(CourseSetupError) as error:
        preflight.check_hub_access("mistralai/Mistral-7B-Instruct-v0.2")
    message = str(error.value)
    assert "`hf auth login`" in message and "huggingface-cli" not in message
    assert "HuggingFaceH4/zephyr-7b-beta is ungated" in message
