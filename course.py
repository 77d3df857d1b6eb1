"""Set up and run the course with one command each (standard library only).

    python3 course.py lab     # install into .venv (first time), then open JupyterLab
    python3 course.py test    # install into .venv (first time), then run every test
    python3 course.py bench   # time each notebook's SMALL run and the stand-in builds

Extra arguments after `test` go to pytest, e.g. `python3 course.py test tests/test_mode.py`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".course-installed"
START_PAGE = "/lab/tree/notebooks/01_memory_math.ipynb"  # where `lab` opens


def wanted() -> str:
    """A fingerprint of what should be installed: the pins and the package definition."""
    text = b"".join((ROOT / name).read_bytes() for name in ("requirements.txt", "pyproject.toml"))
    return hashlib.sha256(text).hexdigest()


def install() -> None:
    """Create .venv and install the pinned stack and the helpers package, if not done yet."""
    if sys.version_info < (3, 11):  # noqa: UP036 (this runs under any python3)
        sys.exit(f"The course needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if STAMP.exists() and STAMP.read_text() == wanted():
        return
    if not PYTHON.exists():
        print(f"Creating a virtual environment in {VENV} ...", flush=True)
        venv.create(VENV, with_pip=True)
    print(
        "Installing the course's pinned packages (requirements.txt) into .venv. The first time\n"
        "this fills about 2.2 GB of disk (see the README: 'Install: time, disk and\n"
        "downloads'); it takes minutes, pip shows its progress below. Later runs skip this.",
        flush=True,
    )
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check"]
    if subprocess.run([*pip, "-r", str(ROOT / "requirements.txt")]).returncode != 0:
        sys.exit("\nThe install stopped (pip's error is above). Check the internet connection "
                 "and run the command again; it picks up where it stopped.")
    subprocess.run([*pip, "--quiet", "--no-deps", "-e", str(ROOT)], check=True)
    STAMP.write_text(wanted())
    print("Installed.", flush=True)


def run(args: list[str], env: dict[str, str] | None = None) -> int:
    return subprocess.run(args, cwd=ROOT, env={**os.environ, **(env or {})}).returncode


def lab(rest: list[str]) -> int:
    """Install if needed, then open JupyterLab on the course."""
    install()
    # Open on the course's first notebook, with JupyterLab's "news?" prompt off.
    command = [str(BIN / "jupyter"), "lab", f"--ServerApp.root_dir={ROOT}",
               f"--LabApp.default_url={START_PAGE}", "--LabApp.news_url=None"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and cloud machines often run as root
    return run([*command, *rest])


def test(rest: list[str]) -> int:
    """Install if needed, then run every test and every notebook in SMALL mode, offline."""
    install()
    env = {"COURSE_MODE": "small", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return run([str(PYTHON), "-m", "pytest", *rest], env)


def bench(rest: list[str]) -> int:
    """Install if needed, then time each notebook's SMALL run and the stand-in builds."""
    install()
    env = {"COURSE_MODE": "small", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return run([str(PYTHON), "-m", "helpers.bench", *rest], env)


# Each command: a function taking the arguments after its name and returning an exit code.
COMMANDS = {
    "lab": lab,
    "test": test,
    "bench": bench,
}


def main() -> int:
    command, *rest = sys.argv[1:] or ["help"]
    if command in COMMANDS:
        return COMMANDS[command](rest)
    if command in ("help", "-h", "--help"):
        print(__doc__)
        return 0
    print(f"unknown command: {command!r} (the commands: {', '.join(COMMANDS)})\n", file=sys.stderr)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
