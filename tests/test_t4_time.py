"""The T4 wall-time predictor: calibrated on published runs, fed by the notebooks' own plans."""

import json
import shutil

import pytest

from helpers.architectures import PHI_1_5, REAL_CONFIGS, count_parameters, meta_model
from helpers.rehearsal import notebook_path
from helpers.t4_time import (
    CALIBRATION_OF,
    CALIBRATIONS,
    effective_flops,
    matmul_parameters,
    predict_minutes,
    readme_table,
    training_flops_per_token,
)


def test_flops_per_token_by_hand_for_phi_1_5():
    total, _ = count_parameters(meta_model(PHI_1_5))
    config = REAL_CONFIGS[PHI_1_5]
    n = total - config["vocab_size"] * config["hidden_size"]  # the input embedding is a lookup
    assert matmul_parameters(PHI_1_5) == n
    assert training_flops_per_token(PHI_1_5, 1024) == 6 * n + 8 * 24 * 1024 * 2048


@pytest.mark.parametrize("name", sorted(CALIBRATIONS))
def test_a_calibration_run_predicts_its_own_reported_time(name):
    run = CALIBRATIONS[name]
    flops = run["rows"] * run["tokens_per_row"] * training_flops_per_token(
        run["model_id"], run["tokens_per_row"]
    )
    assert flops / effective_flops(name) / 60 == pytest.approx(run["minutes"])
    # a T4 peaks at 65 TFLOP/s in fp16 (datasheet): a real run reaches a fraction of it
    assert 0.5e12 < effective_flops(name) < 65e12
    assert run["model_id"] in CALIBRATION_OF


@pytest.mark.parametrize("notebook", ["04", "05", "06"])
def test_each_prediction_adds_up_from_the_notebooks_plan(notebook):
    p = predict_minutes(notebook)
    parts = p["train"] + p["load"] + p["generate"] + p["evaluate"]
    assert p["total"] == pytest.approx(parts, abs=0.15)
    assert p["train"] > 0 and p["load"] > 0 and p["generate"] > 0
    assert p["training_tokens"] == p["training_rows"] * p["tokens_per_row"]
    assert CALIBRATION_OF[p["model_id"]] == p["calibration"]


def test_the_prediction_follows_the_notebook(tmp_path):
    source = notebook_path("06")
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    nb = json.loads(copy.read_text())
    for cell in nb["cells"]:
        text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        cell["source"] = text.replace('"max_steps": 100,', '"max_steps": 200,', 1)
    copy.write_text(json.dumps(nb))
    before, after = predict_minutes("06"), predict_minutes("06", notebooks=tmp_path)
    assert after["training_steps"] == 2 * before["training_steps"]
    assert after["train"] == pytest.approx(2 * before["train"], abs=0.1)


def test_the_readme_table_has_a_row_per_notebook_and_its_sources():
    table = readme_table()
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:5]] == ["04", "05", "06"]
    assert "ShawhinT/YouTube-Blog" in table and "400 steps" in table
