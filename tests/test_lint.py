import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("helpers", "tests", "notebooks", "colab", "distributed", "course.py", "conftest.py")


def test_ruff_finds_nothing_in_helpers_tests_notebooks_and_scripts():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run(
        [str(ruff), "check", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
