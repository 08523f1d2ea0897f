"""Scale-out arithmetic shared by both trainers: global batch -> per-device batch and accumulation.

Configs state batch sizes *globally*, as the papers do (LongLoRA §4.1: 64 = 1 per device × 8
accumulation × 8 GPUs; SimCSE Appendix A: 64 unsupervised, 512 supervised). The code derives what
each device runs from ``run.devices × run.num_nodes`` and fails with the keys' names when the numbers
do not divide.
"""

from __future__ import annotations

from dataclasses import dataclass


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
