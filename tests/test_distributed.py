import json
import os

import pytest
import torch

from helpers import distributed
from helpers.memory import measure_memory


def test_every_strategy_has_its_config_file():
    for strategy in distributed.STRATEGIES:
        assert distributed.config_file(strategy).is_file()
    with pytest.raises(ValueError, match="strategy must be one of"):
        distributed.config_file("horovod")


def test_launch_command_runs_the_one_script_with_the_config_file():
    command = distributed.launch_command(
        "fsdp",
        {"model": "m", "per_device_batch_size": 2, "cpu": True, "load_in_4bit": False},
        num_processes=2,
    )
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1].endswith("distributed/fsdp.yaml")
    assert command[command.index("--num_processes") + 1] == "2"
    script = command.index(str(distributed.DISTRIBUTED / "train.py"))
    assert command[script + 1 :] == ["--model", "m", "--per-device-batch-size", "2", "--cpu"]
    assert "accelerate.commands.launch" in distributed.shell(command)


@pytest.mark.parametrize(
    "strategy", ["deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload"]
)
def test_deepspeed_configs_parse_and_accelerate_builds_their_plugin(strategy):
    """No GPU here: the configs are checked by Accelerate's launcher and DeepSpeed's schema."""
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    plugin = distributed.plugin_from_config(strategy)
    assert isinstance(plugin, DeepSpeedPlugin)
    assert plugin.zero_stage == distributed.ZERO_STAGE[strategy]
    zero = DeepSpeedZeroConfig(**plugin.deepspeed_config["zero_optimization"])
    assert zero.stage == distributed.ZERO_STAGE[strategy]
    offload = "offload" in strategy
    assert (
        zero.offload_optimizer is not None and zero.offload_optimizer.device == "cpu"
    ) == offload
    assert (zero.offload_param is not None and zero.offload_param.device == "cpu") == offload


def test_fsdp_config_builds_a_full_shard_fsdp2_plugin():
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = distributed.plugin_from_config("fsdp")
    assert isinstance(plugin, FullyShardedDataParallelPlugin)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True


def test_ddp_and_single_need_no_plugin():
    assert distributed.plugin_from_config("ddp") is None
    assert distributed.plugin_from_config("single") is None
    env = distributed.launch_environment("ddp")
    assert "ACCELERATE_USE_FSDP" not in env and "ACCELERATE_USE_DEEPSPEED" not in env


def test_fsdp_on_cpu_ranks_changes_nothing_without_fsdp(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert distributed.fsdp_on_cpu_ranks(object()) is False


def _tiny_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model(torch.randn(3, 8)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_local_memory_is_the_accountant_on_ordinary_tensors():
    model, optimizer = _tiny_step()
    assert distributed.local_memory(model, optimizer) == measure_memory(model, optimizer)


def test_local_memory_reads_the_local_shards_of_fsdp2(monkeypatch, tmp_path):
    """One gloo process: FSDP2 turns every tensor into a DTensor the accountant cannot read."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        plain, plain_optimizer = _tiny_step()
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        model[0].weight.requires_grad_(False)
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
        model(torch.randn(3, 8)).sum().backward()
        optimizer.step()
        assert type(next(model.parameters())).__name__ == "DTensor"
        assert distributed.local_memory(model, optimizer) == measure_memory(plain, plain_optimizer)
    finally:
        dist.destroy_process_group()


def test_reports_are_read_in_rank_order(tmp_path):
    for rank in (1, 0, 10):
        (tmp_path / f"rank{rank}.json").write_text(json.dumps({"rank": rank}))
    assert [r["rank"] for r in distributed.read_reports(tmp_path)] == [0, 1, 10]
    with pytest.raises(FileNotFoundError, match="did the launch fail"):
        distributed.read_reports(tmp_path / "empty")


def test_loss_comparison():
    assert distributed.largest_loss_gap([1.0, 2.0], [1.0, 2.5]) == 0.5
    assert distributed.same_losses([1.0, 2.0], [1.0, 2.0 + 1e-7], 1e-6)
    assert not distributed.same_losses([1.0, float("nan")], [1.0, float("nan")], 1.0)
    with pytest.raises(ValueError, match="logged 1 and 2"):
        distributed.largest_loss_gap([1.0], [1.0, 2.0])


def test_building_a_plugin_leaves_the_environment_as_it_was():
    before = dict(os.environ)
    distributed.plugin_from_config("deepspeed_zero3")
    distributed.plugin_from_config("fsdp")
    assert dict(os.environ) == before


def test_local_memory_finds_the_quantization_state_fsdp_leaves_on_the_layer():
    """FSDP replaces a 4-bit weight by a shard without ``quant_state``; the layer keeps it."""
    import bitsandbytes as bnb

    layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4")
    layer.load_state_dict(torch.nn.Linear(64, 64).state_dict())
    layer = layer.to("cpu")  # quantizes
    expected = measure_memory(layer)["quantization_constants"]
    assert expected > 0
    state = layer.weight.quant_state
    layer.weight = torch.nn.Parameter(layer.weight.data.clone(), requires_grad=False)
    layer.quant_state = state  # as bitsandbytes keeps it for FSDP
    assert measure_memory(layer)["quantization_constants"] == 0  # the accountant alone misses it
    assert distributed.local_memory(layer)["quantization_constants"] == expected
