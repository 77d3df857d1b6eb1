"""Read a notebook's own code, so that checks and tools use exactly what a learner runs.

The static tests, the API-drift test and ``course.py rehearse`` read the notebooks through
these functions: the notebook is the one source of truth for its settings and its calls.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from helpers.mode import pick

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"  # in the course checkout


def code_cells(notebook: str, solutions: bool = True) -> list[str]:
    """The sources of the notebook's code cells, less the shared setup cell (and less the
    exercise solutions, ``#@title Solution ...`` cells, when ``solutions`` is False)."""
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    sources = [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in cells
        if c["cell_type"] == "code"
    ]
    return [
        s for s in sources
        if not s.startswith("# Setup.") and (solutions or not s.startswith("#@title Solution"))
    ]


def cell_with(notebook: str, marker: str) -> str:
    """The one code cell that contains ``marker``."""
    matches = [cell for cell in code_cells(notebook) if marker in cell]
    assert len(matches) == 1, f"{len(matches)} code cells of {notebook} contain {marker!r}"
    return matches[0]


def the_call(notebook: str, name: str) -> str:
    """The source of the one call of ``name(...)`` in the lesson's code (solutions aside)."""
    found = []
    for source in code_cells(notebook, solutions=False):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name:
                found.append(ast.get_source_segment(source, node))
    assert len(found) == 1, f"expected one call of {name} in {notebook}, found {len(found)}"
    return found[0]


def config(notebook: str, mode: str) -> dict:
    """The notebook's settings for ``mode``: its CONFIG cell, run as in that mode."""
    namespace: dict = {"MODE": mode, "pick": pick}  # as the cells before it define them
    exec(compile(cell_with(notebook, "FULL = {"), "CONFIG cell", "exec"), namespace)
    assert namespace["CONFIG"] == pick(mode, namespace["FULL"], namespace["SMALL"])
    return namespace["CONFIG"]


def run_statements(notebook: str, marker: str, names: set[str], namespace: dict) -> dict:
    """Run the imports of the cell containing ``marker`` and its assignments to ``names``."""
    tree = ast.parse(cell_with(notebook, marker))
    keep = [
        node
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        or (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id in names for t in node.targets)
        )
    ]
    exec(compile(ast.Module(body=keep, type_ignores=[]), notebook, "exec"), namespace)
    missing = names - set(namespace)
    assert not missing, f"the cell does not assign {missing}"
    return namespace
