"""Scale-out shared by both trainers: global batch -> per-device batch and accumulation; the strategy.

Configs state batch sizes *globally*, as the papers do (LongLoRA §4.1: 64 = 1 per device × 8
accumulation × 8 GPUs; SimCSE Appendix A: 64 unsupervised, 512 supervised). The code derives what
each device runs from ``run.devices × run.num_nodes`` and fails with the keys' names when the numbers
do not divide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BatchSplitError(ValueError):
    """A global batch does not divide over devices × nodes (× micro batch); the message names the keys."""


@dataclass(frozen=True)
class BatchSplit:
    """How one optimizer step's global batch is laid out.

    Attributes:
        global_batch: sequences (or sentence pairs) per optimizer step, over all devices.
        world_size: devices × nodes.
        per_device: micro batch that each device runs per forward pass.
        accumulation: forward passes per optimizer step on each device.
    """

    global_batch: int
    world_size: int
    per_device: int
    accumulation: int


def split_global_batch(
    global_batch: int,
    world_size: int,
    *,
    key: str,
    micro_batch: int | None = None,
    micro_key: str = "",
) -> BatchSplit:
    """Split ``global_batch`` over ``world_size`` ranks.

    Args:
        global_batch: the configured global batch (``key`` names it in errors).
        world_size: ``run.devices × run.num_nodes``.
        key: dotted config key of the global batch, e.g. ``longlora.train.global_batch_size``.
        micro_batch: per-device micro batch; ``None`` means no accumulation (one pass per step, as
            SimCSE's in-batch negatives require).
        micro_key: dotted key of ``micro_batch`` for error messages.

    Raises:
        BatchSplitError: when ``global_batch`` is not a multiple of ``world_size`` (× ``micro_batch``).
    """
    if world_size < 1:
        raise BatchSplitError(f"run.devices × run.num_nodes must be ≥ 1, got {world_size}")
    if global_batch < 1:
        raise BatchSplitError(f"{key} must be ≥ 1, got {global_batch}")
    if global_batch % world_size:
        raise BatchSplitError(
            f"{key}={global_batch} does not divide over run.devices × run.num_nodes = {world_size}"
        )
    per_rank = global_batch // world_size
    if micro_batch is None:
        return BatchSplit(global_batch, world_size, per_rank, 1)
    if micro_batch < 1 or per_rank % micro_batch:
        raise BatchSplitError(
            f"{key}={global_batch} over run.devices × run.num_nodes = {world_size} gives {per_rank} per device, "
            f"which {micro_key or 'the micro batch'}={micro_batch} does not divide"
        )
    return BatchSplit(global_batch, world_size, micro_batch, per_rank // micro_batch)


STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3")


def resolve_strategy(name: str, adapter_mode: str, world_size: int) -> str:
    """``run.strategy`` with ``auto`` resolved as the reference chooses: one device needs none; LoRA/LoRA+
    replicate the (frozen) model with DDP (the reference's ZeRO-2 runs keep full weights on every GPU); full
    fine-tuning shards parameters, gradients and optimizer state with FSDP (the reference's ZeRO-3 config).
    """
    if name != "auto":
        return name
    if world_size <= 1:
        return "auto"
    return "fsdp" if adapter_mode == "full" else "ddp"


def build_strategy(name: str, layer_cls: tuple[type, ...] = ()) -> Any:
    """The Lightning strategy for ``run.strategy``.

    ``ddp`` replicates the model (LoRA/LoRA+, as the reference's ZeRO-2 runs); ``fsdp`` shards parameters,
    gradients and optimizer state per decoder layer (full fine-tuning of 7B, as the reference's ZeRO-3 config);
    ``deepspeed_stage_2``/``_3`` are DeepSpeed's ZeRO (the optional ``deepspeed`` extra).

    Raises:
        ValueError: naming ``run.strategy`` for an unknown name, or when deepspeed is not installed.
    """
    if name not in STRATEGIES:
        raise ValueError(f"run.strategy={name!r}; expected one of {STRATEGIES}")
    if name == "auto":
        return "auto"
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=False)
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(auto_wrap_policy=set(layer_cls) or None, state_dict_type="full",
                            sharding_strategy="FULL_SHARD", use_orig_params=True)
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise ValueError(f"run.strategy={name} needs DeepSpeed: pip install -e '.[deepspeed]'")
    return name
