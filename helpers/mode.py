"""Run modes: FULL (the real lesson on a GPU) and SMALL (the same code, tiny, on a CPU).

Every notebook calls :func:`preamble` once, right after the setup cell. It picks the
mode from the ``COURSE_MODE`` environment variable (``full`` where CUDA is present,
``small`` otherwise, unless set), says what that mode means, seeds every random
number generator, reports the device and, in SMALL mode, switches the Hugging Face
libraries to offline so that nothing ever waits on the network.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import warnings

import numpy as np
import torch

MODES = ("full", "small")

BANNERS = {
    "full": (
        "FULL mode: the real lesson. Real models and datasets come from the Hugging Face Hub, "
        "sized to finish on a free Colab T4 (14.8 GiB of GPU memory) in a workshop slot."
    ),
    "small": (
        "SMALL mode: the same code with small numbers, on any CPU, offline. Models are tiny "
        "stand-ins of the same architecture built on the spot, data comes from the course's "
        "data/ folder, and training runs a few steps. The text they produce is not meaningful; "
        "every call of the FULL run is still made, and what can be checked is checked. "
        "Set COURSE_MODE=full on a GPU for the real thing."
    ),
}


class CourseSetupError(RuntimeError):
    """A problem with the learner's set-up, reported as advice instead of a stack trace."""

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"\n{type(self).__name__}: {self}\n"]


def course_mode() -> str:
    """Return the run mode: ``COURSE_MODE`` if set, else ``full`` with CUDA, else ``small``."""
    mode = os.environ.get("COURSE_MODE", "").strip().lower()
    if not mode:
        return "full" if torch.cuda.is_available() else "small"
    if mode not in MODES:
        raise CourseSetupError(f"COURSE_MODE must be one of {MODES}, not {mode!r}.")
    return mode


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's generators (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)


def go_offline() -> None:
    """Make the Hugging Face libraries fail at once on a Hub id instead of retrying.

    Sets ``HF_HUB_OFFLINE`` (read at import time) and, for a library that was already
    imported, flips its constant too.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_UPDATE_DOWNLOAD_COUNTS"] = "0"
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as constants

        constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True


def keep_4bit_cpu_layers_trainable() -> bool:
    """Turn off bitsandbytes' CPU fast path for 4-bit inference, which breaks training.

    On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit layer's weights the first
    time the layer runs in eval mode without gradients (``generate()``,
    ``trainer.evaluate()``), and from then on that layer's matmul has no backward pass:
    training afterwards silently gets zero gradients. Layers built after this call keep
    the ordinary path. GPUs are not affected. Returns whether bitsandbytes was patched.
    """
    try:
        import bitsandbytes.nn.modules as bnb_modules
    except ImportError:
        return False
    bnb_modules.has_avx512bf16 = lambda: False
    return True


# Messages that are known to be harmless in this course, each with the reason. Anything
# else still shows: a new warning is news.
KNOWN_HARMLESS_WARNINGS = {
    r"`(gradient_checkpointing_enable|is_gradient_checkpointing)` is deprecated": (
        "peft's prepare_model_for_kbit_training still calls transformers' old name"
    ),
    r"'pin_memory' argument is set as true but no accelerator is found": (
        "the trainer asks for pinned memory, which only matters with a GPU"
    ),
    r"Paged optimizers are not supported on CPU": (
        "paging only exists on a GPU; on a CPU the optimizer is the plain 8-bit AdamW"
    ),
}
# bitsandbytes logs this at import on CPUs with AVX512-BF16: an optional fast kernel
# package is missing; the course turns that path off anyway (keep_4bit_cpu_layers_trainable).
QUIET_LOGGERS = ("bitsandbytes.backends.cpu.ops",)


def quiet_known_warnings() -> str:
    """Silence the warnings listed in ``KNOWN_HARMLESS_WARNINGS``; return a one-line note."""
    for pattern in KNOWN_HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    return (
        f"quiet: {len(KNOWN_HARMLESS_WARNINGS) + len(QUIET_LOGGERS)} known-harmless library "
        "warnings are filtered (see helpers.mode.KNOWN_HARMLESS_WARNINGS); any other still shows"
    )


def device_report() -> str:
    """Describe the device the notebook will compute on, with GPU memory where there is one."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        total = props.total_memory / 2**30
        free, _ = torch.cuda.mem_get_info(0)
        native = torch.cuda.is_bf16_supported(including_emulation=False)  # a T4 only emulates it
        bf16 = "yes" if native else "no (compute in fp16)"
        return (
            f"GPU: {props.name}, {total:.1f} GiB in all, {free / 2**30:.1f} GiB free, "
            f"compute capability {props.major}.{props.minor}, bf16: {bf16}"
        )
    return f"CPU only ({os.cpu_count()} cores), torch {torch.__version__}"


def require_gpu(mode: str, gpus: int = 1) -> None:
    """Stop with advice when FULL mode is asked for without CUDA, or with too few GPUs."""
    if mode == "full" and not torch.cuda.is_available():
        raise CourseSetupError(
            "This notebook's FULL mode trains a real model and needs a CUDA GPU, but none is "
            "visible.\n  On Colab: Runtime > Change runtime type > T4 GPU, then run again.\n"
            "  Without a GPU: set COURSE_MODE=small (for example os.environ['COURSE_MODE'] = "
            "'small' before this cell) to run the small version on the CPU."
        )
    if mode == "full" and torch.cuda.device_count() < gpus:
        raise CourseSetupError(
            f"This notebook's FULL mode needs {gpus} GPUs, and this machine has "
            f"{torch.cuda.device_count()}. Colab gives one GPU; Kaggle gives two T4s for free: "
            "in a Kaggle notebook choose Settings > Accelerator > GPU T4 x2.\n"
            "  Or set COURSE_MODE=small to run the small version (two CPU processes)."
        )


def preamble(seed: int = 42, needs_gpu: bool = False, gpus: int = 1) -> str:
    """Pick the run mode, print what it means, seed everything and report the device.

    Args:
        seed: the seed for Python, NumPy and PyTorch.
        needs_gpu: whether the notebook's FULL mode needs CUDA (the training notebooks);
            if it does and there is none, a :class:`CourseSetupError` says what to do.
        gpus: how many GPUs FULL mode needs (notebook 08: 2); with fewer, the same error.

    Returns:
        ``"full"`` or ``"small"``.
    """
    mode = course_mode()
    quiet = quiet_known_warnings()  # before bitsandbytes is first imported
    if mode == "small":
        go_offline()
    if not torch.cuda.is_available():
        keep_4bit_cpu_layers_trainable()
    print("=" * 78)
    print(BANNERS[mode])
    print("-" * 78)
    print(device_report())
    print(f"seed: {seed}")
    print(quiet)
    if mode == "small":
        print("offline: HF_HUB_OFFLINE=1 (a Hub id fails at once instead of downloading)")
    print("=" * 78)
    if needs_gpu:
        require_gpu(mode, gpus)
    seed_everything(seed)
    return mode


def pick(mode: str, full: dict, small: dict) -> dict:
    """Return the configuration of ``mode`` and print it next to the other one."""
    chosen = full if mode == "full" else small
    width = max(len(k) for k in {**full, **small})
    print(f"{'setting':<{width}}  {'FULL':<34} {'SMALL':<34}")
    for key in {**full, **small}:
        left, right = str(full.get(key, "-")), str(small.get(key, "-"))
        print(f"{key:<{width}}  {left[:34]:<34} {right[:34]:<34}")
    print(f"running: {mode.upper()}")
    return dict(chosen)
