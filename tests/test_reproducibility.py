"""Reference losses: recorded per machine, compared on every SMALL run, refreshed on purpose."""

import json

import pytest

from helpers import reproducibility as repro

HISTORY = [{"loss": 5.123456789, "step": 1}, {"eval_loss": 4.0}, {"loss": 4.5, "step": 2}]
HERE = {"cpu": "the recording CPU", "threads": "2"}
ELSEWHERE = {"cpu": "another CPU", "threads": "8"}


def test_first_losses_skips_entries_without_a_training_loss():
    assert repro.first_losses(HISTORY) == [5.123457, 4.5]


def test_a_recorded_run_passes_and_a_changed_one_fails(tmp_path, monkeypatch):
    path = tmp_path / "reference.json"
    monkeypatch.setenv(repro.REFRESH_VARIABLE, "1")
    assert "recorded" in repro.check_reference_losses("04", HISTORY, "small", path, HERE)
    monkeypatch.delenv(repro.REFRESH_VARIABLE)
    assert "reproducible" in repro.check_reference_losses("04", HISTORY, "small", path, HERE)
    nudged = [{"loss": 5.123456789 + 5e-5}, {"loss": 4.5}]
    assert "reproducible" in repro.check_reference_losses("04", nudged, "small", path, HERE)
    changed = [{"loss": 5.1237}, {"loss": 4.5}]
    with pytest.raises(AssertionError, match=repro.REFRESH_VARIABLE):
        repro.check_reference_losses("04", changed, "small", path, HERE)


def test_another_machine_is_held_to_the_loose_tolerance_and_told_so(tmp_path):
    # the last digits differ between CPUs: 1% off passes with a note there, 10% fails
    path = tmp_path / "reference.json"
    repro.record_losses("04", [5.0, 4.5], path, HERE)
    drifted = [{"loss": 5.05}, {"loss": 4.46}]
    note = repro.check_reference_losses("04", drifted, "small", path, ELSEWHERE)
    assert "other machine" in note and "5%" in note
    with pytest.raises(AssertionError, match="every recorded run"):
        repro.check_reference_losses("04", [{"loss": 5.5}, {"loss": 4.5}], "small", path,
                                     ELSEWHERE)
    # ... while the recording machine still gets the exact check
    with pytest.raises(AssertionError, match="changed"):
        repro.check_reference_losses("04", drifted, "small", path, HERE)


def test_a_notebook_without_a_reference_says_how_to_record_one(tmp_path):
    with pytest.raises(AssertionError, match="No reference losses for 05"):
        repro.check_reference_losses("05", HISTORY, "small", tmp_path / "none.json", HERE)


def test_full_runs_are_not_compared(tmp_path):
    note = repro.check_reference_losses("04", HISTORY, "full", tmp_path / "none.json")
    assert "SMALL mode only" in note


def test_recording_keeps_the_other_notebooks_and_machines(tmp_path):
    path = tmp_path / "reference.json"
    repro.record_losses("05", [1.0], path, HERE)
    repro.record_losses("04", [2.0], path, HERE)
    repro.record_losses("04", [2.1], path, ELSEWHERE)
    here, elsewhere = repro.machine_id(HERE), repro.machine_id(ELSEWHERE)
    assert repro.load_references(path) == {
        "machines": {here: HERE, elsewhere: ELSEWHERE},
        "losses": {"04": {here: [2.0], elsewhere: [2.1]}, "05": {here: [1.0]}},
    }


def test_the_machine_description_names_what_the_digits_depend_on():
    description = repro.machine()
    assert {"arch", "cpu", "torch cpu capability", "threads", "torch"} <= set(description)
    assert repro.machine_id(description) == repro.machine_id(json.loads(json.dumps(description)))


def test_the_committed_references_cover_every_qlora_notebook():
    references = repro.load_references()
    assert set(references["losses"]) == {"04", "05", "06"}
    for by_machine in references["losses"].values():
        assert set(by_machine) <= set(references["machines"])
        assert all(len(losses) == 5 for losses in by_machine.values())
