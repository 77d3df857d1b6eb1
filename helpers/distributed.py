"""Plumbing of notebook 08: launch the course's training script and read what it wrote.

The lesson (``accelerate launch``, the config files, the training loop) is in
``distributed/``; this module only measures and compares.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from helpers.memory import measure_memory

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTED = ROOT / "distributed"
STRATEGIES = (
    "single",
    "ddp",
    "fsdp",
    "deepspeed_zero2",
    "deepspeed_zero3",
    "deepspeed_zero3_offload",
)
# What each config file shards, as a ZeRO stage (helpers.memory.shard_estimate).
ZERO_STAGE = {
    "single": 0,
    "ddp": 0,
    "fsdp": 3,
    "deepspeed_zero2": 2,
    "deepspeed_zero3": 3,
    "deepspeed_zero3_offload": 3,
}


def config_file(strategy: str) -> Path:
    """The Accelerate config file of ``strategy`` (one of :data:`STRATEGIES`)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
    return DISTRIBUTED / f"{strategy}.yaml"


def launch_command(
    strategy: str,
    script_args: dict[str, Any],
    num_processes: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``accelerate launch`` command that runs ``distributed/train.py`` with a config file.

    Args:
        strategy: which config file (:data:`STRATEGIES`).
        script_args: the script's arguments, ``{"per_device_batch_size": 2}`` becoming
            ``--per-device-batch-size 2``; ``True`` gives a bare flag, ``False`` or ``None``
            leaves it out.
        num_processes: overrides the config file's ``num_processes``.
        extra: more ``accelerate launch`` options, before the script (e.g. ``["--cpu"]``).
    """
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    command += ["--config_file", str(config_file(strategy))]
    if num_processes is not None:
        command += ["--num_processes", str(num_processes)]
    command += [*extra, str(DISTRIBUTED / "train.py")]
    for key, value in script_args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not False and value is not None:
            command += [flag, str(value)]
    return command


def shell(command: Sequence[str]) -> str:
    """``command`` as one line a learner can paste into a terminal."""
    return " ".join(shlex.quote(part) for part in command)


def fsdp_on_cpu_ranks(accelerator: Any) -> bool:
    """Let Accelerate's FSDP run on CPU processes (gloo), as it does on GPUs; return if it did.

    ``accelerate launch --config_file distributed/fsdp.yaml`` tells the script to use FSDP
    (``ACCELERATE_USE_FSDP``), but Accelerate 1.15 switches it on only for accelerator ranks
    (``AcceleratorState.__init__`` lists ``MULTI_GPU``, ``MULTI_XPU``, ... and not
    ``MULTI_CPU``): two CPU processes would silently run plain data parallelism. PyTorch's
    FSDP2 itself shards over gloo, so SMALL turns it on here, with the plugin Accelerate
    builds from the same config. On GPU ranks, or without FSDP, this changes nothing.
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if not wanted or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return False
    state = accelerator.state
    state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the launch's FSDP_* settings
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True


def _local(t: torch.Tensor | None) -> torch.Tensor | None:
    """This rank's part of a tensor: the local shard of a DTensor (FSDP2), else the tensor."""
    if t is None:
        return None
    to_local = getattr(t, "to_local", None)
    return t.detach().to_local() if callable(to_local) else t.detach()


class _LocalView(torch.nn.Module):
    """Something :func:`helpers.memory.measure_memory` can read: (name, local tensor) pairs."""

    def __init__(self, pairs: list[tuple[str, torch.Tensor]]):
        super().__init__()
        self._pairs = pairs

    def named_parameters(self, *args, **kwargs):  # noqa: ARG002 (same signature as Module's)
        return iter(self._pairs)


def local_memory(model: torch.nn.Module, optimizer: Any | None = None) -> dict[str, int]:
    """Notebook 01's accountant on this rank's own tensors, by component.

    Under FSDP2 every parameter, gradient and optimizer state is a ``DTensor`` whose local
    shard is what this rank holds; the accountant reads storages, so it is given the local
    shards (views of the same memory, nothing copied). Under DDP, or on one process, the
    tensors are ordinary and this is :func:`helpers.memory.measure_memory` itself.

    Returns:
        the accountant's ``weights``, ``quantization_constants``, ``adapter``,
        ``gradients``, ``optimizer_states`` and ``total``, in bytes.
    """
    # bitsandbytes keeps a 4-bit weight's quantization state on the weight, and a copy on
    # its layer (which FSDP keeps when it replaces the weight by a DTensor shard).
    layer_states = {
        id(module.weight): module.quant_state
        for module in model.modules()
        if getattr(module, "quant_state", None) is not None
        and isinstance(getattr(module, "weight", None), torch.Tensor)
    }
    local: dict[int, torch.Tensor] = {}
    pairs = []
    for name, param in model.named_parameters():
        view = _local(param)
        state = getattr(param, "quant_state", None) or layer_states.get(id(param))
        if state is not None:
            view.quant_state = state
        if param.grad is not None:
            view.grad = _local(param.grad)
        local[id(param)] = view
        pairs.append((name, view))
    shim = None
    if optimizer is not None:
        groups = [
            {"params": [local.get(id(p), _local(p)) for p in group["params"]]}
            for group in optimizer.param_groups
        ]
        state = {
            local.get(id(p), _local(p)): {
                k: _local(v) if torch.is_tensor(v) else v for k, v in s.items()
            }
            for p, s in optimizer.state.items()
        }
        shim = SimpleNamespace(param_groups=groups, state=state)
    out = measure_memory(_LocalView(pairs), shim)
    out.pop("peak_allocated", None)
    return out


def read_reports(output_dir: str | Path) -> list[dict[str, Any]]:
    """The ``rank{R}.json`` reports the training script wrote, in rank order."""
    paths = sorted(Path(output_dir).glob("rank*.json"), key=lambda p: int(p.stem[4:]))
    if not paths:
        raise FileNotFoundError(f"no rank*.json in {output_dir}: did the launch fail?")
    return [json.loads(p.read_text()) for p in paths]


def largest_loss_gap(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest absolute difference between two runs' losses, step by step."""
    if len(a) != len(b):
        raise ValueError(f"the runs logged {len(a)} and {len(b)} steps")
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def same_losses(a: Sequence[float], b: Sequence[float], tolerance: float) -> bool:
    """Whether two runs' losses agree at every step to ``tolerance`` (absolute)."""
    return largest_loss_gap(a, b) <= tolerance and not any(map(math.isnan, [*a, *b]))


def launch_environment(strategy: str) -> dict[str, str]:
    """The environment ``accelerate launch --config_file <strategy>.yaml`` gives the script.

    Runs Accelerate's own parsing and checks of the config file
    (``accelerate.commands.launch._validate_launch_command``) and its environment builders,
    without starting a process: no GPU is needed.
    """
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    argv = ["--config_file", str(config_file(strategy)), str(DISTRIBUTED / "train.py")]
    args, defaults, mixed_precision_from_config = _validate_launch_command(
        launch_command_parser().parse_args(argv)
    )
    if args.use_deepspeed:  # as accelerate.commands.launch.launch_command does
        fields = list(defaults.deepspeed_config) + (
            ["mixed_precision"] if mixed_precision_from_config else []
        )
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return prepare_deepspeed_cmd_env(args)[1]
    if args.multi_gpu or args.use_fsdp:
        return prepare_multi_gpu_env(args)
    return {}


def plugin_from_config(strategy: str) -> Any:
    """The plugin Accelerate builds in the script from a config file, built here without a GPU.

    Returns a ``DeepSpeedPlugin`` (with its DeepSpeed config), a
    ``FullyShardedDataParallelPlugin``, or ``None`` for DDP and a single process (no plugin).
    """
    from unittest import mock

    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    env = launch_environment(strategy)
    with mock.patch.dict(os.environ, env):
        if env.get("ACCELERATE_USE_DEEPSPEED") == "true":
            return DeepSpeedPlugin()
        if env.get("ACCELERATE_USE_FSDP") == "true":
            return FullyShardedDataParallelPlugin()
    return None
