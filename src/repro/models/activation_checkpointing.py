"""Activation-checkpointing policies for long-context training steps, chosen by config.

The reference ``fine-tune.py`` checkpoints every decoder layer (``gradient_checkpointing=True``); that fits 32k on
one GPU but recomputes the whole forward. Policies (``longlora.train.checkpointing``):

* ``"model"``: leave the model as built (``longlora.model.gradient_checkpointing`` decides; the default);
* ``"none"``: no checkpointing (fastest, most memory);
* ``"full"``: every decoder layer, non-reentrant (the reference's);
* ``"alternate"``: every other decoder layer (even indices), about half the recomputation for about half the
  activation savings.
"""

from __future__ import annotations

from torch import nn

POLICIES = ("model", "none", "full", "alternate")


def _base(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def _layers(base: nn.Module) -> list[nn.Module]:
    """Modules that transformers checkpoints (``GradientCheckpointingLayer``), in order."""
    from transformers.modeling_layers import GradientCheckpointingLayer  # noqa: PLC0415

    return [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]


def apply_checkpointing(model: nn.Module, policy: str) -> nn.Module:
    """Set the checkpointing policy of a (peft-wrapped) transformers model in place.

    Raises:
        ValueError: an unknown policy.
    """
    if policy not in POLICIES:
        raise ValueError(f"longlora.train.checkpointing={policy!r}; expected one of {POLICIES}")
    if policy == "model":
        return model
    base = _base(model)
    if policy == "none":
        base.gradient_checkpointing_disable()
        return model
    from repro.models.longlora import enable_gradient_checkpointing  # noqa: PLC0415 (lazy: heavy imports)

    enable_gradient_checkpointing(model)
    if policy == "alternate":
        for i, layer in enumerate(_layers(base)):
            layer.gradient_checkpointing = i % 2 == 0
    return model


def checkpointed_layers(model: nn.Module) -> list[bool]:
    """Which checkpointable layers recompute in the backward pass."""
    return [bool(layer.gradient_checkpointing) for layer in _layers(_base(model))]
