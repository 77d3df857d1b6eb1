"""The API-drift gate: every keyword the notebooks pass is one the installed libraries take.

``python3 course.py drift`` runs this same file against the newest releases, in a
throw-away environment, to see what the next release would break.
"""

import json
import shutil
import warnings
from pathlib import Path

import pytest

from helpers.api_drift import ROOT, check_keywords, check_sources, course_sources

NOTEBOOK = "06_qlora_phi15_ds1000.ipynb"


@pytest.fixture(scope="module")
def report():
    return check_sources()


def test_every_keyword_the_course_passes_is_accepted(report):
    broken = [f for f in report["findings"] if f.kind == "broken"]
    assert not broken, "the installed libraries reject:\n" + "\n".join(map(str, broken))


def test_what_could_not_be_checked_is_reported_not_skipped(report):
    # The gate checks real calls, not nothing: every training notebook's lesson calls are in.
    assert report["checked"] >= 100, report["checked"]
    assert not report["unparsable"], report["unparsable"]
    for finding in report["findings"]:
        if finding.kind == "unverified":  # shown in pytest's warnings summary
            warnings.warn(f"API drift: {finding}", UserWarning, stacklevel=1)


def _copy_with(tmp_path: Path, notebook: str, old: str, new: str) -> Path:
    """A copy of the course's ``notebook`` in ``tmp_path/notebooks`` with ``old`` -> ``new``."""
    (tmp_path / "notebooks").mkdir()
    copy = tmp_path / "notebooks" / notebook
    shutil.copy(ROOT / "notebooks" / notebook, copy)
    nb = json.loads(copy.read_text())
    changed = 0
    for cell in nb["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and old in text:
            cell["source"] = text.replace(old, new, 1)
            changed += 1
    assert changed == 1, f"{old!r} is in {changed} code cells of {notebook}"
    copy.write_text(json.dumps(nb))
    return tmp_path


@pytest.mark.parametrize(
    ("old", "new", "argument"),
    [
        # trl renamed max_seq_length to max_length; SFTTrainer's tokenizer became processing_class
        ("max_length=CONFIG[", "max_seq_length=CONFIG[", "max_seq_length"),
        ("processing_class=tokenizer", "tokenizer=tokenizer", "tokenizer"),
        ("bnb_4bit_use_double_quant=True", "bnb_4bit_double_quant=True", "bnb_4bit_double_quant"),
        ("task_type=", "task=", "task"),
    ],
)
def test_a_removed_keyword_fails_with_notebook_cell_and_argument(tmp_path, old, new, argument):
    root = _copy_with(tmp_path, NOTEBOOK, old, new)
    findings = check_sources(course_sources(root))["findings"]
    broken = [f for f in findings if f.kind == "broken"]
    assert [f.argument for f in broken] == [argument], [str(f) for f in findings]
    (finding,) = broken
    cells = json.loads((root / "notebooks" / NOTEBOOK).read_text())["cells"]
    assert new in "".join(cells[finding.cell]["source"])
    assert finding.source == f"notebooks/{NOTEBOOK}" and argument in str(finding)


def test_a_name_the_library_no_longer_has_fails(tmp_path):
    root = _copy_with(
        tmp_path, NOTEBOOK, "from trl import SFTConfig, SFTTrainer",
        "from trl import DataCollatorForCompletionOnlyLM, SFTConfig, SFTTrainer",
    )
    broken = [f for f in check_sources(course_sources(root))["findings"] if f.kind == "broken"]
    assert len(broken) == 1 and "DataCollatorForCompletionOnlyLM" in str(broken[0])


def test_calls_that_cannot_be_checked_are_reported():
    code = (
        "import transformers\n"
        "from peft import LoraConfig\n"
        "extra = {'r': 8}\n"
        "LoraConfig(**extra)\n"
        "transformers.NoSuchClass(x=1)\n"
        "trainer = transformers.Trainer\n"
    )
    findings = check_sources([("snippet.py", [(None, code)])])["findings"]
    kinds = sorted((f.call, f.kind) for f in findings)
    assert kinds == [("LoraConfig", "unverified"), ("transformers.NoSuchClass", "broken")]


def test_keywords_follow_kwargs_into_what_the_module_reads():
    from transformers import AutoModelForCausalLM, PreTrainedModel
    from trl import SFTConfig

    assert check_keywords(SFTConfig, ["max_length", "output_dir"]) == {}  # dataclass fields
    assert check_keywords(SFTConfig, ["max_seq_length"])["max_seq_length"][0] == "broken"
    # from_pretrained takes quantization_config through **kwargs, read by name in its module
    assert check_keywords(PreTrainedModel.from_pretrained, ["quantization_config"]) == {}
    odd = check_keywords(PreTrainedModel.from_pretrained, ["no_such_option_anywhere"])
    assert odd["no_such_option_anywhere"][0] == "broken"
    assert AutoModelForCausalLM.from_pretrained is not None
