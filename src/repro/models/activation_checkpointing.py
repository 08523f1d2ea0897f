"""Activation checkpointing for long-context training steps, one policy chosen by config.

The reference ``fine-tune.py`` checkpoints every decoder layer (``gradient_checkpointing=True``); that fits 32k on
one GPU but recomputes the whole forward. Policies (``longlora.train.activation_checkpointing``, the only key that
steers it; :data:`repro.schemas.ACTIVATION_CHECKPOINTING`):

* ``"none"``: no checkpointing (fastest, most memory; the default);
* ``"full"``: every decoder layer, non-reentrant (the reference's);
* ``"alternate"``: every other decoder layer (even indices), about half the recomputation for about half the
  activation savings.
"""

from __future__ import annotations

from torch import nn

from repro.schemas import ACTIVATION_CHECKPOINTING

POLICIES = ACTIVATION_CHECKPOINTING


def _base(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def _layers(base: nn.Module) -> list[nn.Module]:
    """Modules that transformers checkpoints (``GradientCheckpointingLayer``), in order."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in base.modules() if isinstance(m, GradientCheckpointingLayer)]


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Non-reentrant checkpointing of every layer; input grads are forced when the embedding is frozen (LoRA)."""
    base = _base(model)
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if not base.get_input_embeddings().weight.requires_grad:
        base.enable_input_require_grads()
    base.config.use_cache = False
    return model


def apply_checkpointing(model: nn.Module, policy: str) -> nn.Module:
    """Set the checkpointing policy of a (peft-wrapped) transformers model in place.

    Raises:
        ValueError: an unknown policy, naming ``longlora.train.activation_checkpointing``.
    """
    if policy not in POLICIES:
        raise ValueError(f"longlora.train.activation_checkpointing={policy!r}; expected one of {POLICIES}")
    base = _base(model)
    if policy == "none":
        if getattr(base, "is_activation_checkpointing", False):  # a model built without it is left untouched
            base.activation_checkpointing_disable()
        return model
    enable_gradient_checkpointing(model)
    if policy == "alternate":
        for i, layer in enumerate(_layers(base)):
            layer.gradient_checkpointing = i % 2 == 0
    return model


def checkpointed_layers(model: nn.Module) -> list[bool]:
    """Which checkpointable layers recompute in the backward pass."""
    return [bool(layer.gradient_checkpointing) for layer in _layers(_base(model))]
