"""Reference losses: the same SMALL tune gives the same logged losses, run after run.

Each QLoRA notebook ends its training cell with :func:`check_reference_losses`. In SMALL
mode, on a CPU with fixed seeds, the first logged losses are reproducible to 1e-4 on one
machine, so they are kept in ``tests/reference_losses.json`` (as torchtune keeps its recipes'
losses) and any change fails the run: a change of data, settings, stand-in or library shows
up at once. After a deliberate change, record new values with :data:`REFRESH_COMMAND`.

The last digits depend on the machine: a CPU with other vector instructions (or another
number of threads) adds the same numbers in another order, and over a stand-in's
pre-training and a few training steps the losses drift apart by up to about a percent. So
each reference is kept per machine (:func:`machine`: CPU, instruction set, threads, torch),
compared to 1e-4 on a machine that recorded it, and within :data:`OTHER_MACHINE_TOLERANCE`
(relative) of the recorded ones elsewhere, with a note that says so. GPU runs are not
bit-reproducible across cards and kernels, so FULL runs are not compared.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from pathlib import Path

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "tests" / "reference_losses.json"
REFRESH_VARIABLE = "COURSE_REFRESH_REFERENCE_LOSSES"
REFRESH_COMMAND = f"{REFRESH_VARIABLE}=1 python3 course.py test notebooks/"
TOLERANCE = 1e-4
OTHER_MACHINE_TOLERANCE = 0.05  # relative, for a machine that recorded no reference


def first_losses(log_history: list[dict], count: int = 5) -> list[float]:
    """The first ``count`` training losses in a trainer's ``state.log_history``."""
    losses = [round(float(entry["loss"]), 6) for entry in log_history if "loss" in entry]
    return losses[:count]


def _cpu() -> dict[str, str]:
    """The CPU's model and the vector instructions that change how sums are computed."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return {"cpu": platform.processor() or "unknown"}
    info = dict(line.split(":", 1) for line in lines if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = sorted(f for f in info.get("flags", "").split() if f.startswith(("avx", "amx", "fma")))
    model = f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, " \
            f"model {info.get('model', '?')})"
    return {"cpu": model, "vector instructions": " ".join(flags)}


def machine() -> dict[str, str]:
    """What the last digits of a CPU run depend on: CPU, torch's kernels, threads, torch."""
    import torch

    return {
        "arch": platform.machine(),
        **_cpu(),
        "torch cpu capability": torch.backends.cpu.get_cpu_capability(),
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
    }


def machine_id(description: dict[str, str]) -> str:
    """A short name for a machine description (its hash)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:10]


def load_references(path: Path = REFERENCE_FILE) -> dict:
    """The recorded file: ``{"machines": {id: description}, "losses": {name: {id: losses}}}``."""
    if not path.exists():
        return {"machines": {}, "losses": {}}
    return json.loads(path.read_text())


def record_losses(
    name: str, losses: list[float], path: Path = REFERENCE_FILE, here: dict | None = None
) -> None:
    """Write ``losses`` as this machine's reference of ``name``, keeping all other values."""
    here = machine() if here is None else here
    references = load_references(path)
    references["machines"][machine_id(here)] = here
    references["losses"].setdefault(name, {})[machine_id(here)] = losses
    references["losses"] = dict(sorted(references["losses"].items()))
    path.write_text(json.dumps(references, indent=2) + "\n")


def check_reference_losses(
    name: str,
    log_history: list[dict],
    mode: str,
    path: Path = REFERENCE_FILE,
    here: dict | None = None,
) -> str:
    """Compare a SMALL run's first logged losses with the recorded ones; return a note.

    ``here`` describes the machine (:func:`machine`, which tests replace).

    Raises:
        AssertionError: in SMALL mode, when a loss differs by more than :data:`TOLERANCE`
            from this machine's reference, or, where this machine recorded none, by more than
            :data:`OTHER_MACHINE_TOLERANCE` (relative) from every recorded one, or when no
            reference is recorded; the message says how to record new values after a
            deliberate change.
    """
    losses = first_losses(log_history)
    if mode != "small":
        return "reference losses: compared in SMALL mode only (GPU runs are not bit-exact)"
    here = machine() if here is None else here
    if os.environ.get(REFRESH_VARIABLE) == "1":
        record_losses(name, losses, path, here)
        return f"reference losses of {name} recorded for this machine: {losses}"
    recorded = load_references(path)["losses"].get(name, {})
    if not recorded:
        raise AssertionError(f"No reference losses for {name}; record them with {REFRESH_COMMAND}")
    expected = recorded.get(machine_id(here))
    if expected is not None:
        if _close(losses, expected, abs_tol=TOLERANCE):
            return (f"reproducible: the first {len(losses)} losses equal the ones recorded on "
                    f"this machine (to {TOLERANCE})")
        raise AssertionError(
            f"{name}: the first logged losses changed.\n  now:      {losses}\n"
            f"  recorded: {expected}\nIf the change is deliberate, record the new values with "
            f"{REFRESH_COMMAND}"
        )
    if any(_close(losses, other, rel_tol=OTHER_MACHINE_TOLERANCE) for other in recorded.values()):
        return (f"the first {len(losses)} losses are within {OTHER_MACHINE_TOLERANCE:.0%} of the "
                f"ones recorded on {len(recorded)} other machine(s); CPUs differ in the last "
                f"digits, so the exact check runs where they were recorded ({REFRESH_COMMAND} "
                "records this machine's)")
    raise AssertionError(
        f"{name}: the first logged losses are more than {OTHER_MACHINE_TOLERANCE:.0%} away from "
        f"every recorded run.\n  now:      {losses}\n  recorded: {list(recorded.values())}\n"
        "More than the differences between CPUs: check the data, settings and library "
        f"versions. If the change is deliberate, record the new values with {REFRESH_COMMAND}"
    )


def _close(losses: list[float], expected: list[float], **tolerance: float) -> bool:
    return len(losses) == len(expected) and all(
        math.isclose(a, b, **tolerance) for a, b in zip(expected, losses, strict=True)
    )
