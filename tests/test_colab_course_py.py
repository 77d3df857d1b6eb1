"""course.py: what `lab` opens, and what an unknown command says (no install, no server)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import course  # noqa: E402  (course.py)


def test_unknown_command_says_so_and_fails():
    result = subprocess.run([sys.executable, str(ROOT / "course.py"), "tset"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown command: 'tset'" in result.stderr and "course.py test" in result.stderr


def test_help_is_not_an_error():
    result = subprocess.run([sys.executable, str(ROOT / "course.py"), "help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "course.py lab" in result.stdout


def test_every_command_is_in_the_table():
    assert {"lab", "test", "bench"} <= set(course.COMMANDS)


def test_lab_opens_notebook_01_without_the_news_prompt(monkeypatch):
    ran = []
    monkeypatch.setattr(course, "install", lambda: None)
    monkeypatch.setattr(course, "run", lambda args, env=None: ran.append(args) or 0)
    assert course.lab([]) == 0
    command = ran[0]
    assert f"--LabApp.default_url={course.START_PAGE}" in command
    assert (ROOT / course.START_PAGE.removeprefix("/lab/tree/")).is_file()

    from jupyterlab.labapp import LabApp  # the options mean what they say to JupyterLab

    app = LabApp()
    app.parse_command_line([arg for arg in command if arg.startswith("--LabApp.")])
    assert app.news_url is None  # JupyterLab then tells its page the news are disabled
    assert app.default_url == course.START_PAGE


@pytest.mark.parametrize("name", ["requirements.txt", "pyproject.toml"])
def test_a_changed_pin_reinstalls(name, monkeypatch, tmp_path):
    fingerprint = course.wanted()
    (tmp_path / "requirements.txt").write_text((ROOT / "requirements.txt").read_text())
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    monkeypatch.setattr(course, "ROOT", tmp_path)
    assert course.wanted() == fingerprint
    (tmp_path / name).write_text((tmp_path / name).read_text() + "\n# changed\n")
    assert course.wanted() != fingerprint
