"""With the network unreachable, SMALL mode must fail fast on a Hub id, never wait.

"Fast" is proven without a stopwatch: an audit hook records every attempt to resolve a
host name or open a connection, and there must be none. Online, a Hub call retries for
23-46 s before failing; offline it never touches the network at all.
"""

import subprocess
import sys

CODE = """
import os
import sys

NETWORK = []
def watch(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        NETWORK.append((event, repr(args)[:80]))
sys.addaudithook(watch)
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ["COURSE_MODE"] = "small"
from helpers.mode import preamble
preamble()
from transformers import AutoTokenizer
try:
    AutoTokenizer.from_pretrained("mistralai/Mistral-7B-Instruct-v0.2")
except OSError as error:
    print("FAILED FAST:", type(error).__name__)
print("NETWORK ATTEMPTS:", NETWORK)
"""


def test_a_hub_id_fails_fast_in_small_mode():
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp/no-hf-cache-here", "HF_HOME": "/tmp/no-hf-home"}
    result = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=120
    )
    assert "FAILED FAST: OSError" in result.stdout, result.stderr[-2000:]
    assert "NETWORK ATTEMPTS: []" in result.stdout, result.stdout[-2000:]
