"""Where a tune writes, and where it picks up again after a disconnect.

Free Colab runtimes disconnect (idle timeouts, usage limits), and everything on the
runtime's disk goes with them. With ``drive=True`` a tune's outputs go to a course folder
on the learner's Google Drive instead, and re-running the notebook resumes training from
the last checkpoint there instead of starting over.

How a notebook uses it (one CONFIG key, the same in FULL and SMALL, and two calls)::

    FULL = {..., "save_to_drive": False}   # True on Colab: outputs survive a disconnect
    SMALL = {..., "save_to_drive": False}

    from helpers.checkpoints import output_dir, resume_point

    OUTPUT_DIR = output_dir("04_qlora_youtube", drive=CONFIG["save_to_drive"])
    args = SFTConfig(output_dir=str(OUTPUT_DIR / "checkpoints"), save_strategy="epoch", ...)
    trainer = SFTTrainer(model=model, args=args, ...)
    result = trainer.train(resume_from_checkpoint=resume_point(OUTPUT_DIR / "checkpoints"))

``resume_point`` returns the newest ``checkpoint-N`` folder (``None`` when there is none,
so a first run starts from step 0); ``Trainer.train`` then reloads the adapter weights,
the optimizer, the learning-rate schedule, the random-number states and the position in
the data from it and trains the remaining steps only. Re-running after a finished tune
trains nothing and ends with the same adapter (with the tune's length in
``num_train_epochs``, as in the notebooks; transformers 5.23 resumed at ``max_steps``
runs one step more). Keep ``save_strategy`` on: a checkpoint is what there is to resume.
"""

from __future__ import annotations

import re
from pathlib import Path

from helpers.mode import CourseSetupError

DRIVE_MOUNT = Path("/content/drive")  # where Colab mounts the learner's Drive
COURSE_FOLDER = "llm-finetuning-course"  # the course's folder in "My Drive"


def on_colab() -> bool:
    """Whether this runs in a Colab runtime (its ``google.colab`` package is importable)."""
    try:
        import google.colab  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def output_dir(
    name: str, drive: bool = False, local_root: str | Path = "outputs", mount: Path = DRIVE_MOUNT
) -> Path:
    """The folder a notebook's tune writes to (created), on Drive when ``drive`` is true.

    Args:
        name: the notebook's folder name, e.g. ``"04_qlora_youtube"``.
        drive: write to ``My Drive/llm-finetuning-course/outputs/<name>`` (mounting Drive
            first, which asks the learner to allow access). Only on Colab; elsewhere the
            local disk keeps the checkpoints anyway, so this says so and writes locally.
        local_root: the local folder used without Drive (relative to the notebook's folder).
        mount: where Drive is mounted (Colab's ``/content/drive``; a test passes its own).
    """
    if drive and not on_colab():
        print("save_to_drive: not on Colab; checkpoints stay on this machine's disk, "
              "which a disconnect does not wipe")
        drive = False
    if drive:
        if not (mount / "MyDrive").is_dir():
            from google.colab import drive as colab_drive  # type: ignore[import-not-found]

            colab_drive.mount(str(mount))
        if not (mount / "MyDrive").is_dir():
            raise CourseSetupError(
                f"Google Drive is not mounted at {mount}. Run this cell again and allow "
                "access to Drive, or set save_to_drive to False in the CONFIG cell."
            )
        folder = mount / "MyDrive" / COURSE_FOLDER / "outputs" / name
    else:
        folder = Path(local_root) / name
    folder.mkdir(parents=True, exist_ok=True)
    print(f"outputs and checkpoints go to {folder}")
    return folder


def resume_point(checkpoint_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder in ``checkpoint_dir`` to resume from, or ``None``.

    Pass the result to ``trainer.train(resume_from_checkpoint=...)``. A checkpoint that a
    disconnect cut short (no ``trainer_state.json`` yet) is skipped for the one before it.
    Prints what will happen, so the learner sees that a re-run continues rather than
    restarts.
    """
    folder = Path(checkpoint_dir)
    steps = {
        int(path.name.split("-")[1]): path
        for path in (folder.glob("checkpoint-*") if folder.is_dir() else [])
        if re.fullmatch(r"checkpoint-\d+", path.name)
    }
    for step in sorted(steps, reverse=True):
        if (steps[step] / "trainer_state.json").is_file():
            print(f"resuming from {steps[step]} (step {step}): the steps before it are not "
                  "repeated")
            return str(steps[step])
        print(f"skipping {steps[step]}: it was cut short before it was complete")
    print(f"no checkpoint in {folder}: training starts from step 0")
    return None
