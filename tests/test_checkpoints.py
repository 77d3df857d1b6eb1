"""helpers.checkpoints: outputs on Drive (opt-in) and resuming a tune after a disconnect."""

import sys
import types
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer

from helpers.architectures import MISTRAL_7B_INSTRUCT
from helpers.checkpoints import COURSE_FOLDER, output_dir, resume_point
from helpers.data import corpus_texts
from helpers.mode import CourseSetupError, seed_everything
from helpers.standins import build_standin

EPOCHS, STEPS = 2, 4  # 8 texts, 4 per batch: 2 optimizer steps per epoch


class Disconnect(Exception):
    """Stands for the runtime going away in the middle of a tune."""


class DisconnectAfter(TrainerCallback):
    """Raise :class:`Disconnect` once the checkpoint of optimizer step ``step`` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Disconnect


class StepsTrained(TrainerCallback):
    """Record the optimizer steps this call of ``train()`` actually ran."""

    def __init__(self):
        self.steps: list[int] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(state.global_step)


def tune(checkpoints, callbacks=(), resume=False) -> SFTTrainer:
    """A SMALL LoRA tune of the Mistral stand-in that checkpoints after every step.

    Its length is set in epochs, as in the notebooks (transformers 5.23 resumed at
    ``max_steps`` runs one step more).
    """
    path = build_standin(MISTRAL_7B_INSTRUCT)
    seed_everything(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    texts = [t for t in corpus_texts(include_datasets=False) if t.strip()][:8]
    args = SFTConfig(
        output_dir=str(checkpoints),
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        max_length=64,
        logging_steps=1,
        save_strategy="steps",
        save_steps=1,
        report_to="none",
        seed=0,
        use_cpu=True,
    )
    trainer = SFTTrainer(model=model, args=args, callbacks=list(callbacks),
                         train_dataset=Dataset.from_dict({"text": texts}),
                         processing_class=AutoTokenizer.from_pretrained(path))
    trainer.train(resume_from_checkpoint=resume_point(checkpoints) if resume else None)
    return trainer


def losses(trainer: SFTTrainer) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}


def test_an_interrupted_tune_resumes_from_its_last_checkpoint(tmp_path):
    reference = losses(tune(tmp_path / "uninterrupted"))
    assert sorted(reference) == list(range(1, STEPS + 1))

    checkpoints = tmp_path / "interrupted"
    with pytest.raises(Disconnect):
        tune(checkpoints, [DisconnectAfter(3)])
    assert resume_point(checkpoints) == str(checkpoints / "checkpoint-3")

    trained = StepsTrained()
    resumed = tune(checkpoints, [trained], resume=True)
    assert trained.steps == [4]  # steps 1-3 are not repeated
    # ... and step 4 starts from step 3's weights, optimizer, schedule, random state and place
    # in the second epoch's shuffled data: the same loss as the run never interrupted
    assert losses(resumed)[4] == pytest.approx(reference[4], rel=1e-4)

    rerun = StepsTrained()  # running the notebook again once the tune is done trains nothing
    tune(checkpoints, [rerun], resume=True)
    assert rerun.steps == []


def test_no_checkpoint_means_start_from_step_0(tmp_path, capsys):
    assert resume_point(tmp_path / "missing") is None
    (tmp_path / "checkpoint-notanumber").mkdir()
    assert resume_point(tmp_path) is None
    assert "starts from step 0" in capsys.readouterr().out


def test_a_checkpoint_cut_short_is_skipped(tmp_path):
    for step in (1, 2):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-1" / "trainer_state.json").write_text('{"global_step": 1}')
    # checkpoint-2 has no trainer_state.json: the save (which writes it last) never finished
    assert resume_point(tmp_path) == str(tmp_path / "checkpoint-1")


def test_local_output_dir_is_created(tmp_path):
    folder = output_dir("04_x", local_root=tmp_path / "outputs")
    assert folder == tmp_path / "outputs" / "04_x" and folder.is_dir()


def test_drive_off_colab_stays_local(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "google.colab", None)  # importing it fails, as off Colab
    folder = output_dir("04_x", drive=True, local_root=tmp_path, mount=tmp_path / "drive")
    assert folder == tmp_path / "04_x"
    assert "not on Colab" in capsys.readouterr().out


def fake_colab(monkeypatch, mount_creates_drive: bool) -> list[str]:
    """Install a fake ``google.colab`` whose ``drive.mount`` records its calls."""
    mounted: list[str] = []

    def mount(path: str) -> None:
        mounted.append(path)
        if mount_creates_drive:
            (Path(path) / "MyDrive").mkdir(parents=True)

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)
    google = types.ModuleType("google")
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    return mounted


def test_drive_on_colab_mounts_once_and_writes_to_the_course_folder(tmp_path, monkeypatch):
    mounted = fake_colab(monkeypatch, mount_creates_drive=True)
    mount = tmp_path / "drive"
    folder = output_dir("05_x", drive=True, mount=mount)
    assert folder == mount / "MyDrive" / COURSE_FOLDER / "outputs" / "05_x" and folder.is_dir()
    assert output_dir("05_x", drive=True, mount=mount) == folder
    assert mounted == [str(mount)]  # the second call finds Drive mounted already


def test_drive_that_does_not_mount_says_what_to_do(tmp_path, monkeypatch):
    fake_colab(monkeypatch, mount_creates_drive=False)
    with pytest.raises(CourseSetupError, match="save_to_drive"):
        output_dir("05_x", drive=True, mount=tmp_path / "drive")
