"""Decisions every rank takes together (the divergence guards of the LongLoRA and SimCSE modules)."""

from __future__ import annotations

import lightning as L


def any_rank(module: L.LightningModule, flag: bool) -> bool:
    """Whether ``flag`` holds on any rank, so every rank stops together instead of hanging in a collective.

    Without a trainer, or on one device, it is ``flag`` itself.
    """
    trainer = getattr(module, "_trainer", None)
    if trainer is None or trainer.world_size == 1:
        return flag
    return bool(trainer.strategy.reduce_boolean_decision(flag, all=False))
