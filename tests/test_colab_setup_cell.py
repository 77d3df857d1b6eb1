"""The setup cell every notebook starts with, run as Colab runs it, offline.

The cell's own code runs in IPython (as in Colab) with a fake ``google.colab`` module, with
``/content`` moved into a temporary folder and GitHub replaced by a local repository or an
address nobody answers. Each failure must end in one message that says what to do, with no
traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "colab"))
import sync  # noqa: E402  (colab/sync.py)

RUNNER = """
import sys, types
sys.modules["google.colab"] = types.ModuleType("google.colab")
from IPython.core.interactiveshell import InteractiveShell
result = InteractiveShell.instance().run_cell(open(sys.argv[1]).read())
sys.exit(0 if result.success else 1)
"""
UNREACHABLE = "https://127.0.0.1:9/"  # nothing listens on port 9: fails at once, offline


def make_course(folder: Path, requirement: str = "packaging") -> Path:
    """A repository that looks like the course: helpers/, notebooks/, colab/requirements.txt."""
    for sub in ("helpers", "notebooks", "colab"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "helpers" / "__init__.py").write_text("")
    (folder / "notebooks" / "README.md").write_text("notebooks\n")
    (folder / "colab" / "requirements.txt").write_text(f"{requirement}\n")
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "--quiet", "--initial-branch", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "--quiet", "-m", "course"], check=True)
    return folder


def run_cell(tmp: Path, ref: str = "main", github: str | None = None):
    """Run the setup cell for ``owner/course`` at ``ref``; GitHub is ``tmp/github`` unless set."""
    cell = (ROOT / "colab" / "setup_cell.py").read_text()
    cell = cell.replace("{repository}", "owner/course").replace("{ref}", ref)
    cell = cell.replace("https://github.com/", github or f"file://{tmp}/github/")
    cell = cell.replace('"/content', f'"{tmp}/content').replace("f\"/content", f'f"{tmp}/content')
    (tmp / "content").mkdir(exist_ok=True)
    (tmp / "cell.py").write_text(cell)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_CONSTRAINT": ""}
    result = subprocess.run([sys.executable, "-c", RUNNER, str(tmp / "cell.py")],
                            capture_output=True, text=True, env=env, cwd=tmp)
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def github(tmp_path):
    return make_course(tmp_path / "github" / "owner" / "course")


def test_the_notebooks_get_the_template_filled_from_settings():
    cell = sync.setup_cell_source()
    values = sync.settings()
    assert f'REPOSITORY, REF = "{values["repository"]}", "{values["ref"]}"' in cell


def test_first_run_fetches_and_installs_a_restart_reuses_both(tmp_path, github):
    code, out = run_cell(tmp_path)
    assert code == 0, out
    course = tmp_path / "content" / "course"
    assert (course / ".course-source").read_text() == "git main"
    assert "Installing the course's packages" in out
    (course / "kept").write_text("")  # a runtime restart keeps the disk
    code, out = run_cell(tmp_path)
    assert code == 0, out
    assert (course / "kept").exists(), "the same version is not fetched again"
    assert "Installing" not in out, "nor installed again"


def test_a_copy_of_another_version_is_replaced(tmp_path, github):
    assert run_cell(tmp_path)[0] == 0
    course = tmp_path / "content" / "course"
    (course / ".course-source").write_text("git v0.0.1")  # left by an older notebook
    (course / "stale").write_text("")
    code, out = run_cell(tmp_path)
    assert code == 0, out
    assert not (course / "stale").exists()


@pytest.mark.parametrize("ref, github_url, why", [
    ("v0.1.0", None, "owner/course has no branch or tag 'v0.1.0'"),
    ("main", UNREACHABLE, "the runtime cannot reach GitHub"),  # no network, or GitHub blocked
    ("main", "file:///nowhere/", "there is no public repository owner/course"),
])
def test_a_fetch_that_fails_says_what_to_do(tmp_path, github, ref, github_url, why):
    code, out = run_cell(tmp_path, ref=ref, github=github_url)
    assert code != 0
    assert "Setup stopped: could not fetch the course" in out and why in out
    assert f"/archive/{ref}.zip" in out and "upload it to /content" in out
    assert "Traceback" not in out and "CalledProcessError" not in out


def test_a_failed_install_says_what_to_do(tmp_path):
    make_course(tmp_path / "github" / "owner" / "course", requirement="no-such-course-pkg==1.0")
    code, out = run_cell(tmp_path)
    assert code != 0
    assert "Setup stopped: installing the course's packages failed" in out
    assert "Traceback" not in out


def test_an_uploaded_zip_runs_the_course_without_github(tmp_path, github):
    archive = tmp_path / "content" / "course-main.zip"  # GitHub's "Download ZIP" of main
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in github.rglob("*"):
            if ".git" not in path.parts and path.is_file():
                zf.write(path, Path("course-main") / path.relative_to(github))
    shutil.rmtree(tmp_path / "github")
    code, out = run_cell(tmp_path, github=UNREACHABLE)
    assert code == 0, out
    course = tmp_path / "content" / "course"
    assert (course / "helpers" / "__init__.py").exists()
    assert (course / ".course-source").read_text() == f"zip {archive}"


def test_skipping_the_setup_cell_says_run_the_first_cell(tmp_path):
    nb = sync.guarded("from helpers.mode import pick, preamble\n\nMODE = preamble(seed=42)\n")
    # -I -S: no site-packages, so no helpers, as on a Colab runtime that skipped the setup cell
    result = subprocess.run([sys.executable, "-I", "-S", "-c", nb], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert "No module named 'helpers': run the first cell (Setup) first" in result.stderr


def test_a_tag_is_published_only_once_the_repository_has_it(tmp_path):
    repo = make_course(tmp_path / "repo")
    assert sync.check_tag("", repo) is None  # no tag: the branch in settings.toml
    problem = sync.check_tag("v1.0", repo)
    assert problem and "git tag v1.0 && git push origin v1.0" in problem
    subprocess.run(["git", "-C", str(repo), "tag", "v1.0"], check=True)
    assert sync.check_tag("v1.0", repo) is None


def test_the_published_ref_defaults_to_a_branch_not_a_missing_tag():
    values = sync.settings()
    assert values["ref"] and sync.check_tag(values.get("tag", "")) is None
