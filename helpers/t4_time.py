"""How long each FULL notebook takes on a free Colab T4: a prediction, calibrated on published runs.

:func:`predict_minutes` adds four parts, each from a stated rule:

training     training tokens x FLOPs per token / an effective throughput. FLOPs per token of a
             QLoRA step with gradient checkpointing: 6 N (forward, recomputed forward and
             backward to the inputs, 2 N each, with N the parameters of the matrix products;
             the frozen weights get no weight gradient) plus 8 x layers x tokens-in-the-row x
             hidden for attention (forward, recompute and a backward twice the forward). The
             effective throughput is not assumed: it is what two published T4 runs achieved
             (:data:`CALIBRATIONS`), with their settings.
loading      the fp16 checkpoint's bytes (2 per parameter) at an assumed download speed.
generation   one decoding step per generated token per batch; a step reads the 4-bit weights
             (0.5 byte per parameter) at an assumed share of the T4's memory bandwidth.
evaluation   what the notebook runs besides (06: DS-1000's tests in the sandbox), per item.

The training tokens are each notebook's own: its FULL configuration (read from the
notebook), its trainer's batch and accumulation (the rehearsal reads them the same way), the
size of its data (the course's own files where FULL uses them) and, where the rows are
longer than the budget, the budget. Every assumption is a keyword argument of
:func:`predict_minutes` with its default documented; none of them is measured here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from helpers.architectures import MISTRAL_7B_INSTRUCT, PHI_1_5, PHI_2, REAL_CONFIGS
from helpers.data import data_path
from helpers.notebook_code import NOTEBOOKS

# A Tesla T4's memory bandwidth (NVIDIA T4 datasheet: 320 GB/s GDDR6).
T4_BANDWIDTH_BYTES_PER_S = 320e9

# Published T4 runs with their settings. "minutes" is the reported training time.
CALIBRATIONS: dict[str, dict[str, Any]] = {
    "shaw-talebi-qlora-mistral": {
        "model_id": MISTRAL_7B_INSTRUCT,
        "what": (
            "Shaw Talebi, 'QLoRA - How to Fine-Tune an LLM on a Single GPU' (Towards Data "
            "Science, Feb 2024) and its notebook ShawhinT/YouTube-Blog "
            "LLMs/qlora/qlora_example.ipynb: Mistral-7B-Instruct-v0.2 in 4 bits (GPTQ), LoRA "
            "r=8 on q_proj, 10 epochs over 50 comments, batch 4 x 4 accumulation, max_length "
            "512, fp16, paged_adamw_8bit, on Colab's T4; training reported at about 10 minutes"
        ),
        "url": "https://github.com/ShawhinT/YouTube-Blog/blob/main/LLMs/qlora/qlora_example.ipynb",
        "rows": 50 * 10,
        "tokens_per_row": 300,  # assumption: ~100-token instructions + comment + reply, padded
        "minutes": 10,
    },
    "phi2-summarizer-tutorial": {
        "model_id": PHI_2,
        "what": (
            "a Phi-2 QLoRA summarisation tutorial (as cited in the course's issue 16): 400 "
            "steps at batch 1 with 4 accumulation steps on a T4, about an hour"
        ),
        "url": "",
        "rows": 400 * 1 * 4,
        "tokens_per_row": 512,  # assumption: dialogue + summary, padded
        "minutes": 60,
    },
}
# Which calibration stands for which model: phi-1.5 shares Phi-2's architecture and kernels.
CALIBRATION_OF = {
    MISTRAL_7B_INSTRUCT: "shaw-talebi-qlora-mistral",
    PHI_2: "phi2-summarizer-tutorial",
    PHI_1_5: "phi2-summarizer-tutorial",
}


def matmul_parameters(model_id: str) -> int:
    """Parameters that take part in a matrix product per token (all but the input embedding)."""
    from helpers.architectures import count_parameters, meta_model

    total, _ = count_parameters(meta_model(model_id))
    config = REAL_CONFIGS[model_id]
    return total - config["vocab_size"] * config["hidden_size"]


def training_flops_per_token(model_id: str, tokens_per_row: int) -> float:
    """FLOPs of one trained token: 6 N + 8 x layers x row length x hidden (module docstring)."""
    config = REAL_CONFIGS[model_id]
    attention = 8 * config["num_hidden_layers"] * tokens_per_row * config["hidden_size"]
    return 6 * matmul_parameters(model_id) + attention


def effective_flops(calibration: str) -> float:
    """FLOP/s a published run achieved: its training FLOPs over its reported time."""
    run = CALIBRATIONS[calibration]
    flops = run["rows"] * run["tokens_per_row"] * training_flops_per_token(
        run["model_id"], run["tokens_per_row"]
    )
    return flops / (run["minutes"] * 60)


def _jsonl_rows(*parts: str) -> list[dict]:
    return [json.loads(line) for line in data_path(*parts).read_text().splitlines() if line]


def training_plan(notebook: str, notebooks: Path = NOTEBOOKS) -> dict[str, Any]:
    """Rows trained and tokens per row of a notebook's FULL run, with where each comes from."""
    from helpers.rehearsal import settings

    found = settings(notebook, notebooks)
    batch, accum = found["batch_size"], found["grad_accum"]

    def steps_for(rows: int) -> int:  # the trainer's own count: max_steps, else epochs
        if found["max_steps"] > 0:
            return found["max_steps"]
        return math.ceil(math.ceil(rows / batch) / accum) * math.ceil(found["epochs"])

    if notebook == "04":  # FULL trains on the course's own comments
        train = _jsonl_rows("youtube_comments", "train.jsonl")
        steps = steps_for(len(train))
        chars = sorted(len(r["comment"]) + len(r["reply"]) for r in train)
        return {
            "steps": steps,
            "rows": steps * batch * accum,
            "chars_per_row": chars[len(chars) // 2],
            "tokens_from": "data/youtube_comments/train.jsonl (median comment + reply), "
            "plus the instructions, at chars_per_token",
        }
    # 05: yasminesarraj/texts_summary has 47 training reports (Hub viewer, cited in issue 11);
    # 06: DS-1000 has 1000 problems, about 80% of them on the training side.
    steps = steps_for({"05": 47}.get(notebook, 800))
    return {
        "steps": steps,
        "rows": steps * batch * accum,
        "tokens_per_row": found["seq_len"],
        "tokens_from": "the training budget max_length (05: the reports are longer than it; "
        "06: an upper bound, rows are padded to the longest in the batch)",
    }


# How many texts each FULL notebook generates and scores, from its own configuration.
def generation_plan(notebook: str, notebooks: Path = NOTEBOOKS) -> dict[str, Any]:
    """Prompts generated for (before and after tuning), tokens each, batch size."""
    from helpers.rehearsal import full_config

    full = full_config(notebook, notebooks)
    if notebook == "04":
        prompts = 2 * len(_jsonl_rows("youtube_comments", "test.jsonl")) + 4  # + the demos
        return {"prompts": prompts, "max_new_tokens": full["max_new_tokens"],
                "batch": full["gen_batch_size"], "from": "2 x data/youtube_comments/test.jsonl"}
    if notebook == "05":
        # yasminesarraj/texts_summary has 47 test rows (Hub viewer, as cited in issue 11)
        return {"prompts": 2 * 47, "max_new_tokens": full["max_new_tokens"],
                "batch": full["gen_batch_size"], "from": "2 x 47 test reports"}
    return {"prompts": 2 * full["eval_limit"], "max_new_tokens": full["max_new_tokens"],
            "batch": full["generation_batch_size"], "evaluated": 2 * full["eval_limit"],
            "from": "2 x eval_limit DS-1000 problems"}


def predict_minutes(
    notebook: str,
    *,
    chars_per_token: float = 4.0,
    instruction_tokens: int = 80,
    download_mb_per_s: float = 100.0,
    bandwidth_share: float = 0.25,
    seconds_per_test: float = 5.0,
    sandbox_workers: int = 2,
    notebooks: Path = NOTEBOOKS,
) -> dict[str, Any]:
    """Predicted minutes of a FULL notebook on a free Colab T4, by part.

    Args:
        notebook: ``"04"``, ``"05"`` or ``"06"``.
        chars_per_token: English text per token for 04's rows (a rule of thumb for these
            tokenizers; the real tokenizer needs the Hub).
        instruction_tokens: 04's instructions, added to every row.
        download_mb_per_s: the Hub-to-Colab download speed (an assumption).
        bandwidth_share: the share of the T4's 320 GB/s a bitsandbytes 4-bit decoding step
            achieves (an assumption).
        seconds_per_test: 06: one DS-1000 test program in the sandbox (an assumption).
        sandbox_workers: 06: tests run side by side (the notebook's FULL setting is 2).
        notebooks: the folder the notebook is read from.

    Returns:
        ``train``, ``load``, ``generate``, ``evaluate`` and ``total`` minutes, and the inputs
        they come from (``training_tokens``, ``effective_tflops``, ``calibration`` ...).
    """
    from helpers.rehearsal import full_config, model_id_of

    model_id = model_id_of(full_config(notebook, notebooks))
    plan = training_plan(notebook, notebooks)
    if "tokens_per_row" not in plan:
        plan["tokens_per_row"] = round(plan["chars_per_row"] / chars_per_token) + instruction_tokens
    tokens = plan["rows"] * plan["tokens_per_row"]
    calibration = CALIBRATION_OF[model_id]
    throughput = effective_flops(calibration)
    train_s = tokens * training_flops_per_token(model_id, plan["tokens_per_row"]) / throughput

    params = matmul_parameters(model_id) + REAL_CONFIGS[model_id]["vocab_size"] * REAL_CONFIGS[
        model_id
    ]["hidden_size"]
    load_s = 2 * params / (download_mb_per_s * 1e6)

    gen = generation_plan(notebook, notebooks)
    step_s = 0.5 * params / (T4_BANDWIDTH_BYTES_PER_S * bandwidth_share)
    generate_s = math.ceil(gen["prompts"] / gen["batch"]) * gen["max_new_tokens"] * step_s
    evaluate_s = gen.get("evaluated", 0) * seconds_per_test / sandbox_workers

    minutes = {
        "train": train_s / 60,
        "load": load_s / 60,
        "generate": generate_s / 60,
        "evaluate": evaluate_s / 60,
    }
    minutes["total"] = sum(minutes.values())
    return {
        **{k: round(v, 1) for k, v in minutes.items()},
        "model_id": model_id,
        "training_steps": plan["steps"],
        "training_rows": plan["rows"],
        "tokens_per_row": plan["tokens_per_row"],
        "training_tokens": tokens,
        "tokens_from": plan["tokens_from"],
        "effective_tflops": round(throughput / 1e12, 2),
        "calibration": calibration,
        "generated_prompts": gen["prompts"],
        "max_new_tokens": gen["max_new_tokens"],
    }


def readme_table(notebooks: tuple[str, ...] = ("04", "05", "06")) -> str:
    """A Markdown table of the predictions, with where they come from."""
    lines = [
        "| notebook | predicted on a free T4 | training | loading | generation | evaluation |",
        "|---|---|---|---|---|---|",
    ]
    for nb in notebooks:
        p = predict_minutes(nb)
        lines.append(
            f"| {nb} | ~{p['total']:.0f} min | {p['train']:.0f} min ({p['training_tokens']:,} "
            f"tokens at {p['effective_tflops']} TFLOP/s) | {p['load']:.0f} min | "
            f"{p['generate']:.0f} min | {p['evaluate']:.0f} min |"
        )
    lines.append("")
    lines.append(
        "Predicted by `helpers.t4_time.predict_minutes`: training FLOPs at the throughput of "
        "published T4 runs (" + "; ".join(
            f"{c['what']}" for c in CALIBRATIONS.values()
        ) + "); loading and generation from stated assumptions."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(readme_table())
