"""The course's Colab install, checked against Colab's published runtime (colab/colab-runtime.txt).

Both tests reach the package index and take minutes, so they sit behind the ``colab`` marker:
``python3 course.py test -m colab tests/test_colab_install.py``, an author's check. ``.ci/run``
runs the README's test command only, which leaves them out (``-m 'not colab'``, pyproject.toml).

- The install list resolves for Colab's Python 3.13 with Colab's torch, numpy and pandas kept
  and every requirement that Colab's other packages publish still met.
- A throw-away environment with Colab's versions of the packages that matter (torchao 0.10.0
  among them) runs the setup cell's install exactly as the cell runs it, then builds a LoRA
  model with peft and merges it. Before the install, the same check must fail with peft's
  torchao error: the environment really is Colab's. Torch is the CPU build of the course's
  own version (2.13.0, from this machine's disk), not Colab's CUDA 2.11.0; torchao's and
  peft's checks read version numbers only, so the stand-in does not change what is tested.
  After the install, every helpers module and every library the notebooks use must import.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "colab"))
import sync  # noqa: E402  (colab/sync.py)

RUNTIME = ROOT / "colab" / "colab-runtime.txt"
pytestmark = pytest.mark.colab


def runtime_section(name: str) -> list[str]:
    """The requirement lines of one ``# [name]`` section of colab/colab-runtime.txt."""
    lines, inside = [], False
    for raw in RUNTIME.read_text().splitlines():
        if raw.startswith("# ["):
            inside = raw.startswith(f"# [{name}]")
            continue
        line = raw.split("#")[0].strip()
        if inside and line:
            lines.append(line)
    return lines


def colab_version(package: str) -> str:
    for line in runtime_section("installed"):
        name, version = line.split("==")
        if name == package:
            return version
    raise KeyError(package)


def pip(python: str | Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True,
                          **kwargs)


def test_runtime_snapshot_lists_what_the_tests_need():
    installed = {line.split("==")[0] for line in runtime_section("installed")}
    assert {"torch", "torchao", "numpy", "pandas", "pyarrow", "huggingface_hub"} <= installed
    assert any(line.startswith("huggingface_hub<") for line in runtime_section("required"))


def test_install_list_resolves_on_colabs_python_and_keeps_its_numpy_and_pandas(tmp_path):
    # rouge_score 0.1.2 is published as source only; Colab builds it (pure Python). A
    # resolution for another Python takes wheels only, so build that wheel here first.
    wheels = tmp_path / "wheels"
    built = pip(sys.executable, "wheel", "--no-deps", "rouge_score==0.1.2", "-w", str(wheels))
    assert built.returncode == 0, built.stderr[-2000:]
    constraints = tmp_path / "colab-constraints.txt"
    keep = [f"{name}=={colab_version(name)}" for name in ("torch", "numpy", "pandas")]
    constraints.write_text("\n".join(keep + runtime_section("required")) + "\n")
    report = tmp_path / "report.json"
    result = pip(
        sys.executable, "install", "--dry-run", "--quiet", "--ignore-installed",
        "--python-version", "3.13", "--only-binary=:all:", "--target", str(tmp_path / "t"),
        "--find-links", str(wheels), "-r", str(ROOT / "colab" / "requirements.txt"),
        "-c", str(constraints), "--report", str(report),
        env={**os.environ, "PIP_CONSTRAINT": ""},  # this machine's own cap on torch: not Colab's
    )
    assert result.returncode == 0, result.stderr[-3000:]
    chosen = {i["metadata"]["name"].lower().replace("_", "-"): i["metadata"]["version"]
              for i in json.loads(report.read_text())["install"]}
    assert chosen["numpy"] == colab_version("numpy") and chosen["pandas"] == colab_version("pandas")
    assert chosen["huggingface-hub"].startswith("1.")


CHECK = textwrap.dedent("""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("mistral", hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=128)
    model = get_peft_model(AutoModelForCausalLM.from_config(config),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights=False))
    ids = torch.randint(0, 128, (1, 8))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        merged = model.merge_and_unload()
        after = merged(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
    import importlib, pkgutil
    import helpers  # every course module and library imports on Colab's numpy, pandas, ...
    for module in pkgutil.iter_modules(helpers.__path__):
        importlib.import_module(f"helpers.{module.name}")
    for library in ("trl", "bitsandbytes", "datasets", "evaluate", "sentence_transformers",
                    "faiss", "bm25s", "rouge_score", "accelerate"):
        importlib.import_module(library)
    import huggingface_hub, peft, torchao, transformers
    print("merged:", type(merged).__name__, "peft", peft.__version__, "torchao",
          torchao.__version__, "transformers", transformers.__version__, "huggingface_hub",
          huggingface_hub.__version__)
""")

FAKE_COLAB = "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"


def test_setup_cell_install_on_colabs_packages_lets_peft_merge(tmp_path):
    env_dir = tmp_path / "colab-env"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    quiet = ("install", "--quiet", "--disable-pip-version-check")
    local_torch = torch.__version__.split("+")[0]  # the CPU build on this machine's disk
    step = pip(python, *quiet, f"torch=={local_torch}")
    assert step.returncode == 0, step.stderr[-3000:]
    colab = [ln for ln in runtime_section("installed") if not ln.startswith("torch==")]
    step = pip(python, *quiet, *colab)
    assert step.returncode == 0, step.stderr[-3000:]

    # Colab as shipped: peft refuses its torchao where it builds LoRA layers
    before = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True)
    assert before.returncode != 0 and "incompatible version of torchao" in before.stderr, (
        before.stdout + before.stderr[-2000:])

    # the setup cell, as the notebooks have it, on a "Colab" whose course folder is here
    course = tmp_path / "course"
    (course / "colab").mkdir(parents=True)
    (course / "notebooks").mkdir()
    shutil.copy(ROOT / "colab" / "requirements.txt", course / "colab")
    (course / "helpers").symlink_to(ROOT / "helpers")
    (course / ".course-source").write_text(f"git {sync.settings()['ref']}")  # as if cloned
    cell = sync.setup_cell_source().replace("/content/course", str(course))
    setup = subprocess.run([str(python), "-c", FAKE_COLAB + cell], capture_output=True,
                           text=True, cwd=tmp_path)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-3000:]
    assert not re.search(r"^ERROR", setup.stdout + setup.stderr, re.M), (
        "pip printed an error in the first cell:\n" + setup.stderr[-3000:])

    after = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})
    assert after.returncode == 0, after.stderr[-3000:]
    print(after.stdout)
