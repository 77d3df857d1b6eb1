"""Write the Colab parts of the course from colab/settings.toml.

For every notebooks/NN_*.ipynb: the Open-in-Colab badge under the title, the shared setup
cell (colab/setup_cell.py) as the first code cell, the Colab metadata (a T4 GPU only for a
notebook whose FULL mode needs one: ``preamble(needs_gpu=True)``), solution cells as Colab
forms, and no outputs. Notebooks are written in the exact form JupyterLab writes them
(nbformat 4.5 with cell ids, sorted keys, sources as lists of lines, and the kernel's
``language_info``), so that opening and saving one in JupyterLab changes nothing.
In README.md: the notebook table between its two markers.

    python colab/sync.py            # write
    python colab/sync.py --check    # change nothing; exit 1 and list what is out of date
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
TABLE_START = "<!-- notebooks:start (written by colab/sync.py) -->"
TABLE_END = "<!-- notebooks:end -->"
# What JupyterLab writes into a notebook once its kernel (ipykernel's python3) has started.
KERNEL_METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {
        "codemirror_mode": {"name": "ipython", "version": 3},
        "file_extension": ".py",
        "mimetype": "text/x-python",
        "name": "python",
        "nbconvert_exporter": "python",
        "pygments_lexer": "ipython3",
        "version": "3.11.7",  # the Python the course is tested with (.ci/run)
    },
}
# Colab: a T4 for the notebooks that need a GPU, nothing for those that run on a CPU (a GPU
# runtime would burn the learner's free quota for nothing).
GPU_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}
CPU_METADATA = {"colab": {"provenance": []}}
# A solution cell: a code cell that starts with this line. Colab shows it as a collapsed form
# (``cellView: form``) until the learner opens it.
SOLUTION_TITLE = "#@title Solution"
# The cell after the setup cell imports the course's helpers. A learner who skipped the setup
# cell on Colab has none: say what to do instead of a bare ModuleNotFoundError.
HELPERS_IMPORT = re.compile(r"^from helpers\.mode import (.+)$", re.M)
HELPERS_GUARD = (
    "try:\n"
    "    from helpers.mode import {names}\n"
    "except ModuleNotFoundError as missing:  # on Colab, the first cell brings the course's code\n"
    '    raise ModuleNotFoundError(f"{{missing}}: run the first cell (Setup) first") from None'
)


def guarded(preamble_source: str) -> str:
    """The preamble cell with its ``from helpers.mode import ...`` inside the guard."""
    if "run the first cell (Setup) first" in preamble_source:
        return preamble_source
    return HELPERS_IMPORT.sub(lambda m: HELPERS_GUARD.format(names=m.group(1)), preamble_source,
                              count=1)


def settings() -> dict[str, str]:
    """The repository (owner/name) and the ref (a tag if set, else the branch) Colab fetches."""
    values = tomllib.loads((ROOT / "colab" / "settings.toml").read_text())
    if values.get("tag"):
        values["ref"] = values["tag"]
    return values


def check_tag(tag: str, root: Path = ROOT) -> str | None:
    """Why ``tag`` cannot be published (it is not a tag of the repository at ``root``), or None."""
    if not tag:
        return None
    found = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet",
                            f"refs/tags/{tag}"], capture_output=True, text=True)
    if found.returncode != 0:
        return (f"colab/settings.toml names the tag {tag!r}, which this repository does not "
                f"have: create and push it first (`git tag {tag} && git push origin {tag}`), "
                "or leave tag empty to publish from the branch.")
    return None


def setup_cell_source() -> str:
    """The setup cell every notebook starts with, filled in from the settings."""
    template = (ROOT / "colab" / "setup_cell.py").read_text()
    values = settings()
    return template.replace("{repository}", values["repository"]).replace("{ref}", values["ref"])


def badge(notebook: Path) -> str:
    """The Open-in-Colab badge (Markdown) of one notebook."""
    values = settings()
    url = (
        f"https://colab.research.google.com/github/{values['repository']}/blob/"
        f"{values['ref']}/notebooks/{notebook.name}"
    )
    return f"[![Open In Colab]({BADGE_IMAGE})]({url})"


def source_text(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def title(nb: dict) -> str:
    """The notebook's title: the first '# ' line of its first Markdown cell."""
    for line in source_text(nb["cells"][0]).splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise ValueError("the first cell has no '# ' title")


def synced(nb: dict, path: Path) -> dict:
    """Return a copy of the notebook with badge, setup cell, metadata set and outputs gone."""
    nb = json.loads(json.dumps(nb))
    first = nb["cells"][0]
    lines = [ln for ln in source_text(first).splitlines() if not ln.startswith("[![Open In Colab]")]
    at = next(i for i, ln in enumerate(lines) if ln.startswith("# ")) + 1
    lines[at:at] = ["", badge(path), ""]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")
    first["source"] = text
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    setup = setup_cell_source().rstrip("\n")
    if not code_cells or not source_text(code_cells[0]).startswith("# Setup."):
        nb["cells"].insert(1, {"cell_type": "code", "metadata": {}, "source": setup})
    else:
        code_cells[0]["source"] = setup
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    if len(code_cells) > 1:
        code_cells[1]["source"] = guarded(source_text(code_cells[1]))
    ids: set[str] = set()
    for index, cell in enumerate(nb["cells"]):
        cell["source"] = source_text(cell)
        cell_id = cell.get("id")
        if not cell_id or cell_id in ids:  # a new cell: an id that stays the same on every sync
            seed = f"{path.name}:{index}:{cell['source']}"
            cell_id = hashlib.sha256(seed.encode()).hexdigest()[:8]
        ids.add(cell_id)
        cell["id"] = cell_id
        if not cell.get("attachments"):
            cell.pop("attachments", None)
        metadata = dict(cell.get("metadata", {}))
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
            if cell["source"].startswith(SOLUTION_TITLE):
                metadata["cellView"] = "form"
            else:
                metadata.pop("cellView", None)
        else:
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
        for transient in ("execution", "scrolled", "collapsed", "trusted"):
            metadata.pop(transient, None)
        cell["metadata"] = metadata
    metadata = {
        key: value
        for key, value in nb.get("metadata", {}).items()
        if key not in ("accelerator", "colab", "kernelspec", "language_info", "widgets")
    }
    metadata.update(KERNEL_METADATA)
    metadata.update(GPU_METADATA if needs_gpu(nb) else CPU_METADATA)
    nb["metadata"] = metadata
    nb["nbformat"], nb["nbformat_minor"] = 4, 5
    return nb


def dumps(nb: dict) -> str:
    """The notebook as JupyterLab saves it (jupyter_server writes with nbformat)."""
    return nbformat.writes(nbformat.from_dict(nb), version=4) + "\n"


def needs_gpu(nb: dict) -> bool:
    """Whether the notebook's FULL mode needs a GPU: its ``preamble(needs_gpu=True)``."""
    code = "".join(source_text(c) for c in nb["cells"] if c["cell_type"] == "code")
    return bool(re.search(r"preamble\([^)]*needs_gpu=True", code))


def readme_table(paths: list[Path]) -> str:
    rows = ["| # | notebook | GPU (FULL mode) | open |", "|---|---|---|---|"]
    for path in paths:
        nb = json.loads(path.read_text())
        gpu = "a free T4" if needs_gpu(nb) else "none: runs on a CPU"
        link = f"[{title(nb).split(' · ', 1)[-1]}](notebooks/{path.name})"
        rows.append(f"| {path.name[:2]} | {link} | {gpu} | {badge(path)} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report, change nothing")
    args = parser.parse_args()
    problem = check_tag(tomllib.loads((ROOT / "colab" / "settings.toml").read_text()).get("tag"))
    if problem:
        print(problem)
        return 1
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    stale = []
    for path in paths:
        text = path.read_text()
        new = dumps(synced(json.loads(text), path))
        if new != text:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    readme = ROOT / "README.md"
    text = readme.read_text()
    before, rest = text.split(TABLE_START, 1)
    _, after = rest.split(TABLE_END, 1)
    new = f"{before}{TABLE_START}\n{readme_table(paths)}\n{TABLE_END}{after}"
    if new != text:
        stale.append("README.md")
        if not args.check:
            readme.write_text(new)
    if args.check and stale:
        print("out of date (run `python colab/sync.py`):", *stale, sep="\n  ")
        return 1
    print("up to date" if not stale else "wrote:\n  " + "\n  ".join(stale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
