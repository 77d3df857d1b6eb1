"""Time the course in SMALL mode: every notebook top to bottom, and the stand-in builds.

Speed is measured here, never asserted in a test: a test that checks a wall-clock time
fails on a busy machine for no fault of the code. ``python3 course.py bench`` runs this
module and prints a table; the README's SMALL times come from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def load_note() -> str:
    """Describe how busy the machine is: a benchmark on a loaded machine reads slow."""
    cores = os.cpu_count() or 1
    one, five, _ = os.getloadavg()
    return f"{cores} cores, load average {one:.1f} (1 min) / {five:.1f} (5 min)"


def time_standin_builds() -> dict[str, float]:
    """Seconds to build each stand-in from scratch (tokenizer, weights, pre-training)."""
    from helpers import standins

    seconds = {}
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("COURSE_CACHE")
        os.environ["COURSE_CACHE"] = cache
        try:
            for model_id in sorted(standins.STANDINS):
                start = time.perf_counter()
                standins.build_standin(model_id)
                seconds[model_id] = time.perf_counter() - start
        finally:
            if previous is None:
                os.environ.pop("COURSE_CACHE", None)
            else:
                os.environ["COURSE_CACHE"] = previous
    return seconds


@contextmanager
def outputs_set_aside(folder: Path) -> Iterator[None]:
    """Move ``folder/outputs`` aside while the block runs, then put it back.

    A notebook that finds its own checkpoints there resumes instead of training (05 does,
    on purpose), which would time a re-run, not a first run. What the block writes to
    ``outputs`` is deleted; what was there before is restored.
    """
    outputs = folder / "outputs"
    aside = Path(tempfile.mkdtemp(prefix=".outputs-aside-", dir=folder)) / "outputs"
    if outputs.exists():
        shutil.move(outputs, aside)
    try:
        yield
    finally:
        shutil.rmtree(outputs, ignore_errors=True)
        if aside.exists():
            shutil.move(aside, outputs)
        shutil.rmtree(aside.parent, ignore_errors=True)


def time_notebook(path: Path) -> float:
    """Seconds to run one notebook top to bottom in SMALL mode, as a first run takes."""
    import nbclient
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=None, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    with outputs_set_aside(path.parent):
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start


def table(notebooks: dict[str, float], builds: dict[str, float]) -> str:
    """A Markdown table of the measured times."""
    lines = ["| what | SMALL time on this machine |", "|---|---|"]
    lines += [f"| notebook {name} | {seconds:.0f} s |" for name, seconds in notebooks.items()]
    lines += [f"| stand-in build: {name} | {seconds:.1f} s |" for name, seconds in builds.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and write it to outputs/bench.json."""
    parser = argparse.ArgumentParser(prog="course.py bench", description=__doc__)
    parser.add_argument("notebooks", nargs="*", help="notebook numbers, e.g. 04 05 (all if none)")
    args = parser.parse_args(argv)
    os.environ.setdefault("COURSE_MODE", "small")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        paths = [p for p in paths if p.name[:2] in args.notebooks]
    print(f"Benchmarking on {platform.processor() or platform.machine()}: {load_note()}")
    builds = time_standin_builds()
    times = {}
    for path in paths:
        print(f"  running {path.name} ...", flush=True)
        times[path.name[:2]] = time_notebook(path)
    print(table(times, builds))
    record = {"date": date.today().isoformat(), "machine": load_note(),
              "notebooks_s": times, "standin_builds_s": builds}
    out = ROOT / "outputs" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
