"""Static checks of every notebook: how it is committed and how it starts.

They read git's copy of each notebook (the index, which is what a commit takes), so a learner
who has run and saved notebooks still gets a pass; a fresh clone or a zip without git has
only the files, and those are read.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "colab"))
import sync  # noqa: E402  (colab/sync.py)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LESSONS = [p for p in NOTEBOOKS if not p.stem.endswith("_solutions")]


def committed_text(path: Path, root: Path = ROOT) -> str:
    """The file as git has it (staged or committed), else as it is on disk."""
    shown = subprocess.run(["git", "-C", str(root), "show", f":{path.relative_to(root)}"],
                           capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else path.read_text()


def load(path: Path) -> dict:
    return json.loads(committed_text(path))


def test_a_notebook_run_and_saved_in_place_is_still_checked_as_committed(tmp_path):
    path = NOTEBOOKS[0]
    text = committed_text(path)
    copy = tmp_path / "notebooks" / path.name
    copy.parent.mkdir()
    copy.write_text(text)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "--quiet"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "course"], check=True)
    nb = json.loads(text)  # the learner runs every cell and saves
    for count, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        cell["execution_count"] = count + 1
        cell["outputs"] = [{"name": "stdout", "output_type": "stream", "text": ["ran\n"]}]
    copy.write_text(json.dumps(nb, indent=1))
    assert committed_text(copy, tmp_path) == text  # the checks see what was committed


def test_there_are_notebooks():
    assert LESSONS, "no notebooks in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_file_name_is_numbered(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_stripped(path):
    for cell in load(path)["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_notebooks_that_need_a_gpu_ask_colab_for_one(path):
    nb = load(path)
    metadata = nb["metadata"]
    assert metadata["kernelspec"]["name"] == "python3"
    if sync.needs_gpu(nb):
        assert metadata["accelerator"] == "GPU" and metadata["colab"]["gpuType"] == "T4"
    else:  # a CPU notebook on a GPU runtime burns the learner's free GPU quota
        assert "accelerator" not in metadata and "gpuType" not in metadata["colab"]


def test_the_cpu_notebooks_are_the_first_three():
    needs = {p.name[:2]: sync.needs_gpu(load(p)) for p in LESSONS}
    assert [n for n, gpu in needs.items() if not gpu][:3] == ["01", "02", "03"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_is_the_shared_one(path):
    code = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
    assert sync.source_text(code[0]) == sync.setup_cell_source().rstrip("\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_title_badge_and_preamble(path):
    nb = load(path)
    first = sync.source_text(nb["cells"][0])
    assert nb["cells"][0]["cell_type"] == "markdown"
    assert first.startswith(f"# {path.name[:2]} · "), "title '# NN · ...' first"
    assert sync.badge(path) in first
    code = [sync.source_text(c) for c in nb["cells"] if c["cell_type"] == "code"]
    assert "preamble(" in code[1], "the cell after setup calls helpers.mode.preamble"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_states_goals_needs_recap_and_exercises(path):
    nb = load(path)
    first = sync.source_text(nb["cells"][0])
    assert "What you will learn" in first and "What you need" in first
    markdown = "\n".join(sync.source_text(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert re.search(r"^#+ Recap", markdown, re.M), "a Recap section"
    assert re.search(r"^#+ Exercises", markdown, re.M), "an Exercises section"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_config_cell_has_full_and_small(path):
    code = [sync.source_text(c) for c in load(path)["cells"] if c["cell_type"] == "code"]
    config = [c for c in code if re.search(r"^FULL = ", c, re.M)]
    assert len(config) == 1, "one CONFIG cell defines FULL and SMALL"
    assert re.search(r"^SMALL = ", config[0], re.M)
    assert "pick(MODE, FULL, SMALL)" in config[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_sync_is_up_to_date(path):
    text = committed_text(path)
    assert sync.dumps(sync.synced(json.loads(text), path)) == text, (
        f"{path.name} is not as `python colab/sync.py` writes it: run that, then commit")


def test_readme_table_is_up_to_date():
    readme = committed_text(ROOT / "README.md")
    assert sync.readme_table(NOTEBOOKS) in readme, "run `python colab/sync.py`, then commit"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_opening_and_saving_in_jupyterlab_changes_nothing(path, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter"))  # its trust database
    # JupyterLab reads and writes notebooks through jupyter_server's contents manager
    from jupyter_server.services.contents.filemanager import FileContentsManager

    text = committed_text(path)
    (tmp_path / path.name).write_text(text)
    manager = FileContentsManager(root_dir=str(tmp_path))
    model = manager.get(path.name, content=True, type="notebook")
    manager.save({"type": "notebook", "format": "json", "content": model["content"]},
                 path.name)
    assert (tmp_path / path.name).read_text() == text


def test_the_setup_cell_is_followed_by_the_guarded_helpers_import():
    for path in LESSONS:
        code = [sync.source_text(c) for c in load(path)["cells"] if c["cell_type"] == "code"]
        assert sync.guarded(code[1]) == code[1], f"{path.name}: run `python colab/sync.py`"
        assert "run the first cell (Setup) first" in code[1], path.name


def pins(path: Path) -> dict[str, str]:
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    return dict(ln.split("==") for ln in lines if ln)


# Pinned for Colab only: Colab ships a torchao that peft refuses; the tested stack has none.
COLAB_ONLY = {"torchao"}


def test_colab_installs_the_tested_versions_but_never_torch():
    tested, colab = pins(ROOT / "requirements.txt"), pins(ROOT / "colab" / "requirements.txt")
    assert "torch" not in colab, "Colab ships its own torch"
    assert {name: tested[name] for name in colab if name not in COLAB_ONLY} == {
        name: version for name, version in colab.items() if name not in COLAB_ONLY}
    for missing_on_colab in ("bitsandbytes", "trl", "evaluate", "rouge_score"):
        assert missing_on_colab in colab


def test_every_requirement_is_pinned():
    for path in (ROOT / "requirements.txt", ROOT / "colab" / "requirements.txt"):
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            assert not line or re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", line), line


# Solutions: Colab ignores ``jupyter.source_hidden`` (and Run all prints what such cells print);
# it hides a code cell only as a form: ``cellView: form`` with a ``#@title`` line.
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_every_solution_cell_is_a_colab_form_cell(path):
    code = [c for c in load(path)["cells"] if c["cell_type"] == "code"]
    for cell in code:
        hidden = cell.get("metadata", {}).get("jupyter", {}).get("source_hidden")
        assert not hidden, "Colab ignores source_hidden: make it a '#@title Solution N: ...' cell"
    solutions = [c for c in code if sync.source_text(c).startswith(sync.SOLUTION_TITLE)]
    markdown = "\n".join(sync.source_text(c) for c in load(path)["cells"])
    if re.search(r"^#+ Exercises", markdown, re.M):
        assert solutions, "the exercises have solutions, as form cells"
    for cell in solutions:
        assert cell["metadata"].get("cellView") == "form"
        assert re.match(r"#@title Solution \d+: \S", sync.source_text(cell))


@pytest.mark.parametrize("name", ["01", "02", "03", "04", "05", "06"])
def test_solutions_leave_the_learners_variables_alone(name):
    """Each solution of notebooks 01-06 runs inside a function: it binds one new name only."""
    import ast

    (path,) = [p for p in LESSONS if p.name.startswith(name)]
    for cell in load(path)["cells"]:
        text = sync.source_text(cell)
        if cell["cell_type"] != "code" or not text.startswith(sync.SOLUTION_TITLE):
            continue
        number = re.match(r"#@title Solution (\d+)", text).group(1)
        body = ast.parse(text).body
        assert [type(node) for node in body] == [ast.FunctionDef, ast.Expr]
        assert body[0].name == f"solution_{number}"
        assert ast.unparse(body[1]) == f"solution_{number}()"


def _with_preamble(call: str) -> dict:
    source = f"from helpers.mode import preamble\n{call}\n"
    return {"cells": [{"cell_type": "code", "source": source}]}


def test_readme_gpu_column_follows_each_notebooks_preamble():
    assert sync.gpu_column(_with_preamble("preamble(seed=0)")) == "none: runs on a CPU"
    assert sync.gpu_column(_with_preamble("preamble(needs_gpu=True)")) == "a free T4"
    two = sync.gpu_column(_with_preamble("preamble(needs_gpu=True, gpus=2)"))
    assert "2 × T4" in two and "Kaggle" in two
    assert sync.gpus_needed(_with_preamble("preamble(needs_gpu=True, gpus=4)")) == 4
