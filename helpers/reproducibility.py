"""Reference losses: the same SMALL tune gives the same logged losses, run after run.

Each QLoRA notebook ends its training cell with :func:`check_reference_losses`. In SMALL
mode, on a CPU with fixed seeds, the first logged losses are reproducible to 1e-4, so they
are kept in ``tests/reference_losses.json`` (as torchtune keeps its recipes' losses) and
any change fails the run: a change of data, settings, stand-in or library shows up at once.
After a deliberate change, record new values with the command in :data:`REFRESH_COMMAND`.
GPU runs are not bit-reproducible across cards and kernels, so FULL runs are not compared.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "tests" / "reference_losses.json"
REFRESH_VARIABLE = "COURSE_REFRESH_REFERENCE_LOSSES"
REFRESH_COMMAND = f"{REFRESH_VARIABLE}=1 python3 course.py test notebooks/"
TOLERANCE = 1e-4


def first_losses(log_history: list[dict], count: int = 5) -> list[float]:
    """The first ``count`` training losses in a trainer's ``state.log_history``."""
    losses = [round(float(entry["loss"]), 6) for entry in log_history if "loss" in entry]
    return losses[:count]


def load_references(path: Path = REFERENCE_FILE) -> dict[str, list[float]]:
    """The recorded reference losses, by notebook name (empty if none are recorded)."""
    return json.loads(path.read_text()) if path.exists() else {}


def record_losses(name: str, losses: list[float], path: Path = REFERENCE_FILE) -> None:
    """Write ``losses`` as the reference of ``name``, keeping the other notebooks' values."""
    references = load_references(path)
    references[name] = losses
    path.write_text(json.dumps(dict(sorted(references.items())), indent=2) + "\n")


def check_reference_losses(
    name: str, log_history: list[dict], mode: str, path: Path = REFERENCE_FILE
) -> str:
    """Compare a SMALL run's first logged losses with the recorded ones; return a note.

    Raises:
        AssertionError: in SMALL mode, when a loss differs from its reference by more than
            :data:`TOLERANCE`, or when no reference is recorded; the message says how to
            record new values after a deliberate change.
    """
    losses = first_losses(log_history)
    if mode != "small":
        return "reference losses: compared in SMALL mode only (GPU runs are not bit-exact)"
    if os.environ.get(REFRESH_VARIABLE) == "1":
        record_losses(name, losses, path)
        return f"reference losses of {name} recorded: {losses}"
    expected = load_references(path).get(name)
    if expected is None:
        raise AssertionError(f"No reference losses for {name}; record them with {REFRESH_COMMAND}")
    same = len(expected) == len(losses) and all(
        math.isclose(a, b, rel_tol=0, abs_tol=TOLERANCE)
        for a, b in zip(expected, losses, strict=True)
    )
    if not same:
        raise AssertionError(
            f"{name}: the first logged losses changed.\n  now:      {losses}\n"
            f"  recorded: {expected}\nIf the change is deliberate, record the new values with "
            f"{REFRESH_COMMAND}"
        )
    return f"reproducible: the first {len(losses)} losses equal the recorded ones (to {TOLERANCE})"
