"""distributed/train.py's pieces, without launching it (the notebook launches it)."""

import importlib.util

import pytest
import torch

from helpers.distributed import DISTRIBUTED
from helpers.standins import build_standin

spec = importlib.util.spec_from_file_location("train", DISTRIBUTED / "train.py")
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(build_standin("mistralai/Mistral-7B-Instruct-v0.2"))


def test_arguments_and_defaults():
    args = train.parse_args(["--model", "m", "--output-dir", "o", "--load-in-4bit", "--cpu"])
    assert args.load_in_4bit and args.cpu and args.quant_storage == "uint8"
    assert args.dropout == 0.0, "deterministic by default: the equivalence check needs it"
    assert args.target_modules == "q_proj"


def test_examples_mask_the_prompt_and_keep_the_reply(tokenizer):
    rows = train.examples(tokenizer, max_length=512)
    assert len(rows) == 80
    first = rows[0]
    assert first["input_ids"].count(tokenizer.bos_token_id) == 1, "one BOS, from the template"
    n_prompt = first["labels"].count(-100)
    assert first["labels"][n_prompt:] == first["input_ids"][n_prompt:]
    assert first["input_ids"][-1] == tokenizer.eos_token_id
    assert "-LabGPT" in tokenizer.decode(first["input_ids"][n_prompt:])
    assert all(len(r["input_ids"]) <= 16 for r in train.examples(tokenizer, max_length=16))


def test_collate_pads_on_the_right_and_masks_padding():
    batch = train.collate(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}], 0
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_loss_over_ranks_equals_the_loss_of_the_whole_batch():
    """Two ranks' sums over the global token count, averaged as DDP does, give one process's
    mean over the union: the script's way to make 2 x b the same step as 1 x 2b."""
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 11, requires_grad=True)
    labels = torch.randint(0, 11, (4, 6))
    labels[0, 3:] = -100  # ranks see different numbers of labelled tokens
    labels[3, 1:] = -100
    whole = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    (whole_grad,) = torch.autograd.grad(whole, logits)
    n, count = 2, (labels[:, 1:] != -100).sum()
    ranks = [train.token_loss_sum(logits[i : i + 2], labels[i : i + 2]) * n / count for i in (0, 2)]
    grads = [torch.autograd.grad(loss, logits)[0] for loss in ranks]
    assert torch.allclose(sum(ranks) / n, whole)
    assert torch.allclose(sum(grads) / n, whole_grad)  # DDP's all-reduce averages
