"""DS-1000's own interpreter: a separate environment with the library versions its tests need.

DS-1000's tests were written for numpy 1.2x, pandas 1.x, scipy 1.1x, scikit-learn 1.x and
matplotlib 3.8 or older; under the course's modern stack (numpy 2, pandas 3) some correct
references fail for version reasons alone (``DataFrame.append``, ``applymap``, ``np.NAN``,
frequency aliases, ...). So the sandbox runs answers with another interpreter: a virtual
environment created on first use and cached, pinned to :data:`PINS` (a combination under
which DS-1000's references pass).

Which Python runs the answers:

- here (CI, a laptop with Python 3.9-3.11): a venv made from the Python that runs the course
  (``python -m venv``), the pins installed with pip;
- on Colab, whose Python is newer (3.12 or 3.13: pandas 1.5.3 publishes wheels only up to
  3.11), a CPython 3.11 that ``uv`` downloads (``uv venv --python 3.11``; ``pip install uv``
  first when it is missing). The notebook's own kernel keeps its Python and modern stack.

PyTorch and TensorFlow are not downloaded: when the course's Python has them and is the same
Python version as the environment, the environment sees them (links in a folder placed after
its own site-packages, so its pinned NumPy wins). Otherwise their problems are skipped, with
that reason.

The environment lives in ``~/.cache/llm-finetuning-course/`` (or where
``COURSE_DS1000_ENV`` says), in a folder named after the pins and the Python version, so a
change of pins makes a new one.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

PINS: dict[str, str] = {
    "numpy": "1.26.4",
    "pandas": "1.5.3",
    "scipy": "1.11.4",
    "scikit-learn": "1.3.2",
    "matplotlib": "3.8.4",
    "seaborn": "0.13.2",
}
PYTHON = "3.11"  # the Python the environment is made with where the course's is too new
SHARED = ("torch", "tensorflow")  # reused from the course's Python when it has them
VERSIONS_OF = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "seaborn",
    "torch",
    "tensorflow",
)


def env_dir() -> Path:
    """Where the environment is (created or not)."""
    if os.environ.get("COURSE_DS1000_ENV"):
        return Path(os.environ["COURSE_DS1000_ENV"])
    digest = hashlib.sha256(json.dumps(PINS, sort_keys=True).encode()).hexdigest()[:8]
    return Path.home() / ".cache" / "llm-finetuning-course" / f"ds1000-env-{digest}"


def _python_of(env: Path) -> Path:
    return env / "bin" / "python"


def _ready(env: Path) -> bool:
    marker = env / "course-ready.json"
    try:
        return json.loads(marker.read_text())["pins"] == PINS and _python_of(env).exists()
    except (OSError, ValueError, KeyError):
        return False


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(command[:4])} ...):\n{done.stderr[-2000:]}")


def _uv() -> list[str] | None:
    if shutil.which("uv"):
        return [shutil.which("uv")]
    try:
        importlib.metadata.version("uv")
        return [sys.executable, "-m", "uv"]
    except importlib.metadata.PackageNotFoundError:
        return None


def _top_level(dist: importlib.metadata.Distribution) -> set[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    names = set()
    for file in dist.files or []:
        first = file.parts[0]
        if first.endswith((".dist-info", ".egg-info")) or first in ("..", "__pycache__", "bin"):
            continue
        names.add(first[:-3] if first.endswith(".py") else first)
    return names


def _shared_packages(installed: Iterable[str]) -> dict[str, Path]:
    """Top-level packages of torch/tensorflow and their requirements, from this Python."""
    skip = {re.sub(r"[-_.]+", "-", n).lower() for n in installed} | {"numpy"}
    seen: set[str] = set()
    todo = [name for name in SHARED]
    links: dict[str, Path] = {}
    site = Path(sysconfig.get_paths()["purelib"])
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen or name in skip:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        info = getattr(dist, "_path", None)  # its .dist-info: importlib.metadata sees it
        if isinstance(info, Path) and info.parent == site:
            links[info.name] = info
        for top in _top_level(dist):
            for candidate in (site / top, site / f"{top}.py"):
                if candidate.exists():
                    links[candidate.name] = candidate
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            todo.append(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0])
        for extra in site.glob(f"{dist.metadata['Name'].replace('-', '_')}*.libs"):
            links[extra.name] = extra
    return links


def _link_shared(env: Path) -> list[str]:
    """Let the environment import this Python's torch/tensorflow (same Python version only)."""
    python = _python_of(env)
    version = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if version != "{}.{}".format(*sys.version_info[:2]):
        return []
    listed = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m; "
            "print('\\n'.join(d.metadata['Name'] for d in m.distributions()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    links = _shared_packages(listed)
    if not links:
        return []
    folder = env / "shared-packages"
    folder.mkdir(exist_ok=True)
    for name, target in links.items():
        link = folder / name
        if not link.exists():
            link.symlink_to(target)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "course-shared-packages.pth").write_text(str(folder) + "\n")
    return sorted(links)


def create_env(env: Path) -> None:
    """Make the environment at ``env`` (a fresh folder): a venv, the pins, the shared links."""
    tmp = env.with_name(env.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    specs = [f"{name}=={version}" for name, version in PINS.items()]
    if sys.version_info[:2] <= (3, 11):
        _run([sys.executable, "-m", "venv", str(tmp)], "creating the venv")
        _run(
            [
                str(_python_of(tmp)),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *specs,
            ],
            "installing DS-1000's libraries",
        )
    else:
        uv = _uv()
        if uv is None:
            _run([sys.executable, "-m", "pip", "install", "--quiet", "uv"], "installing uv")
            uv = [sys.executable, "-m", "uv"]
        _run(
            [*uv, "venv", "--quiet", "--python", PYTHON, str(tmp)], f"making a Python {PYTHON} venv"
        )
        _run(
            [*uv, "pip", "install", "--quiet", "--python", str(_python_of(tmp)), *specs],
            "installing DS-1000's libraries",
        )
    tmp.rename(env)  # a venv's interpreter finds its packages relative to itself
    shared = _link_shared(env)
    (env / "course-ready.json").write_text(json.dumps({"pins": PINS, "shared": shared}))


def ensure_env() -> Path:
    """The DS-1000 interpreter (``.../bin/python``), creating the environment on first use.

    Creation takes one to two minutes (downloading about 100 MB of wheels) and happens once;
    a lock keeps two processes from doing it at the same time.
    """
    env = env_dir()
    if _ready(env) and _links_resolve(env):
        return _python_of(env)
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.with_name(env.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(env):
            shutil.rmtree(env, ignore_errors=True)
            create_env(env)
        elif not _links_resolve(env):
            # the environment outlived the course's .venv whose torch it linked (a reinstall,
            # a deleted clone): link this Python's packages instead, or the torch problems
            # would be skipped as "not installed"
            shutil.rmtree(env / "shared-packages", ignore_errors=True)
            _link_shared(env)
    return _python_of(env)


def _links_resolve(env: Path) -> bool:
    """Whether every shared link of the environment still leads to a package."""
    folder = env / "shared-packages"
    return not folder.is_dir() or all(link.exists() for link in folder.iterdir())


@functools.cache
def interpreter_versions(python: str | None = None) -> dict[str, str | None]:
    """The Python and library versions of the DS-1000 interpreter (``None``: not installed)."""
    python = python or str(ensure_env())
    code = (
        "import importlib.metadata as m, json, sys\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for name in {list(VERSIONS_OF)!r}:\n"
        "    try:\n        out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError:\n        out[name] = None\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@functools.cache
def _spec_check(python: str, names: tuple[str, ...]) -> frozenset[str]:
    code = (
        "import importlib.util, json, sys\n"
        "print(json.dumps([n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]))\n"
    )
    done = subprocess.run(
        [python, "-I", "-c", code, *names], capture_output=True, text=True, check=True
    )
    return frozenset(json.loads(done.stdout))


def missing_in(python: str, names: Iterable[str]) -> list[str]:
    """Which of the module ``names`` the interpreter ``python`` cannot import."""
    names = tuple(sorted(set(names)))
    return sorted(_spec_check(python, names)) if names else []
