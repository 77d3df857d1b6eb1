"""The published-measurement table of notebook 01: every row cited, every ratio recomputed."""

from pathlib import Path

import pytest

from helpers.memory import GIB, model_tensors
from helpers.published_memory import (
    BAND,
    DATA,
    architecture,
    compare,
    load_measurements,
    lora_tensor_sizes,
    median_ratio,
    predict,
)

ROWS = load_measurements()
CARD = (Path(DATA).parent / "README.md").read_text()


def test_at_least_six_rows_each_cited_in_the_card():
    assert len(ROWS) >= 6
    assert len({row["id"] for row in ROWS}) == len(ROWS)
    lines = CARD.splitlines()
    for row in ROWS:
        assert row["source"].startswith("https://")
        assert row["source"] in CARD
        (line,) = [ln for ln in lines if ln.startswith(f"| {row['id']} |")]
        assert f"| {row['table_cell']} |" in line
        assert f"| {row['measured_gib']:g}" in line, row["id"]


def test_the_stand_in_architecture_has_qwen_7b_s_tensors():
    row = ROWS[0]
    h, f, layers, v = (
        row[k] for k in ("hidden_size", "intermediate_size", "num_layers", "vocab_size")
    )
    # embeddings and lm_head; per layer: c_attn (with bias), attention c_proj, w1, w2, the MLP's
    # c_proj, two norms; the final norm
    by_hand = 2 * v * h + layers * (h * 3 * h + 3 * h + h * h + 3 * h * f + 2 * h) + h
    assert sum(n for _, _, n in model_tensors(architecture(row))) == by_hand == 7_721_324_544


def test_lora_sizes_follow_qwen_s_target_modules():
    row = ROWS[0]  # Qwen's script: rank 64 on c_attn, both c_proj, w1 and w2
    h, f, r = row["hidden_size"], row["intermediate_size"], row["lora_r"]
    per_layer = r * ((h + 3 * h) + (h + h) + 2 * (h + f) + (f + h))
    assert sum(lora_tensor_sizes(row)) == row["num_layers"] * per_layer == 143_130_624
    (swift,) = [row for row in ROWS if row["id"] == "swift-qwen7b-lora-2048"]
    # ms-swift's DEFAULT: rank 8 on c_attn, "4.19" million trainable parameters as it prints
    assert sum(lora_tensor_sizes(swift)) == 32 * 8 * (4096 + 3 * 4096) == 4_194_304


@pytest.mark.parametrize("row", ROWS, ids=[row["id"] for row in ROWS])
def test_every_ratio_is_inside_the_band_notebook_01_states(row):
    predicted = predict(row)["total"] / GIB
    ratio = predicted / row["measured_gib"]
    assert BAND[0] <= ratio <= BAND[1], (
        f"{row['id']}: {predicted:.1f} GiB predicted, ratio {ratio:.2f}"
    )


def test_compare_and_the_median():
    comparison = compare()
    assert [c["id"] for c in comparison] == [row["id"] for row in ROWS]
    for c, row in zip(comparison, ROWS, strict=True):
        assert c["ratio"] == pytest.approx(predict(row)["total"] / GIB / row["measured_gib"])
    assert BAND[0] <= median_ratio(comparison) <= BAND[1]
    assert median_ratio([{"ratio": 1.0}, {"ratio": 3.0}, {"ratio": 2.0}]) == 2.0


def test_the_qlora_rows_keep_a_gptq_base_in_16_bit():
    for row in ROWS:
        if row["base_format"] == "gptq-int4":
            assert row["method"] == "qlora" and row["unquantized_weight_bytes"] == 2
            assert predict(row)["lm_head_copy"] == 0  # fp16 lm_head: autocast copies nothing
