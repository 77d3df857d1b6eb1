"""The course's one training script: a LoRA/QLoRA tune on one process or many.

The same file runs on one CPU, one GPU, or N GPUs (or N CPU processes); *how* the work is
spread is not in this file but in the Accelerate config file it is launched with:

    accelerate launch --config_file distributed/ddp.yaml distributed/train.py --model PATH ...

``single.yaml`` (one process), ``ddp.yaml`` (a full copy per process, gradients
all-reduced), ``fsdp.yaml`` (parameters, gradients and optimizer states sharded: ZeRO
stage 3), ``deepspeed_zero2.yaml``, ``deepspeed_zero3.yaml`` and
``deepspeed_zero3_offload.yaml`` (DeepSpeed's engine). ``accelerator.prepare`` wraps the
model, optimizer and data loader for whichever it is; the loop below does not change.

The data are notebook 04's comment/reply pairs (``data/youtube_comments``), rendered with
the model's chat template; the loss is on the reply tokens only. The loss of a step is the
sum over *all* ranks' reply tokens divided by their total count, so that N processes with
per-device batch b compute exactly the step one process with batch N*b computes.

Each rank writes ``rank{R}.json`` into ``--output-dir``: the loss of every step, the
seconds per step, and notebook 01's accountant (``helpers.memory.measure_memory``) on that
rank's shard of the model and optimizer after the last step. Rank 0 saves the adapter in
``adapter/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the course's helpers
from helpers.data import data_path, read_jsonl  # noqa: E402
from helpers.distributed import fsdp_on_cpu_ranks, local_memory  # noqa: E402
from helpers.mode import keep_4bit_cpu_layers_trainable  # noqa: E402
from helpers.training import keep_trainable_fp32  # noqa: E402

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="Hub id or local folder")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--steps", type=int, default=8, help="optimizer steps")
    p.add_argument("--per-device-batch-size", type=int, default=2)
    p.add_argument("--max-length", type=int, default=512, help="tokens per example, at most")
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--target-modules", default="q_proj", help="comma-separated")
    p.add_argument("--load-in-4bit", action="store_true", help="QLoRA: NF4 base weights")
    p.add_argument(
        "--quant-storage",
        default="uint8",
        choices=["uint8", *DTYPES],
        help="dtype bitsandbytes packs 4-bit weights into; FSDP shards only floating-point "
        "tensors, so give it float16 there (a T4 has no bf16)",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=list(DTYPES),
        help="the 4-bit layers' compute dtype, and what stays unquantized as loaded",
    )
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (0: deterministic)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--cpu",
        action="store_true",
        help="compute on CPU processes (gloo) even where a GPU is visible: SMALL's two ranks",
    )
    return p.parse_args(argv)


def load_model(args: argparse.Namespace, accelerator: Accelerator):
    """The base model (in 4-bit with ``--load-in-4bit``) with a LoRA adapter in fp32."""
    quantization = None
    if args.load_in_4bit:
        storage = torch.uint8 if args.quant_storage == "uint8" else DTYPES[args.quant_storage]
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=DTYPES[args.dtype],  # fp16 on a T4, fp32 on a CPU
            bnb_4bit_quant_storage=storage,
        )
    # Each process loads a whole copy onto its own device: DDP keeps it, FSDP and ZeRO-3
    # shard it in prepare(). A model whose 4-bit copy does not fit one GPU would need
    # rank-0-only loading (FSDP's cpu_ram_efficient_loading), which this script does not do.
    model = AutoModelForCausalLM.from_pretrained(
        args.model,
        quantization_config=quantization,
        dtype=DTYPES[args.dtype],
        device_map={"": accelerator.device} if args.load_in_4bit else None,
    )
    if args.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=args.gradient_checkpointing
        )
    elif args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.dropout,
        target_modules=args.target_modules.split(","),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    keep_trainable_fp32(model)  # the adapter in fp32, as in notebooks 04-06
    return model


def examples(tokenizer, max_length: int) -> list[dict[str, list[int]]]:
    """Notebook 04's pairs as token ids, with the prompt masked out of the labels."""
    rows = read_jsonl(data_path("youtube_comments", "train.jsonl"))
    out = []
    for row in rows:
        chat = [{"role": "user", "content": row["comment"]}]
        text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]  # the template has <s>
        reply = tokenizer(row["reply"], add_special_tokens=False)["input_ids"]
        ids = (prompt + reply + [tokenizer.eos_token_id])[:max_length]
        labels = ([-100] * len(prompt) + reply + [tokenizer.eos_token_id])[:max_length]
        out.append({"input_ids": ids, "labels": labels})
    return out


def collate(batch: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad on the right: padding is masked from attention and from the loss."""
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = (
            torch.tensor(b["input_ids"]),
            torch.tensor(b["labels"]),
            1,
        )
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy of every labelled token (next-token prediction)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=args.cpu)
    if args.cpu:  # as notebooks 04-06 do on a CPU (see helpers.mode); GPUs are not affected
        keep_4bit_cpu_layers_trainable()
    fsdp_on_cpu_ranks(accelerator)  # SMALL: Accelerate's FSDP on CPU ranks (see there)
    set_seed(args.seed)
    out_dir = Path(args.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    model = load_model(args, accelerator)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.learning_rate
    )
    # The same order on every run: no shuffling, so that rank r of N gets global batches
    # r, r+N, ... of size b, and step k of N ranks sees what batch k of size N*b holds.
    loader = DataLoader(
        examples(tokenizer, args.max_length),
        batch_size=args.per_device_batch_size,
        shuffle=False,
        drop_last=True,
        collate_fn=lambda batch: collate(batch, pad_id),
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    n = accelerator.num_processes
    accelerator.print(
        f"{accelerator.distributed_type.value}: {n} process(es), per-device batch "
        f"{args.per_device_batch_size} (global {n * args.per_device_batch_size}), "
        f"{args.steps} steps on {accelerator.device}"
    )

    model.train()
    losses, seconds = [], []
    batches = iter(loader)
    for step in range(args.steps):
        try:
            batch = next(batches)
        except StopIteration:  # the next epoch, in the same order
            batches = iter(loader)
            batch = next(batches)
        start = time.perf_counter()
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        local_sum = token_loss_sum(outputs.logits, batch["labels"])
        local_count = (batch["labels"][:, 1:] != -100).sum()
        # Every rank's reply tokens count: each rank divides its sum by the global count.
        # DDP, FSDP and ZeRO average gradients over ranks, hence the factor n.
        global_count = accelerator.reduce(local_count.to(accelerator.device), "sum")
        accelerator.backward(local_sum * n / global_count)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradients for the accountant
        global_sum = accelerator.reduce(local_sum.detach(), "sum")
        losses.append((global_sum / global_count).item())
        seconds.append(time.perf_counter() - start)
        accelerator.print(f"step {step + 1}: loss {losses[-1]:.6f} ({seconds[-1]:.2f} s)")

    memory = local_memory(model, optimizer)  # this rank's bytes, by component
    report = {
        "rank": accelerator.process_index,
        "num_processes": n,
        "distributed_type": accelerator.distributed_type.value,
        "per_device_batch_size": args.per_device_batch_size,
        "losses": losses,
        "seconds_per_step": seconds,
        "memory": memory,
        # global sizes (a sharded DTensor reports the whole tensor's numel)
        "trainable_tensor_sizes": [p.numel() for p in model.parameters() if p.requires_grad],
    }
    if torch.cuda.is_available():
        report["memory"]["peak_allocated"] = torch.cuda.max_memory_allocated()
    # The trained model's logits on the first example: every rank runs the forward pass
    # (a sharded model gathers its layers), rank 0 keeps them to check the saved adapter.
    model.eval()
    probe = collate(examples(tokenizer, args.max_length)[:1], pad_id)
    with torch.no_grad():
        logits = model(input_ids=probe["input_ids"].to(accelerator.device)).logits
    accelerator.wait_for_everyone()
    # The adapter: every rank takes part in gathering a sharded model; rank 0 writes it.
    unwrapped = accelerator.unwrap_model(model)
    state = accelerator.get_state_dict(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        unwrapped.save_pretrained(out_dir / "adapter", state_dict=state)
        torch.save(
            {"input_ids": probe["input_ids"], "logits": logits.float().cpu()},
            out_dir / "probe_logits.pt",
        )
    (out_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps(report, indent=1))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
