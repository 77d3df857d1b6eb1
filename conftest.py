"""Test-wide settings: SMALL mode, offline, no plot windows (unless set otherwise)."""

import os

os.environ.setdefault("COURSE_MODE", "small")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

# The notebooks get this from preamble(); unit tests that build 4-bit models need it too.
from helpers.mode import keep_4bit_cpu_layers_trainable  # noqa: E402

keep_4bit_cpu_layers_trainable()


def pytest_sessionstart(session):
    """Build the tiny stand-ins once, before any notebook kernel needs them."""
    from helpers.standins import STANDINS, build_standin

    for model_id in STANDINS:
        build_standin(model_id)
