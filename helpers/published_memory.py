"""Peak memory that others measured and published, next to notebook 01's predictions.

``data/published_memory/measurements.csv`` holds one published measurement of LoRA or QLoRA
fine-tuning a row, with the settings needed to recompute it (its README card cites every
row). :func:`predict` runs :func:`helpers.memory.estimate_memory` on a row's settings;
:func:`compare` gives the ratio predicted / measured for every row, and :data:`BAND` is the
range notebook 01 states that the ratios fall in.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from transformers import PretrainedConfig, Qwen2Config

from helpers.memory import GIB, estimate_memory

DATA = Path(__file__).resolve().parent.parent / "data" / "published_memory" / "measurements.csv"
# The range of predicted / measured that notebook 01 states, and the test holds every row to.
BAND = (0.6, 1.15)
_INTEGERS = (
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "num_heads",
    "vocab_size",
    "seq_len",
    "batch_size",
    "gradient_checkpointing",
    "lora_r",
)
_FLOATS = ("unquantized_weight_bytes", "hidden_state_bytes", "measured_gib")


def load_measurements(path: Path = DATA) -> list[dict[str, Any]]:
    """The rows of the measurements table, numbers converted."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in _INTEGERS:
            row[key] = int(row[key])
        for key in _FLOATS:
            row[key] = float(row[key])
        row["gradient_checkpointing"] = bool(row["gradient_checkpointing"])
    return rows


def architecture(row: dict[str, Any]) -> PretrainedConfig:
    """A config with the row's model's tensors, for the meta-device count.

    Qwen-7B (``QWenLMHeadModel``, remote code) has the tensors of transformers'
    ``Qwen2ForCausalLM`` of the same sizes: a bias on the query, key and value projections
    (Qwen's fused ``c_attn``), none elsewhere, untied embeddings.
    """
    return Qwen2Config(
        hidden_size=row["hidden_size"],
        intermediate_size=row["intermediate_size"],
        num_hidden_layers=row["num_layers"],
        num_attention_heads=row["num_heads"],
        num_key_value_heads=row["num_heads"],
        vocab_size=row["vocab_size"],
        tie_word_embeddings=False,
    )


def lora_tensor_sizes(row: dict[str, Any]) -> list[int]:
    """Element counts of the adapters: A (r × in) and B (out × r) per target, per layer.

    ``lora_shapes`` lists one layer's target modules as ``in x out`` (Qwen's own modules:
    the fused ``c_attn``, the two ``c_proj``, ``w1`` and ``w2``).
    """
    r = row["lora_r"]
    sizes = []
    for _ in range(row["num_layers"]):
        for shape in row["lora_shapes"].split(";"):
            n_in, n_out = (int(x) for x in shape.split("x"))
            sizes += [r * n_in, n_out * r]
    return sizes


def predict(row: dict[str, Any]) -> dict[str, int]:
    """Notebook 01's estimate for a row's settings, in bytes per component."""
    return estimate_memory(
        architecture(row),
        row["method"],
        trainable_tensor_sizes=lora_tensor_sizes(row),
        batch_size=row["batch_size"],
        seq_len=row["seq_len"],
        gradient_checkpointing=row["gradient_checkpointing"],
        optimizer=row["optimizer"],
        unquantized_weight_bytes=row["unquantized_weight_bytes"],
        hidden_state_bytes=row["hidden_state_bytes"],
    )


def compare(rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """For every row: the measurement, the prediction (GiB) and predicted / measured."""
    out = []
    for row in load_measurements() if rows is None else rows:
        predicted = predict(row)["total"] / GIB
        out.append(
            {
                "id": row["id"],
                "source": row["source"].split("/")[3],  # the publishing organisation
                "model": row["model"],
                "method": row["method"],
                "seq_len": row["seq_len"],
                "measured_gib": row["measured_gib"],
                "predicted_gib": predicted,
                "ratio": predicted / row["measured_gib"],
            }
        )
    return out


def median_ratio(comparison: list[dict[str, Any]]) -> float:
    """The median of predicted / measured over the rows of :func:`compare`."""
    return statistics.median(c["ratio"] for c in comparison)
