import os
import random

import numpy as np
import pytest
import torch

from helpers import mode


def test_course_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "FULL ")
    assert mode.course_mode() == "full"
    monkeypatch.setenv("COURSE_MODE", "small")
    assert mode.course_mode() == "small"


def test_course_mode_defaults_to_the_hardware(monkeypatch):
    monkeypatch.delenv("COURSE_MODE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert mode.course_mode() == "small"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert mode.course_mode() == "full"


def test_unknown_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "medium")
    with pytest.raises(mode.CourseSetupError, match="must be one of"):
        mode.course_mode()


def test_seed_everything_makes_runs_repeatable():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    mode.seed_everything(7)
    first = draw()
    mode.seed_everything(7)
    assert draw() == first


def test_small_preamble_goes_offline_and_seeds(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_MODE", "small")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert mode.preamble(seed=3) == "small"
    out = capsys.readouterr().out
    assert "SMALL mode" in out and "CPU" in out and "seed: 3" in out
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    after = torch.rand(1).item()
    mode.seed_everything(3)
    assert torch.rand(1).item() == after


def test_full_mode_without_gpu_says_what_to_do(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(mode.CourseSetupError, match="Change runtime type > T4 GPU"):
        mode.preamble(needs_gpu=True)
    assert mode.preamble(needs_gpu=False) == "full"  # the theory notebooks need no GPU


def test_full_mode_with_too_few_gpus_points_to_kaggle(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(mode, "device_report", lambda: "GPU: a test double")
    with pytest.raises(mode.CourseSetupError, match="needs 2 GPUs.*GPU T4 x2"):
        mode.preamble(needs_gpu=True, gpus=2)
    assert mode.preamble(needs_gpu=True) == "full"  # one GPU is enough by default
    monkeypatch.setenv("COURSE_MODE", "small")
    assert mode.preamble(needs_gpu=True, gpus=2) == "small"  # SMALL needs no GPU


def test_setup_errors_show_without_a_traceback_in_ipython():
    error = mode.CourseSetupError("do this")
    assert error._render_traceback_() == ["\nCourseSetupError: do this\n"]


def test_pick_returns_a_copy_of_the_chosen_config(capsys):
    full, small = {"steps": 400, "model": "big"}, {"steps": 5, "model": "tiny"}
    chosen = mode.pick("small", full, small)
    assert chosen == small and chosen is not small
    assert mode.pick("full", full, small) == full
    out = capsys.readouterr().out
    assert "steps" in out and "400" in out and "running: FULL" in out


def test_4bit_layers_still_train_after_running_in_eval_mode():
    """bitsandbytes' CPU inference fast path used to cut gradients after eval (see mode.py)."""
    import bitsandbytes as bnb

    assert mode.keep_4bit_cpu_layers_trainable()
    layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
    layer.load_state_dict(torch.nn.Linear(64, 64).state_dict())
    layer = layer.to("cpu")
    x = torch.randn(4, 64)
    layer.eval()
    with torch.no_grad():
        layer(x)
    layer.train()
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_known_harmless_warnings_are_quiet_and_others_still_show():
    import logging
    import warnings

    from helpers.mode import KNOWN_HARMLESS_WARNINGS, quiet_known_warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        note = quiet_known_warnings()
        warnings.warn("Paged optimizers are not supported on CPU.", UserWarning, stacklevel=1)
        warnings.warn("`gradient_checkpointing_enable` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("something new and important", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something new and important"]
    assert "filtered" in note and str(len(KNOWN_HARMLESS_WARNINGS) + 1) in note
    assert logging.getLogger("bitsandbytes.backends.cpu.ops").level == logging.ERROR
