"""Rehearse a FULL plan: the notebook's own training code on a full-width, random-weight model.

``python3 course.py rehearse PLAN [--layers N] [--steps S] [--seq-len L] [--no-cap]`` with
PLAN one of ``04``, ``05``, ``06`` or ``all``. For each plan it

1. reads the notebook: its FULL configuration (the CONFIG cell run in FULL mode) and the
   statements of its training cells, from the ``BitsAndBytesConfig`` cell to the trainer
   cell (:func:`training_statements`). Nothing is copied: a change to the notebook flows
   through, and a statement the rehearsal cannot run is an error, not a skip;
2. builds the real published architecture (:mod:`helpers.architectures`) at full width with
   N decoder layers (default: 2 on a CPU, all on a GPU) and random weights, initialised in
   place on the device (no default initialisation, then one normal fill), and saves it once
   as a local fp16 checkpoint;
3. runs the notebook's statements with ``MODEL_PATH`` pointing at that checkpoint, so the
   same ``BitsAndBytesConfig``, ``from_pretrained``, ``prepare_model_for_kbit_training``,
   ``LoraConfig``, ``get_peft_model``, ``SFTConfig`` and ``SFTTrainer`` (and its default
   collator) are made, on synthetic pre-tokenized rows of the FULL sequence length and
   batch size (half prompt, half completion), and trains S optimizer steps;
4. prints layers, parameters, trainable parameters, step time and tokens per second and,
   on CUDA, ``torch.cuda.max_memory_allocated()`` beside notebook 01's prediction
   (:func:`helpers.memory.estimate_memory` for the same N-layer config) and their ratio,
   and writes the same as JSON to ``outputs/rehearsals/``.

On CUDA, memory is capped at a T4's usable size (:data:`helpers.memory.T4_MEMORY_BYTES`,
``torch.cuda.set_per_process_memory_fraction``) unless ``--no-cap``; the notebooks' fp16
settings are used as they are, also on a card with bf16; an out-of-memory error is
reported as the verdict ``does not fit``, not as a stack trace. On a CPU, which has no fast
fp16 matrix product, the 4-bit compute dtype and the trainer's fp16 are switched to fp32
after the notebook makes them (recorded as ``cpu_substitutions``); on CUDA nothing changes.

On a GPU machine, the whole check is one command (all layers by default there)::

    python3 course.py rehearse all            # capped at a T4's 14.3 GiB usable

Weights do not change memory or speed, so random ones are enough; the Hub is not needed.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import io
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from helpers.architectures import (
    PUBLISHED_TOKENIZER_SPECIALS,
    REAL_CONFIGS,
    count_parameters,
    real_config,
)
from helpers.memory import COURSE_PLANS, T4_MEMORY_BYTES, estimate_memory
from helpers.notebook_code import NOTEBOOKS, code_cells, config

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "outputs" / "rehearsals"
PLANS = tuple(sorted(COURSE_PLANS))

# The calls that are the lesson: a statement assigning the result of one of them is run.
LESSON_CALLS = (
    "BitsAndBytesConfig",
    "prepare_model_for_kbit_training",
    "LoraConfig",
    "get_peft_model",
    "SFTConfig",
    "SFTTrainer",
    "TrainingArguments",
    "Trainer",
)
# Training plumbing the notebooks import from helpers (keep_trainable_fp32): run too.
PLUMBING_MODULES = ("helpers.training",)
# Methods the rehearsal calls itself, or that would only cost time (never run from the cells).
NOT_RUN = {"train", "evaluate", "predict", "save_model", "save_pretrained", "push_to_hub",
           "generate"}


class RehearsalError(RuntimeError):
    """The notebook's code could not be rehearsed as it is (says what and where)."""


def notebook_path(plan: str, notebooks: Path = NOTEBOOKS) -> Path:
    """The notebook of a plan (``"06"`` -> ``notebooks/06_....ipynb``)."""
    found = sorted(Path(notebooks).resolve().glob(f"{plan}_*.ipynb"))
    if len(found) != 1:
        raise RehearsalError(f"expected one notebook {plan}_*.ipynb in {notebooks}, not {found}")
    return found[0]


def full_config(plan: str, notebooks: Path = NOTEBOOKS) -> dict:
    """The notebook's CONFIG in FULL mode (its CONFIG cell, run; the printout swallowed)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return config(str(notebook_path(plan, notebooks)), "full")


def model_id_of(full: dict) -> str:
    """The one real model the FULL configuration names."""
    ids = {v for v in full.values() if isinstance(v, str) and v in REAL_CONFIGS}
    if len(ids) != 1:
        raise RehearsalError(f"the FULL config names {len(ids)} of the course's models: {ids}")
    return ids.pop()


# ---------------------------------------------------------------------------------------
# Reading the training statements out of the notebook
# ---------------------------------------------------------------------------------------


def _names(node: ast.AST, ctx: type) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ctx)}


def _called(node: ast.AST) -> set[str]:
    """Short names of everything called in ``node`` (``a.b.c(...)`` -> ``c`` and ``a``)."""
    out = set()
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            func = call.func
            if isinstance(func, ast.Attribute):
                out.add(func.attr)
                while isinstance(func, ast.Attribute):
                    func = func.value
                if isinstance(func, ast.Name):
                    out.add(func.id + ".")
            elif isinstance(func, ast.Name):
                out.add(func.id)
    return out


def _is_model_load(node: ast.AST) -> bool:
    """``X.from_pretrained(...)`` where X is a model class (``AutoModelForCausalLM``)."""
    for call in ast.walk(node):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "from_pretrained"
            and isinstance(call.func.value, ast.Name)
            and "Model" in call.func.value.id
            and "Peft" not in call.func.value.id
        ):
            return True
    return False


def training_statements(
    plan: str, provided: set[str], notebooks: Path = NOTEBOOKS
) -> tuple[list[tuple[int, ast.stmt]], dict[str, str]]:
    """The statements of the notebook's training cells that the rehearsal runs, in order.

    The cells run from the one with ``BitsAndBytesConfig(`` to the one with the trainer.
    Kept: imports; assignments of a lesson call (:data:`LESSON_CALLS`, a model's
    ``from_pretrained``) or of a function from :data:`PLUMBING_MODULES`; expression calls
    and attribute assignments on what those statements made (``model.print_...()``,
    ``keep_trainable_fp32(model)``, ``model.config.use_cache = False``), except the calls
    in :data:`NOT_RUN`; ``if`` blocks made only of such statements; and, for any name those
    need that ``provided`` does not give, its last definition earlier in the notebook (an
    assignment, a function or a class).

    Returns ``([(code cell index, statement)], {"args": name, "trainer": name,
    "train_dataset": name, "eval_dataset": name})``: where the rehearsal finds the objects.
    """
    cells = code_cells(str(notebook_path(plan, notebooks)))
    first = [i for i, c in enumerate(cells) if "BitsAndBytesConfig(" in c]
    last = [i for i, c in enumerate(cells) if "Trainer(" in c]
    if not first or not last or first[0] > last[-1]:
        raise RehearsalError(f"notebook {plan}: no BitsAndBytesConfig cell before a trainer cell")
    every: list[tuple[int, ast.stmt]] = [
        (i, stmt) for i, cell in enumerate(cells[: last[-1] + 1]) for stmt in ast.parse(cell).body
    ]
    window = [(i, s) for i, s in every if first[0] <= i <= last[-1]]
    plumbing = {
        alias.asname or alias.name
        for _, s in window
        if isinstance(s, ast.ImportFrom) and s.module in PLUMBING_MODULES
        for alias in s.names
    }

    made: set[str] = set()  # names assigned by kept statements

    def lesson(stmt: ast.stmt) -> bool:
        value = getattr(stmt, "value", None)
        if not isinstance(stmt, ast.Assign | ast.AnnAssign) or value is None:
            return False
        called = _called(value)
        return bool(called & set(LESSON_CALLS) or called & plumbing) or _is_model_load(value)

    def on_made(stmt: ast.stmt) -> bool:
        """An expression call or attribute assignment on what the lesson made."""
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            called = _called(stmt.value)
            if called & NOT_RUN:
                return False
            if called & {"print", "display"}:  # only for what it calls: keep_trainable_fp32
                return bool(called & plumbing)
            return bool(_names(stmt, ast.Load) & (made | {"tokenizer"})) or bool(
                called & plumbing
            )
        if isinstance(stmt, ast.Assign):
            return all(isinstance(t, ast.Attribute) for t in stmt.targets) and bool(
                {n for t in stmt.targets for n in _names(t, ast.Load)} & (made | {"tokenizer"})
            )
        if isinstance(stmt, ast.If):
            return all(on_made(s) for s in stmt.body + stmt.orelse)
        return False

    kept: list[tuple[int, ast.stmt]] = []
    for i, stmt in window:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            kept.append((i, stmt))
        elif lesson(stmt):
            kept.append((i, stmt))
            for target in stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]:
                made |= _names(target, ast.Store)
        elif on_made(stmt):
            kept.append((i, stmt))

    # What the kept statements need and neither they nor the rehearsal define: the last
    # assignment before the first use, anywhere earlier in the notebook.
    import builtins

    known = set(provided) | set(dir(builtins))
    changed = True
    while changed:
        changed = False
        defined = set(known)
        for i, stmt in sorted(kept, key=lambda p: every.index(p)):
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                defined |= {(a.asname or a.name).split(".")[0] for a in stmt.names}
                continue
            local = set()
            for node in ast.walk(stmt):  # names bound inside (comprehensions, lambdas)
                if isinstance(node, ast.comprehension):
                    local |= _names(node.target, ast.Store)
                elif isinstance(node, ast.Lambda):
                    local |= {a.arg for a in node.args.args}
            missing = _names(stmt, ast.Load) - defined - local
            for name in sorted(missing):
                before = every[: every.index((i, stmt))]
                sources = [
                    p
                    for p in before
                    if (
                        isinstance(p[1], ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == name for t in p[1].targets)
                    )
                    or (
                        isinstance(p[1], ast.FunctionDef | ast.ClassDef) and p[1].name == name
                    )
                ]
                imports = [
                    p
                    for p in before
                    if isinstance(p[1], ast.Import | ast.ImportFrom)
                    and name in {(a.asname or a.name).split(".")[0] for a in p[1].names}
                ]
                found = (sources + imports)[-1:] if sources or imports else []
                if not found:
                    raise RehearsalError(
                        f"notebook {plan}, code cell {i}: the rehearsal cannot provide {name!r} "
                        f"used in: {ast.unparse(stmt).splitlines()[0]}"
                    )
                if found[0] not in kept:
                    kept.append(found[0])
                    changed = True
            if changed:
                break
            defined |= {
                n for t in getattr(stmt, "targets", [getattr(stmt, "target", None)]) if t
                for n in _names(t, ast.Store)
            }
            if isinstance(stmt, ast.FunctionDef | ast.ClassDef):
                defined.add(stmt.name)
    kept.sort(key=lambda p: every.index(p))

    roles: dict[str, str] = {}
    for _, stmt in kept:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
            called = _called(stmt.value)
            name = stmt.targets[0].id
            if called & {"SFTConfig", "TrainingArguments"}:
                roles["args"] = name
            if called & {"SFTTrainer", "Trainer"}:
                roles["trainer"] = name
                for keyword in stmt.value.keywords:
                    if keyword.arg in ("train_dataset", "eval_dataset"):
                        if not isinstance(keyword.value, ast.Name):
                            raise RehearsalError(
                                f"notebook {plan}: {keyword.arg} is not a plain name"
                            )
                        roles[keyword.arg] = keyword.value.id
    for role in ("args", "trainer", "train_dataset"):
        if role not in roles:
            raise RehearsalError(f"notebook {plan}: no {role} found in the training cells")
    return kept, roles


# ---------------------------------------------------------------------------------------
# What the rehearsal runs, compared with notebook 01's plan
# ---------------------------------------------------------------------------------------


CONFIG_CLASSES = {"BitsAndBytesConfig", "LoraConfig", "SFTConfig", "TrainingArguments"}


def settings(plan: str, notebooks: Path = NOTEBOOKS) -> dict[str, Any]:
    """The training settings the notebook's own statements construct in FULL mode.

    Runs only the statements that make the quantization, LoRA and training configurations
    (no model, no data) and reads them back from the objects.
    """
    full = full_config(plan, notebooks)
    provided = {"MODE", "CONFIG", "FULL", "MODEL_PATH", "tokenizer", "train_dataset"}
    kept, roles = training_statements(plan, provided | _dataset_names(plan, notebooks), notebooks)
    namespace: dict[str, Any] = {"MODE": "full", "CONFIG": dict(full), "FULL": full}
    objects = {}
    with tempfile.TemporaryDirectory() as work, _cwd(work):
        for _, stmt in kept:
            value = getattr(stmt, "value", None)
            if isinstance(stmt, ast.Import | ast.ImportFrom) or (
                isinstance(stmt, ast.Assign)
                and value is not None
                and _called(value) & {"BitsAndBytesConfig", "LoraConfig", "SFTConfig",
                                      "TrainingArguments", "Path", "str", "output_dir"}
                and not _called(value) & {"SFTTrainer", "Trainer", "get_peft_model"}
                and not _is_model_load(value)
            ):
                try:
                    _run(stmt, namespace, plan)
                except NameError:  # a helper line (a print's str(...)) about the model
                    if value is not None and _called(value) & CONFIG_CLASSES:
                        raise  # a configuration the rehearsal must read: never skipped
        for obj in namespace.values():
            objects[type(obj).__name__] = obj
        args = namespace[roles["args"]]
    lora, bnb = objects.get("LoraConfig"), objects.get("BitsAndBytesConfig")
    if lora is None or bnb is None:
        raise RehearsalError(f"notebook {plan}: no LoraConfig or BitsAndBytesConfig object")
    return {
        "model_id": model_id_of(full),
        "r": lora.r,
        "lora_alpha": lora.lora_alpha,
        "target_modules": sorted(lora.target_modules),
        "quantization": "nf4" if bnb.load_in_4bit and bnb.bnb_4bit_quant_type == "nf4" else "?",
        "double_quant": bnb.bnb_4bit_use_double_quant,
        "compute_dtype": str(bnb.bnb_4bit_compute_dtype).replace("torch.", ""),
        "batch_size": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
        "max_steps": args.max_steps,
        "epochs": args.num_train_epochs,
        "seq_len": args.max_length,
        "optimizer": args.optim.value if hasattr(args.optim, "value") else str(args.optim),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "fp16": args.fp16,
        "bf16": args.bf16,
    }


def disagreements(plan: str, found: dict[str, Any]) -> list[str]:
    """Where the notebook's FULL settings and notebook 01's plan (``COURSE_PLANS``) differ."""
    want = COURSE_PLANS[plan]
    memory = want["memory"]
    pairs = {
        "model_id": want["model_id"],
        "r": want["lora"]["r"],
        "lora_alpha": want["lora"]["lora_alpha"],
        "target_modules": sorted(want["lora"]["target_modules"]),
        "quantization": "nf4" if memory["method"] == "qlora" else memory["method"],
        "double_quant": memory["double_quant"],
        "batch_size": memory["batch_size"],
        "seq_len": memory["seq_len"],
        "optimizer": memory["optimizer"],
        "gradient_checkpointing": memory["gradient_checkpointing"],
    }
    out = [
        f"{key}: the notebook trains with {found[key]!r}, notebook 01 plans {value!r}"
        for key, value in pairs.items()
        if found[key] != value
    ]
    if found["compute_dtype"] != "float16" or not found["fp16"] or found["bf16"]:
        out.append("precision: a T4 needs fp16 compute and fp16=True, bf16=False")
    return out


def _dataset_names(plan: str, notebooks: Path) -> set[str]:
    """The names the trainer call takes its datasets from (found by parsing, no running)."""
    names = set()
    for cell in code_cells(str(notebook_path(plan, notebooks))):
        for node in ast.walk(ast.parse(cell)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                "SFTTrainer",
                "Trainer",
            ):
                names |= {
                    k.value.id
                    for k in node.keywords
                    if k.arg in ("train_dataset", "eval_dataset") and isinstance(k.value, ast.Name)
                }
    return names


@contextlib.contextmanager
def _cwd(path: str | Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _run(stmt: ast.stmt, namespace: dict, plan: str) -> None:
    code = compile(ast.Module(body=[stmt], type_ignores=[]), f"notebook {plan}", "exec")
    exec(code, namespace)  # the notebook's own statement


# ---------------------------------------------------------------------------------------
# The model and the data
# ---------------------------------------------------------------------------------------


def fill_random_(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> None:
    """Random weights in place: matrices N(0, std), norm weights 1, biases and the rest 0."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0.0, std, generator=generator)
            elif "norm" in name and name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()


def build_checkpoint(model_id: str, layers: int, where: Path, device: str) -> dict[str, Any]:
    """Save a random-weight, full-width model with ``layers`` decoder layers to ``where``.

    Built in fp16 directly on ``device`` without transformers' default initialisation, filled
    once (:func:`fill_random_`), saved once. A tokenizer with the model's special tokens is
    saved beside it (the rows are pre-tokenized, so only its special tokens matter).
    """
    from tokenizers import Tokenizer, models
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    from transformers.initialization import no_init_weights

    start = time.perf_counter()
    cfg = real_config(model_id)
    total_layers = cfg.num_hidden_layers
    cfg.num_hidden_layers = layers
    with torch.device(device), no_init_weights():
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float16)
    fill_random_(model)
    params, _ = count_parameters(model)
    model.save_pretrained(where)
    del model
    _free(device)
    # the tokenizer's end of text (phi-1_5's config publishes none; its tokenizer has 50256)
    eos = PUBLISHED_TOKENIZER_SPECIALS.get(model_id, REAL_CONFIGS[model_id])["eos_token_id"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} if eos == 2 else {"<|endoftext|>": eos}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=next(iter(vocab))))
    special = next(k for k, v in vocab.items() if v == eos)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=special, pad_token=special,
                            unk_token=next(iter(vocab))).save_pretrained(where)
    return {"layers": layers, "of_layers": total_layers, "parameters": params,
            "build_seconds": round(time.perf_counter() - start, 1)}


def _build_device(model_id: str, layers: int, device: str) -> str:
    """Build on the GPU when the fp16 model fits its free memory with a margin, else on the CPU."""
    if device != "cuda":
        return device
    config = REAL_CONFIGS[model_id]
    hidden = config["hidden_size"]
    per_layer = 4 * hidden**2 + 3 * hidden * config["intermediate_size"]  # an upper bound
    embeddings = 2 * config["vocab_size"] * config["hidden_size"]
    fp16_bytes = 2 * (layers * per_layer + embeddings)
    free, _ = torch.cuda.mem_get_info(0)
    return "cuda" if fp16_bytes < 0.8 * free else "cpu"


def synthetic_rows(n: int, seq_len: int, vocab_size: int, seed: int = 0):
    """``n`` pre-tokenized rows of ``seq_len`` ids: the first half prompt, the rest completion."""
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (n, seq_len), generator=generator).tolist()
    prompt = seq_len // 2
    mask = [0] * prompt + [1] * (seq_len - prompt)
    return Dataset.from_list([{"input_ids": row, "completion_mask": mask} for row in ids])


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
# One rehearsal
# ---------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def rehearse(
    plan: str,
    layers: int | None = None,
    steps: int = 2,
    seq_len: int | None = None,
    cap: bool = True,
    notebooks: Path = NOTEBOOKS,
    model_id: str | None = None,
    shrink: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Rehearse one plan and return its record (see the module docstring).

    Args:
        plan: ``"04"``, ``"05"`` or ``"06"``.
        layers: decoder layers to build (default: 2 on a CPU, all on a GPU).
        steps: optimizer steps to train.
        seq_len: tokens per synthetic row (default: the notebook's ``max_length``).
        cap: on CUDA, cap PyTorch's memory at :data:`helpers.memory.T4_MEMORY_BYTES`.
        notebooks: the folder the notebook is read from.
        model_id: only for tests: build this model instead of the plan's.
        shrink: only for tests: config fields to override (a width-reduced model).
    """
    from transformers import TrainerCallback, TrainingArguments

    from helpers.mode import keep_4bit_cpu_layers_trainable, quiet_known_warnings

    quiet_known_warnings()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        keep_4bit_cpu_layers_trainable()
    full = full_config(plan, notebooks)
    model_id = model_id or model_id_of(full)
    found = settings(plan, notebooks)
    disagree = disagreements(plan, found)
    layers = layers or (REAL_CONFIGS[model_id]["num_hidden_layers"] if device == "cuda" else 2)
    seq_len = seq_len or found["seq_len"]
    record: dict[str, Any] = {
        "plan": plan,
        "notebook": notebook_path(plan, notebooks).name,
        "model_id": model_id,
        "device": _device_name(device),
        "versions": _versions(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": found,
        "disagreements_with_notebook_01": disagree,
        "seq_len": seq_len,
        "steps": steps,
        "cap_bytes": T4_MEMORY_BYTES if device == "cuda" and cap else None,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    work = Path(tempfile.mkdtemp(prefix=f"rehearse-{plan}-"))
    try:
        checkpoint = work / "checkpoint"
        if shrink:
            real = dict(REAL_CONFIGS[model_id])
            REAL_CONFIGS[model_id].update(shrink)
        try:
            record.update(build_checkpoint(model_id, layers, checkpoint, _build_device(
                model_id, layers, device)))
            run_config = real_config(model_id)
        finally:
            if shrink:
                REAL_CONFIGS[model_id].clear()
                REAL_CONFIGS[model_id].update(real)
        run_config.num_hidden_layers = layers
        if device == "cuda":  # the cap starts after the build: only the notebook's code is held
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(T4_MEMORY_BYTES / total if cap else 1.0)
            torch.cuda.reset_peak_memory_stats()
        record.update(_train(plan, full, checkpoint, work, steps, seq_len, run_config, notebooks,
                             TrainerCallback, TrainingArguments, device))
    except torch.OutOfMemoryError as error:
        limit = T4_MEMORY_BYTES if cap else torch.cuda.get_device_properties(0).total_memory
        record["verdict"] = f"does not fit in {limit / 2**30:.1f} GiB"
        record["error"] = str(error).splitlines()[0]
    finally:
        _free(device)
        shutil.rmtree(work, ignore_errors=True)
    record.setdefault("verdict", "ran")
    if device == "cuda" and "trainable_tensor_sizes" in record:
        predicted = predicted_peak(
            plan, run_config, record["trainable_tensor_sizes"], seq_len=seq_len
        )
        record["predicted_bytes"] = predicted
        record["ratio_measured_to_predicted"] = round(
            record["peak_allocated_bytes"] / predicted["total"], 3
        )
    record.pop("trainable_tensor_sizes", None)
    record["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return record


def _cpu_precision(namespace: dict) -> set[str]:
    """On a CPU, compute in fp32 where the notebook asks for fp16; return what was changed.

    A CPU has no fast fp16 matrix product (on this course's 2-core CI machine an fp16 matmul
    is over 100x slower than fp32), so fp16 compute would turn a minute into hours. The
    notebook's objects are changed after they are made, before the trainer exists:
    the 4-bit layers' compute dtype and the trainer's fp16 mixed precision. On CUDA nothing
    is changed.
    """
    from transformers import BitsAndBytesConfig, TrainingArguments

    changed = set()
    for value in namespace.values():
        if isinstance(value, BitsAndBytesConfig) and value.bnb_4bit_compute_dtype == torch.float16:
            value.bnb_4bit_compute_dtype = torch.float32
            changed.add("bnb_4bit_compute_dtype: float16 -> float32")
        if isinstance(value, TrainingArguments) and value.fp16:
            value.fp16 = False
            changed.add("fp16 mixed precision -> fp32")
    return changed


def _train(plan, full, checkpoint, work, steps, seq_len, run_config, notebooks,
           TrainerCallback, TrainingArguments, device) -> dict[str, Any]:
    """Run the notebook's training statements on the checkpoint, then ``steps`` steps."""
    from transformers import AutoTokenizer

    datasets = _dataset_names(plan, notebooks)
    provided = {"MODE", "CONFIG", "FULL", "MODEL_PATH", "tokenizer"} | datasets
    kept, roles = training_statements(plan, provided, notebooks)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    namespace: dict[str, Any] = {
        "MODE": "full",
        "CONFIG": dict(full),
        "FULL": full,
        "MODEL_PATH": str(checkpoint),
        "tokenizer": tokenizer,
    }
    start = time.perf_counter()
    ran: list[str] = []
    substituted: set[str] = set()
    with _cwd(work), contextlib.redirect_stdout(io.StringIO()) as printed:
        for cell, stmt in kept:
            if isinstance(stmt, ast.Assign) and roles["trainer"] in _names(stmt, ast.Store):
                args = namespace[roles["args"]]  # the notebook's arguments, then ours
                args.max_steps = steps
                args.max_length = seq_len
                rows = steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
                vocab = run_config.vocab_size
                namespace[roles["train_dataset"]] = synthetic_rows(rows, seq_len, vocab)
                if "eval_dataset" in roles:
                    namespace[roles["eval_dataset"]] = synthetic_rows(
                        max(1, args.per_device_eval_batch_size), seq_len, vocab, seed=1
                    )
                load_seconds = time.perf_counter() - start
            _run(stmt, namespace, plan)
            ran.append(f"cell {cell}: {ast.unparse(stmt).splitlines()[0][:80]}")
            if device == "cpu":
                substituted |= _cpu_precision(namespace)
    trainer, args = namespace[roles["trainer"]], namespace[roles["args"]]
    assert isinstance(args, TrainingArguments)

    timing: dict[str, Any] = {"step_seconds": []}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            dtypes = {str(p.dtype) for p in model.parameters() if p.requires_grad}
            timing["trainable_dtypes_at_start"] = sorted(dtypes)

        def on_step_begin(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            timing["t"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if device == "cuda":
                torch.cuda.synchronize()
            timing["step_seconds"].append(round(time.perf_counter() - timing["t"], 3))

    trainer.add_callback(Clock())
    with _cwd(work):
        trainer.train()
    model = trainer.model
    total, trainable = count_parameters(model)
    quantized = sum(p.numel() for p in model.parameters() if p.dtype == torch.uint8)
    tokens = args.per_device_train_batch_size * args.gradient_accumulation_steps * seq_len
    seconds = timing["step_seconds"]
    steady = sorted(seconds[1:])[len(seconds[1:]) // 2] if len(seconds) > 1 else seconds[0]
    out = {
        "trainable_parameters": trainable,
        "parameters_as_stored": total,
        "parameters": total + quantized,  # a 4-bit weight is stored two per uint8
        "trainable_tensor_sizes": [p.numel() for p in model.parameters() if p.requires_grad],
        "trainable_dtypes_at_start": timing.get("trainable_dtypes_at_start"),
        "load_seconds": round(load_seconds, 1),
        "step_seconds": seconds,
        "tokens_per_step": tokens,
        "tokens_per_second": round(tokens / steady, 1),
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        "statements_run": ran,
        "cpu_substitutions": sorted(substituted),
        "printed_by_the_notebook_code": printed.getvalue()[-2000:],
    }
    if device == "cuda":
        out["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    del trainer, model
    namespace.clear()
    return out


def predicted_peak(
    plan: str, run_config: Any, trainable_tensor_sizes: list[int], seq_len: int | None = None
) -> dict[str, int]:
    """Notebook 01's prediction (``COURSE_PLANS[plan]["memory"]``) for the rehearsed model.

    ``run_config`` is the config actually built (N layers); ``seq_len`` replaces the plan's
    when the rehearsal ran shorter rows.
    """
    memory = dict(COURSE_PLANS[plan]["memory"])
    if seq_len is not None:
        memory["seq_len"] = seq_len
    return estimate_memory(
        run_config,
        trainable_params=sum(trainable_tensor_sizes),
        trainable_tensor_sizes=trainable_tensor_sizes,
        **memory,
    )


def summary(record: dict[str, Any]) -> str:
    """One line per plan, as the command prints it."""
    head = (f"plan {record['plan']} ({record['model_id']}): {record.get('layers', '?')} of "
            f"{record.get('of_layers', '?')} layers, seq {record['seq_len']}")
    if "step_seconds" not in record:
        return f"{head}: {record['verdict']}"
    line = (
        f"{head}, {record['parameters']:,} parameters, "
        f"{record['trainable_parameters']:,} trainable; step {record['step_seconds'][-1]:.1f} s, "
        f"{record['tokens_per_second']:,.0f} tokens/s"
    )
    if "peak_allocated_bytes" in record:
        predicted = record["predicted_bytes"]["total"]
        line += (
            f"; peak {record['peak_allocated_bytes'] / 2**30:.2f} GiB vs predicted "
            f"{predicted / 2**30:.2f} GiB (ratio {record['ratio_measured_to_predicted']:.2f})"
        )
    return f"{line}; {record['verdict']}"


def write_record(record: dict[str, Any], folder: Path = RECORDS) -> Path:
    """Write a record as JSON under ``folder``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    device = "cuda" if "peak_allocated_bytes" in record else "cpu"
    stamp = record["date"].replace(":", "").replace("-", "")
    path = folder / f"{record['plan']}-{device}-{record.get('layers', 0)}L-{stamp}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.rehearsal PLAN [--layers N] [--steps S] [--seq-len L] [--no-cap]``."""
    parser = argparse.ArgumentParser(prog="course.py rehearse", description=__doc__.split("\n")[0])
    parser.add_argument("plan", choices=[*PLANS, "all"])
    parser.add_argument("--layers", type=int, default=None,
                        help="decoder layers (default: 2 on a CPU, all on a GPU)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps (default 2)")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="tokens per row (default: the notebook's max_length)")
    parser.add_argument("--no-cap", action="store_true", help="do not cap memory at a T4's")
    options = parser.parse_args(argv)
    plans = PLANS if options.plan == "all" else (options.plan,)
    failed = 0
    for plan in plans:
        start = time.perf_counter()
        record = rehearse(plan, options.layers, options.steps, options.seq_len,
                          cap=not options.no_cap)
        record["wall_seconds"] = round(time.perf_counter() - start, 1)
        path = write_record(record)
        print(summary(record), flush=True)
        for line in record["disagreements_with_notebook_01"]:
            print(f"  notebook {plan} and notebook 01 disagree: {line}")
        print(f"  {record['wall_seconds']:.0f} s in all; record: {path.relative_to(ROOT)}")
        failed += record["verdict"] != "ran" or bool(record["disagreements_with_notebook_01"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

