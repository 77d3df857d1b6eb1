"""The benchmark behind `course.py bench` (it measures; it never asserts a speed)."""

import nbformat

from helpers import bench


def test_a_notebook_is_timed_by_running_it(tmp_path):
    notebook = nbformat.v4.new_notebook()
    marker = tmp_path / "ran.txt"
    notebook.cells = [nbformat.v4.new_code_cell(f"open({str(marker)!r}, 'w').write('yes')")]
    path = tmp_path / "99_probe.ipynb"
    nbformat.write(notebook, path)
    seconds = bench.time_notebook(path)
    assert marker.read_text() == "yes"  # the cell really ran
    assert seconds > 0


def test_a_notebook_is_timed_as_a_first_run(tmp_path):
    """Checkpoints of an earlier run (05 resumes from them) are set aside, then restored."""
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "checkpoint-1").write_text("an earlier run")
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(
        "import os\nassert not os.path.exists('outputs/checkpoint-1')\n"
        "os.makedirs('outputs', exist_ok=True)\nopen('outputs/new.txt', 'w').write('x')")]
    path = tmp_path / "98_probe.ipynb"
    nbformat.write(notebook, path)
    bench.time_notebook(path)  # raises if the cell saw the earlier run
    assert (tmp_path / "outputs" / "checkpoint-1").read_text() == "an earlier run"
    assert not (tmp_path / "outputs" / "new.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["98_probe.ipynb", "outputs"]


def test_the_table_lists_every_measurement():
    text = bench.table({"04": 21.4}, {"mistralai/Mistral-7B-Instruct-v0.2": 4.25})
    assert "| notebook 04 | 21 s |" in text
    assert "| stand-in build: mistralai/Mistral-7B-Instruct-v0.2 | 4.2 s |" in text


def test_the_load_is_reported_with_the_times():
    assert "cores, load average" in bench.load_note()
