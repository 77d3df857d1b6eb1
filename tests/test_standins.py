import json
from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from trl import SFTConfig, SFTTrainer

from helpers import architectures as arch
from helpers import standins


@pytest.mark.parametrize("model_id", sorted(standins.STANDINS))
def test_standins_share_the_real_architecture(model_id):
    path = standins.build_standin(model_id)
    tiny = AutoModelForCausalLM.from_pretrained(path)
    real = arch.meta_model(model_id)
    assert type(tiny) is type(real)
    assert arch.linear_module_names(tiny) == arch.linear_module_names(real)
    tiny_names = {n.split(".", 3)[-1] for n, _ in tiny.named_parameters() if ".layers.0." in n}
    real_names = {n.split(".", 3)[-1] for n, _ in real.named_parameters() if ".layers.0." in n}
    assert tiny_names == real_names  # a layer has the same modules and parameters
    assert json.loads((Path(path) / "standin.json").read_text())["stands_in_for"] == model_id


def test_standins_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    torch.manual_seed(42)  # as a notebook's preamble does before it builds a stand-in
    state = torch.get_rng_state()
    path = standins.build_standin(arch.PHI_1_5)
    assert path.startswith(str(tmp_path))
    # Building leaves the caller's random state as it was, as finding it cached does: a
    # notebook's first run draws the same LoRA weights and batches as its later runs.
    assert torch.equal(torch.get_rng_state(), state)
    stamp = (Path(path) / "config.json").stat().st_mtime_ns

    def no_work(*args, **kwargs):
        raise AssertionError("a cached stand-in was built again")

    monkeypatch.setattr(standins, "train_tokenizer", no_work)
    monkeypatch.setattr(standins, "pretrain", no_work)
    assert standins.build_standin(arch.PHI_1_5) == path  # the second call does no work
    assert (Path(path) / "config.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    card = json.loads((Path(path) / "standin.json").read_text())
    first, last = card["pretraining_loss"]
    assert last < first / 2  # the few seconds of pre-training taught it something


def test_mistral_tokenizer_behaves_like_mistrals():
    tok = AutoTokenizer.from_pretrained(standins.build_standin(arch.MISTRAL_7B_INSTRUCT))
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids(["<0x00>", "<0xFF>"]) == [3, 258]  # bytes, as in Mistral's
    assert len(tok) == standins.TINY_VOCAB
    ids = tok("Great content, thank you!")["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "Great content, thank you!"
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert tok.apply_chat_template(chat, tokenize=False) == "<s> [INST] Hi [/INST] Hello</s>"
    # Byte fallback: text the tokenizer never saw still round-trips.
    assert tok.decode(tok("naïve 🤖")["input_ids"], skip_special_tokens=True) == "naïve 🤖"


def test_a_new_mistral_template_builds_a_new_standin(monkeypatch):
    """The template is saved with the tokenizer, so it is part of the Mistral stand-in's key."""
    texts = ["Thanks for the video!"]
    mistral, phi = standins._key(arch.MISTRAL_7B_INSTRUCT, texts), standins._key(arch.PHI_2, texts)
    monkeypatch.setattr(standins, "MISTRAL_CHAT_TEMPLATE", "{{ messages[0]['content'] }}")
    assert standins._key(arch.MISTRAL_7B_INSTRUCT, texts) != mistral
    assert standins._key(arch.PHI_2, texts) == phi  # the Phi stand-ins are not rebuilt


def test_standins_are_pretrained_on_turns_that_stop():
    """Mistral's pre-training holds turns of its own template, each answer closed by </s>;
    Phi-2's holds its QA format closed by <|endoftext|>; phi-1.5's is plain text."""
    lines = ["What is LoRA?", "A low-rank update.", "Why?"]
    tok = AutoTokenizer.from_pretrained(standins.build_standin(arch.MISTRAL_7B_INSTRUCT))
    stream = standins.pretraining_stream(arch.MISTRAL_7B_INSTRUCT, tok, lines).tolist()
    turn = tok.apply_chat_template([{"role": "user", "content": lines[0]},
                                    {"role": "assistant", "content": lines[1]}])["input_ids"]
    assert any(stream[i : i + len(turn)] == turn for i in range(len(stream)))
    assert stream.count(tok.eos_token_id) == 1 + 2  # the plain text's end, then two turns
    phi = AutoTokenizer.from_pretrained(standins.build_standin(arch.PHI_2))
    text = phi.decode(standins.pretraining_stream(arch.PHI_2, phi, lines))
    assert text.endswith("Instruct: A low-rank update.\nOutput: Why?<|endoftext|>")
    assert text.count("<|endoftext|>") == 1 + 2
    plain = standins.pretraining_stream(arch.PHI_1_5, phi, lines).tolist()
    assert plain.count(phi.eos_token_id) == 1
    generic = standins.corpus_texts(include_datasets=False)
    assert standins.pretraining_lines(arch.PHI_1_5) == generic
    for model_id in (arch.MISTRAL_7B_INSTRUCT, arch.PHI_2):  # the generic text, then the notes
        assert standins.pretraining_lines(model_id)[: len(generic)] == generic
        assert len(standins.pretraining_lines(model_id)) > 2 * len(generic)


def test_phi_tokenizer_behaves_like_phis():
    tok = AutoTokenizer.from_pretrained(standins.build_standin(arch.PHI_2))
    assert tok.bos_token == tok.eos_token == "<|endoftext|>"
    ids = tok("import numpy as np")["input_ids"]
    assert tok.bos_token_id not in ids  # like CodeGen's tokenizer, nothing is added in front
    assert tok.decode(ids) == "import numpy as np"


def test_unknown_model_has_no_standin():
    with pytest.raises(KeyError, match="no stand-in"):
        standins.standin_path("gpt2")


BNB = BitsAndBytesConfig(
    load_in_4bit=True,
    bnb_4bit_quant_type="nf4",
    bnb_4bit_use_double_quant=True,
    bnb_4bit_compute_dtype=torch.float16,
)


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory):
    """QLoRA on the tiny Mistral on CPU: 4-bit NF4 + double quant, paged 8-bit AdamW, fp16."""
    out = tmp_path_factory.mktemp("qlora")
    path = standins.build_standin(arch.MISTRAL_7B_INSTRUCT)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=BNB)
    model = prepare_model_for_kbit_training(model)
    lora = LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["q_proj", "v_proj"],
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Comment {i}: great video!"}],
            "completion": [{"role": "assistant", "content": "Thank you so much! -ML Course"}],
        }
        for i in range(16)
    ]
    args = SFTConfig(
        output_dir=str(out / "run"),
        per_device_train_batch_size=4,
        num_train_epochs=3,
        learning_rate=1e-2,
        optim="paged_adamw_8bit",
        fp16=True,
        bf16=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        max_length=64,
        seed=0,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(rows[:4]),
        processing_class=tok,
    )
    before = trainer.evaluate()["eval_loss"]  # eval mode first: bnb repacks for CPU inference
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    model.save_pretrained(out / "adapter")
    return {
        "trainer": trainer,
        "model": model,
        "tok": tok,
        "before": before,
        "after": after,
        "adapter": out / "adapter",
        "path": path,
    }


def test_qlora_layers_are_4bit_nf4_with_double_quant(qlora_run):
    q_proj = qlora_run["model"].base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    state = q_proj.base_layer.weight.quant_state
    assert state.quant_type == "nf4" and state.blocksize == 64
    assert qlora_run["trainer"].args.optim == "paged_adamw_8bit" and qlora_run["trainer"].args.fp16
    optimizer = qlora_run["trainer"].optimizer.optimizer  # transformers' "paged_adamw_8bit"
    assert isinstance(optimizer, bnb.optim.AdamW) and optimizer.is_paged
    assert optimizer.args.optim_bits == 8


def test_qlora_training_lowers_the_loss(qlora_run):
    assert qlora_run["after"] < 0.8 * qlora_run["before"]


def test_adapter_saves_small_and_reloads_with_the_same_logits(qlora_run):
    adapter = qlora_run["adapter"]
    assert (adapter / "adapter_config.json").exists()
    assert (adapter / "adapter_model.safetensors").stat().st_size < 200_000
    tok, model = qlora_run["tok"], qlora_run["model"]
    batch = tok(["[INST] Comment 99: great video! [/INST]"], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        trained = model(**batch).logits.float()
    base = AutoModelForCausalLM.from_pretrained(qlora_run["path"], quantization_config=BNB)
    reloaded = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        again = reloaded(**batch).logits.float()
    bare = base.get_base_model() if hasattr(base, "get_base_model") else base
    with torch.no_grad(), reloaded.disable_adapter():
        plain = bare(**batch).logits.float()
    effect = (plain - trained).abs().max()
    assert effect > 0.1  # the adapter changed the model
    # The reloaded adapter reproduces it: differences small next to what the adapter does (the
    # notebooks' criterion; the fp16 compute rounds a few logits differently), same predictions.
    assert (again - trained).abs().max() < 0.05 * effect
    assert (again.argmax(-1) == trained.argmax(-1)).float().mean() > 0.99
