"""With the network unreachable, SMALL mode must fail fast on a Hub id, never wait."""

import subprocess
import sys
import time

CODE = """
import os
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ["COURSE_MODE"] = "small"
from helpers.mode import preamble
preamble()
from transformers import AutoTokenizer
try:
    AutoTokenizer.from_pretrained("mistralai/Mistral-7B-Instruct-v0.2")
except OSError as error:
    print("FAILED FAST:", type(error).__name__)
"""


def test_a_hub_id_fails_fast_in_small_mode():
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp/no-hf-cache-here", "HF_HOME": "/tmp/no-hf-home"}
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120
    )
    elapsed = time.monotonic() - start
    assert "FAILED FAST: OSError" in result.stdout, result.stderr[-2000:]
    # Online, a Hub call here retries for 23-46 s before failing; offline it fails at once.
    # The budget covers interpreter start and the imports of torch and transformers.
    assert elapsed < 20, f"took {elapsed:.1f} s"
