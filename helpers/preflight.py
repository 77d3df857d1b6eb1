"""Checks made before a long or large step, so that a learner gets advice, not a stack trace.

Each check raises :class:`helpers.mode.CourseSetupError` with what to do.
"""

from __future__ import annotations

import os

import torch

from helpers.mode import CourseSetupError

GATED_MODELS = {"mistralai/Mistral-7B-Instruct-v0.2"}


def gpu_free_bytes() -> int | None:
    """Free memory on the first CUDA device, or ``None`` without CUDA."""
    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(0)
    return free


def check_gpu_memory(
    required_bytes: int, what: str = "this plan", free_bytes: int | None = None
) -> None:
    """Stop before loading anything if the GPU cannot hold ``required_bytes``.

    Args:
        required_bytes: the predicted peak (from :mod:`helpers.memory`).
        what: a few words naming the plan, for the message.
        free_bytes: free GPU memory; read from the device when not given. Nothing is
            checked when there is no GPU (SMALL mode on a CPU).
    """
    free = gpu_free_bytes() if free_bytes is None else free_bytes
    if free is None:
        return
    if required_bytes > free:
        raise CourseSetupError(
            f"{what} needs about {required_bytes / 1e9:.1f} GB of GPU memory, but only "
            f"{free / 1e9:.1f} GB is free.\n  Free memory: Runtime > Restart session (other "
            "notebooks or earlier cells may hold some), then run from the top.\n  Or lower the "
            "plan in the CONFIG cell: a smaller batch size with more gradient accumulation, or "
            "shorter sequences (max_length)."
        )
    print(
        f"memory check: {what} needs ~{required_bytes / 1e9:.1f} GB, {free / 1e9:.1f} GB free: fits"
    )


def hf_token() -> str | None:
    """The Hugging Face token: ``HF_TOKEN``, else a Colab secret named HF_TOKEN, else a login."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:  # Colab secrets ("key" icon in the left bar)
        from google.colab import userdata  # type: ignore[import-not-found]

        token = userdata.get("HF_TOKEN")
    except Exception:  # not on Colab, no such secret, or access not granted
        token = None
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


# An ungated model of the same family and size for learners without access to a gated one:
# Zephyr-7B-beta is Mistral-7B-v0.1 fine-tuned to chat (MistralForCausalLM, the same shapes, so
# the same memory plan), MIT licence, and its model card asks for no access request.
UNGATED_ALTERNATIVES = {"mistralai/Mistral-7B-Instruct-v0.2": "HuggingFaceH4/zephyr-7b-beta"}

GATED_ADVICE = (
    "{model_id} is a gated model: accept its terms on https://huggingface.co/{model_id} "
    "while logged in, then give this notebook a token.\n"
    "  On Colab: click the key icon in the left bar, add a secret named HF_TOKEN whose value is "
    "a read token from https://huggingface.co/settings/tokens, allow this notebook to access it, "
    "and run again.\n  Elsewhere: set the HF_TOKEN environment variable, or run "
    "`hf auth login` (the `hf` command comes with huggingface_hub)."
)
UNGATED_ADVICE = (
    "\n  No access? {alternative} is ungated, of the same architecture and size (MIT licence): "
    "the README's troubleshooting section says how to run this notebook on it."
)


def gated_advice(model_id: str) -> str:
    """What to do about a gated ``model_id``: accept its terms and log in, or an ungated model."""
    advice = GATED_ADVICE.format(model_id=model_id)
    if model_id in UNGATED_ALTERNATIVES:
        advice += UNGATED_ADVICE.format(alternative=UNGATED_ALTERNATIVES[model_id])
    return advice


def check_hub_access(model_id: str, token: str | None = None) -> None:
    """Before downloading ``model_id``: make sure a gated model has a token that can read it.

    Nothing is checked for models that are not gated, nor offline (SMALL mode).
    """
    if model_id not in GATED_MODELS or os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    token = token or hf_token()
    if not token:
        raise CourseSetupError(
            "No Hugging Face token found.\n  " + gated_advice(model_id)
        )
    from huggingface_hub import auth_check
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        auth_check(model_id, token=token)
    except (GatedRepoError, RepositoryNotFoundError):
        raise CourseSetupError(
            "Your Hugging Face token cannot read this model yet.\n  "
            + gated_advice(model_id)
        ) from None
    print(f"hub check: your token can read {model_id}")
