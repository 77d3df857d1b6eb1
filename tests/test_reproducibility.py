"""Reference losses: recorded once, compared on every SMALL run, refreshed on purpose."""

import pytest

from helpers import reproducibility as repro

HISTORY = [{"loss": 5.123456789, "step": 1}, {"eval_loss": 4.0}, {"loss": 4.5, "step": 2}]


def test_first_losses_skips_entries_without_a_training_loss():
    assert repro.first_losses(HISTORY) == [5.123457, 4.5]


def test_a_recorded_run_passes_and_a_changed_one_fails(tmp_path, monkeypatch):
    path = tmp_path / "reference.json"
    monkeypatch.setenv(repro.REFRESH_VARIABLE, "1")
    assert "recorded" in repro.check_reference_losses("04", HISTORY, "small", path)
    monkeypatch.delenv(repro.REFRESH_VARIABLE)
    assert "reproducible" in repro.check_reference_losses("04", HISTORY, "small", path)
    nudged = [{"loss": 5.123456789 + 5e-5}, {"loss": 4.5}]
    assert "reproducible" in repro.check_reference_losses("04", nudged, "small", path)
    changed = [{"loss": 5.1237}, {"loss": 4.5}]
    with pytest.raises(AssertionError, match=repro.REFRESH_VARIABLE):
        repro.check_reference_losses("04", changed, "small", path)


def test_a_notebook_without_a_reference_says_how_to_record_one(tmp_path):
    with pytest.raises(AssertionError, match="No reference losses for 05"):
        repro.check_reference_losses("05", HISTORY, "small", tmp_path / "none.json")


def test_full_runs_are_not_compared(tmp_path):
    note = repro.check_reference_losses("04", HISTORY, "full", tmp_path / "none.json")
    assert "SMALL mode only" in note


def test_recording_keeps_the_other_notebooks(tmp_path):
    path = tmp_path / "reference.json"
    repro.record_losses("05", [1.0], path)
    repro.record_losses("04", [2.0], path)
    assert repro.load_references(path) == {"04": [2.0], "05": [1.0]}
