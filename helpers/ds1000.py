"""DS-1000-style problems: clean a completion, build the test program, score it by running it.

DS-1000 (Lai et al., 2023, https://arxiv.org/abs/2211.11501) has 1000 data-science problems.
Each is a dict with a ``prompt`` (the question and a code stub ending where the answer
goes), a ``reference_code`` (the answer), a ``code_context`` (Python that defines
``test_execution(solution)`` and sometimes ``test_string(solution)``) and ``metadata``
(``library``, ``problem_id``, ``perturbation_type``, ``perturbation_origin_id``, ...).
A completion is scored the way the benchmark's own harness does it: cut what follows the
answer, append ``test_execution(code)`` to the context, run the program; it passes if it
runs to the end. Here every test runs in :mod:`helpers.sandbox`, with DS-1000's own
library versions (:mod:`helpers.ds1000_env`), and the verdict is decided by the sandbox's
judge, outside the answer's process (Matplotlib problems excepted: their tests read the
figure the answer drew, so they run in the answer's process; each result says where it was
checked, ``checked_in``).

The official harness (xlang-ai/DS-1000 on GitHub): ``test_ds1000.py`` defines
``postprocess`` (cut at ``</code>``, drop ```` ```python ````, cut at ```` ``` ````, cut at
``"\nEND SOLUTION"``, drop ``<code>``) and builds each test program as ``code_context``, then
``code = repr(answer)``, ``test_execution(code)`` and ``test_string(code)`` when the context
mentions it; ``execution.py`` (from openai/human-eval) runs it in a child process with a
timeout, and it passes if it runs to its end. Nothing restores an answer's indentation.

``perturbation_origin_id`` counts within a library (it is the ``library_problem_id`` of
the original problem), so a group of variants is identified by ``(library, origin id)``.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import random
import re
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from helpers.data import data_path, read_jsonl
from helpers.ds1000_env import ensure_env, missing_in
from helpers.sandbox import run_many

# DS-1000's library names and the module each needs.
LIBRARY_MODULES: dict[str, str] = {
    "Numpy": "numpy",
    "Pandas": "pandas",
    "Scipy": "scipy",
    "Sklearn": "sklearn",
    "Matplotlib": "matplotlib",
    "Pytorch": "torch",
    "Tensorflow": "tensorflow",
}
PERTURBATION_TYPES = ("Origin", "Surface", "Semantic", "Difficult-Rewrite")

# Where generation stops: the same rules as :func:`postprocess` (``</code>``; "END SOLUTION"
# only at the start of a line, so DS-1000's own ``    ### END SOLUTION`` comment inside a
# function body does not stop it), plus ``# SOLUTION END``, which closes the answer to a
# ``# SOLUTION START`` prompt (Matplotlib). The official postprocess does not cut at that
# one: if it is generated it stays in the answer, as a comment.
STOP_MARKERS = ("</code>", "\nEND SOLUTION", "# SOLUTION END")

# Problems that need the network, which the sandbox does not have: reported as skipped.
NEEDS_NETWORK = {
    r"\b(sns|seaborn)\.load_dataset\(": "seaborn.load_dataset downloads its data",
    r"\bfetch_[a-z0-9_]+\(": "scikit-learn's fetch_* downloads its data",
}


def load_problems(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The course's DS-1000-style problems (``data/ds1000_style/problems.jsonl`` by default)."""
    return read_jsonl(path or data_path("ds1000_style", "problems.jsonl"))


def postprocess(completion: str) -> str:
    """Keep only the code of a completion, exactly as DS-1000's official ``postprocess``.

    In order: cut at the first ``</code>``; remove ```` ```python ````; cut at the first
    ```` ``` ````; cut at the first "END SOLUTION" that starts a line (``"\nEND SOLUTION"``,
    so DS-1000's ``    ### END SOLUTION`` comment before a function's ``return`` stays);
    remove ``<code>`` (xlang-ai/DS-1000, ``test_ds1000.py``).
    """
    code = completion.split("</code>")[0]
    code = code.replace("```python", "")
    code = code.split("```")[0]
    code = code.split("\nEND SOLUTION")[0]
    return code.replace("<code>", "")


def build_program(problem: dict[str, Any], solution: str) -> str:
    """The program that tests ``solution``: the context, then ``test_execution`` on it.

    ``test_string`` (a check of the code's text, e.g. "no for loop") is called too when
    the context defines it. This is the layout of DS-1000's own evaluation script.
    """
    context = problem["code_context"]
    return (
        context
        + "\n"
        + f"code = {solution!r}\n"
        + "test_execution(code)\n"
        + ("test_string(code)\n" if "test_string(" in context else "\n")
    )


def _imports(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def required_modules(problem: dict[str, Any]) -> list[str]:
    """The third-party modules a problem's test needs (its library's and what it imports).

    Imports are read from the context and from the code strings inside it (the
    ``exec_context`` template with its ``[insert]`` placeholder); standard-library
    modules are left out.
    """
    library = problem["metadata"]["library"]
    names = {LIBRARY_MODULES.get(library, library.lower())}
    try:
        tree = ast.parse(problem["code_context"])
    except SyntaxError:
        tree = None
    if tree is not None:
        names |= _imports(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                # An answer at the top level, or the indented body of a function.
                for filler in ("pass", "    pass"):
                    try:
                        names |= _imports(ast.parse(node.value.replace("[insert]", filler)))
                        break
                    except (SyntaxError, ValueError):
                        pass
    return sorted(n for n in names if n not in sys.stdlib_module_names)


def missing_modules(problem: dict[str, Any], python: str | None = None) -> list[str]:
    """The modules of :func:`required_modules` that ``python`` cannot import.

    ``python=None`` asks this interpreter (the course's own).
    """
    names = required_modules(problem)
    if python is None:
        return [name for name in names if importlib.util.find_spec(name) is None]
    return missing_in(python, names)


def network_reason(problem: dict[str, Any]) -> str | None:
    """Why a problem needs the network (which the sandbox does not give it), or ``None``."""
    text = problem["code_context"] + "\n" + problem["prompt"] + "\n" + problem["reference_code"]
    for pattern, reason in NEEDS_NETWORK.items():
        if re.search(pattern, text):
            return reason
    return None


def checked_in_answer_process(problem: dict[str, Any]) -> bool:
    """Whether a problem's test must run in the answer's own process.

    Matplotlib tests inspect the figure the answer drew (``plt.gca()``...), state that lives
    only in the answer's process; for them the verdict is the answer process's word, and
    the sandbox's other guarantees (nothing outlives the run, nothing outside changes, no
    secrets, no network) still hold. Every other test is judged outside it.
    """
    meta = problem.get("metadata", {})
    return meta.get("library") == "Matplotlib" or "matplotlib" in problem["code_context"]


def group_key(problem: dict[str, Any]) -> tuple[str, int]:
    """The perturbation group of a problem: ``(library, perturbation_origin_id)``."""
    meta = problem["metadata"]
    return meta["library"], int(meta["perturbation_origin_id"])


def split_by_origin(
    problems: Sequence[dict[str, Any]], eval_fraction: float = 0.2, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split into (train, held-out) so that no perturbation group crosses the split.

    Within each library the groups are shuffled with ``seed`` and ``eval_fraction`` of
    them (rounded, at least one when a library has two groups or more) go to the held-out
    side, with all their variants. A library with a single group stays in training.
    The order of the problems is kept on both sides.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be between 0 and 1, not {eval_fraction}")
    groups_by_library: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for problem in problems:
        key = group_key(problem)
        if key not in groups_by_library[key[0]]:
            groups_by_library[key[0]].append(key)
    rng = random.Random(seed)
    held_out: set[tuple[str, int]] = set()
    for library in sorted(groups_by_library):
        groups = sorted(groups_by_library[library], key=lambda k: k[1])
        rng.shuffle(groups)
        n = len(groups)
        k = min(max(round(eval_fraction * n), 1), n - 1) if n > 1 else 0
        held_out |= set(groups[:k])
    train = [p for p in problems if group_key(p) not in held_out]
    evaluation = [p for p in problems if group_key(p) in held_out]
    return train, evaluation


def end_marker(problem: dict[str, Any]) -> str:
    """What closes an answer to this prompt: ``# SOLUTION END`` or ``</code>``."""
    return (
        "# SOLUTION END" if problem["prompt"].rstrip().endswith("# SOLUTION START") else "</code>"
    )


def training_pair(problem: dict[str, Any]) -> dict[str, str]:
    """A prompt-completion example: the prompt as is, the reference answer and its end marker.

    Trained on such pairs, a model learns to write the answer and then close it, which
    is where :func:`postprocess` cuts.
    """
    answer = problem["reference_code"].strip("\n")
    return {"prompt": problem["prompt"], "completion": f"{answer}\n{end_marker(problem)}\n"}


def _meta(problem: dict[str, Any]) -> dict[str, Any]:
    meta = problem["metadata"]
    return {
        "problem_id": meta["problem_id"],
        "library": meta["library"],
        "perturbation_type": meta["perturbation_type"],
        "perturbation_origin_id": meta["perturbation_origin_id"],
    }


def evaluate(
    problems: Sequence[dict[str, Any]],
    completions: Sequence[str],
    *,
    clean: bool = True,
    workers: int = 2,
    progress: bool = True,
    desc: str = "tests",
    timeout: float = 60.0,
    memory_mb: int = 4096,
    python: str | None = None,
    **limits: Any,
) -> list[dict[str, Any]]:
    """Run every problem's tests on its completion, each in its own sandboxed run.

    Args:
        problems: DS-1000-style problems.
        completions: one completion per problem (the raw text a model wrote).
        clean: pass each completion through :func:`postprocess` first.
        workers: how many runs at the same time.
        progress: show a progress bar.
        desc: the progress bar's label.
        timeout: wall-clock seconds per problem (DS-1000's own script allows 30-120).
        memory_mb: memory limit per problem (imports need a few hundred MB).
        python: the interpreter that runs the tests; default: DS-1000's
            (:func:`helpers.ds1000_env.ensure_env`, created on first use; if it cannot be,
            this Python, with a warning).
        **limits: more limits for :func:`helpers.sandbox.run_judged`.

    Returns:
        One dict per problem, in order: its metadata, ``verdict`` (``pass``, ``fail``,
        ``error``, ``timeout``, or ``skipped`` when a module it needs is not installed in
        that interpreter or it needs the network), ``detail``, ``solution``, ``seconds``, the
        sandbox's ``pid``, ``stdout``, ``stderr``, ``checked_in`` (``judge`` or ``answer``:
        see :func:`checked_in_answer_process`), ``isolation`` (the level in effect) and
        ``interpreter`` (the Python that ran the test).
    """
    if len(problems) != len(completions):
        raise ValueError(f"{len(problems)} problems but {len(completions)} completions")
    if python is None:
        try:
            python = str(ensure_env())
        except Exception as exc:  # offline, say: run with this Python's libraries, and say so
            warnings.warn(
                f"DS-1000's interpreter could not be created ({exc}); the tests run with this "
                "Python's library versions instead, under which some correct answers fail",
                stacklevel=2,
            )
            python = sys.executable
    python = str(python)
    results: list[dict[str, Any]] = []
    to_run: list[int] = []
    for problem, completion in zip(problems, completions, strict=True):
        solution = postprocess(completion) if clean else completion
        result = {
            **_meta(problem),
            "solution": solution,
            "seconds": 0.0,
            "pid": None,
            "stdout": "",
            "stderr": "",
            "checked_in": None,
            "isolation": None,
            "interpreter": python,
        }
        missing = missing_modules(problem, python)
        network = network_reason(problem)
        if missing:
            result.update(verdict="skipped", detail=f"not installed: {', '.join(missing)}")
        elif network:
            result.update(verdict="skipped", detail=f"needs the network: {network}")
        else:
            to_run.append(len(results))
        results.append(result)
    tasks: list[Any] = []
    for i in to_run:
        problem = problems[i]
        if checked_in_answer_process(problem):
            tasks.append(build_program(problem, results[i]["solution"]))
        else:
            tasks.append(
                {
                    "context": problem["code_context"],
                    "solution": results[i]["solution"],
                    "preload": required_modules(problem),
                }
            )
    runs = run_many(
        tasks,
        workers=workers,
        progress=progress,
        desc=desc,
        timeout=timeout,
        memory_mb=memory_mb,
        python=python,
        **limits,
    )
    for index, run in zip(to_run, runs, strict=True):
        results[index].update(
            verdict=run["verdict"],
            detail=run["detail"],
            seconds=run["seconds"],
            pid=run["pid"],
            stdout=run["stdout"],
            stderr=run["stderr"],
            checked_in=run["checked_in"],
            isolation=run["isolation"],
        )
    return results


def failed_references(results: Sequence[dict[str, Any]]):
    """The problems whose *reference* answer did not pass, with the reason (a pandas table).

    ``results`` are :func:`evaluate`'s results for the reference answers. Every one that is
    not ``pass`` is listed (skipped ones too, with why), never silently dropped.
    """
    import pandas as pd

    rows = [
        {
            "problem_id": r["problem_id"],
            "library": r["library"],
            "verdict": r["verdict"],
            "reason": r["detail"],
        }
        for r in results
        if r["verdict"] != "pass"
    ]
    return pd.DataFrame(rows, columns=["problem_id", "library", "verdict", "reason"])


def pass_at_1(results: Iterable[dict[str, Any]]) -> float:
    """The share of problems that passed, skipped ones left out (``nan`` if none ran).

    With one greedy completion per problem this is pass@1.
    """
    ran = [r for r in results if r["verdict"] != "skipped"]
    return sum(r["verdict"] == "pass" for r in ran) / len(ran) if ran else math.nan


def pass_at_1_by(results: Iterable[dict[str, Any]], key: str) -> dict[str, float]:
    """pass@1 for each value of ``key`` (``"library"`` or ``"perturbation_type"``).

    Values whose problems were all skipped are left out.
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        if result["verdict"] != "skipped":
            groups[result[key]].append(result)
    return {value: pass_at_1(rows) for value, rows in sorted(groups.items())}


def score_table(results: Sequence[dict[str, Any]], key: str):
    """A pandas table per value of ``key``: problems, ran, passed, skipped, each verdict, pass@1."""
    import pandas as pd

    frame = pd.DataFrame([{key: r[key], "verdict": r["verdict"]} for r in results])
    table = pd.crosstab(frame[key], frame["verdict"])
    for verdict in ("pass", "fail", "error", "timeout", "skipped"):
        if verdict not in table:
            table[verdict] = 0
    table = table[["pass", "fail", "error", "timeout", "skipped"]]
    table.insert(0, "problems", table.sum(axis=1))
    ran = table["problems"] - table["skipped"]
    table["pass@1"] = (table["pass"] / ran.where(ran > 0)).round(3)
    table.columns.name = None
    return table
