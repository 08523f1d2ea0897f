"""S2-Attn registered with transformers' ``AttentionInterface`` under the name ``"s2_attn"``.

Only a model switched to ``"s2_attn"`` (``apply_attention``) uses it: registration adds a name to the global
mapping and patches no transformers class (the instance-level switch is ``set_attn_implementation``). The
settings live on ``model.config.s2_attn`` as a plain dict, so they survive ``save_pretrained``/``from_pretrained``.
Evaluation switches back to SDPA (``use_full_attention``), as LongLoRA §3.2 uses full attention at inference.

Padding: the name is also registered with ``AttentionMaskInterface`` using transformers' ``sdpa_mask``, so an
unpadded batch reaches the attention function with ``attention_mask=None`` and a padded one with a 4-D boolean
mask. Right padding is supported exactly (each sample attended alone on its valid tokens, with its own group
size); left padding, packed-sequence masks and any other custom mask raise a ``ValueError``. (Without the mask
registration transformers would drop the padding mask for an unknown implementation name.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import sdpa_mask

from repro.models.attention.s2attn import S2AttnConfig, s2_attention_tokens

S2_ATTN_NAME = "s2_attn"
CONFIG_KEY = "s2_attn"


def _right_padding_lengths(mask: Tensor, seq_len: int) -> Tensor | None:
    """Valid lengths (B,) from a 4-D mask of causal + right padding, None when nothing is padded.

    Raises:
        ValueError: the mask is not exactly causal & per-key right padding (left padding, packed sequences,
            custom patterns).
    """
    if mask.dim() != 4 or mask.shape[-2:] != (seq_len, seq_len):
        raise ValueError(f"s2_attn: expected a (B, 1, {seq_len}, {seq_len}) attention_mask, got {tuple(mask.shape)}")
    allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
    keys = allowed[:, 0, -1, :]  # (B, T): the last query sees every valid key under a causal mask
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=mask.device).tril()  # (T, T)
    if not torch.equal(allowed, (causal[None, None] & keys[:, None, None, :]).expand_as(allowed)):
        raise ValueError("s2_attn supports only causal attention with right padding; got an attention_mask with "
                         "another pattern (packed sequences or a custom mask). Use sdpa for it.")
    lengths = keys.sum(dim=-1)  # (B,)
    positions = torch.arange(seq_len, device=mask.device)
    if not torch.equal(keys, positions[None, :] < lengths[:, None]):
        raise ValueError("s2_attn supports right padding only; the attention_mask has left or inner padding. "
                         "Set tokenizer.padding_side='right'.")
    if bool((lengths == seq_len).all()):
        return None
    return lengths


def s2_attention_forward(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                         attention_mask: Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                         **kwargs: Any) -> tuple[Tensor, None]:
    """Attention function with the signature of transformers' ``sdpa_attention_forward``.

    Args:
        module: the attention layer; its ``config.s2_attn`` dict holds the settings, its ``layer_idx`` drives
            ``shift="layers"``.
        query: (B, H, T, D). key, value: (B, Hk, T, D).
        attention_mask: None or a 4-D mask (see the module docstring).
        dropout: attention dropout probability. scaling: softmax scale.

    Returns:
        (attn_output in (B, T, H, D), None).

    Raises:
        ValueError: generation with a KV cache (query length != key length), a missing ``config.s2_attn``,
            an unsupported mask or a sequence length the group size does not divide.
    """
    if kwargs.get("output_attentions", False):
        raise ValueError("s2_attn cannot return attention weights; use attn_implementation='eager'")
    if not getattr(module, "is_causal", True) or kwargs.get("is_causal") is False:
        raise ValueError("s2_attn is causal-only (LongLoRA §3.2); this attention layer is not causal")
    q_len, k_len = query.shape[2], key.shape[2]
    if q_len != k_len:
        raise ValueError(f"s2_attn got query length {q_len} != key length {k_len} (generation with a KV cache); "
                         f"S2-Attn is for training, call use_full_attention(model) before evaluating or generating")
    settings = getattr(module.config, CONFIG_KEY, None)
    if not isinstance(settings, dict):
        raise ValueError(f"model.config.{CONFIG_KEY} is missing; switch the model with apply_attention(model, cfg)")
    cfg = S2AttnConfig.from_dict(settings)
    lengths = None if attention_mask is None else _right_padding_lengths(attention_mask, q_len)
    out = s2_attention_tokens(query, key, value, cfg, layer_idx=getattr(module, "layer_idx", None),
                              scale=scaling, dropout=dropout, lengths=lengths)
    return out, None  # (B, T, H, D)


def register_s2_attention() -> None:
    """Register ``"s2_attn"`` with the attention and mask interfaces; calling it again is harmless."""
    AttentionInterface.register(S2_ATTN_NAME, s2_attention_forward)
    AttentionMaskInterface.register(S2_ATTN_NAME, sdpa_mask)


def _set_implementation(model: nn.Module, name: str) -> None:
    """Switch a transformers model (and its sub-models) to attention implementation ``name``."""
    if not hasattr(model, "set_attn_implementation"):
        raise TypeError(f"{type(model).__name__} has no set_attn_implementation; expected a transformers "
                        f"PreTrainedModel (or a peft model wrapping one)")
    model.set_attn_implementation(name)
    if model.config._attn_implementation != name:
        raise ValueError(f"{type(model).__name__} refused attn_implementation={name!r} "
                         f"(it does not dispatch through AttentionInterface)")


def _base_model(model: nn.Module) -> nn.Module:
    """Unwrap a peft model to the transformers model that owns ``set_attn_implementation``."""
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def apply_attention(model: nn.Module, cfg: S2AttnConfig | Mapping[str, Any] | None = None) -> nn.Module:
    """Use ``cfg`` for a model's attention: S2-Attn for pattern ``"s2"``, SDPA for ``"full"``.

    Args:
        model: a transformers model (or peft wrapper) whose attention dispatches through AttentionInterface.
        cfg: the pattern (a dict/DictConfig with the same keys is accepted); None restores the one stored on
            ``model.config.s2_attn`` (e.g. after
            :func:`use_full_attention` or ``from_pretrained``).

    Returns:
        The same model, switched in place.
    """
    base = _base_model(model)
    if cfg is None:
        stored = getattr(base.config, CONFIG_KEY, None)
        if not isinstance(stored, dict):
            raise ValueError(f"apply_attention(model) without cfg needs model.config.{CONFIG_KEY}; pass a cfg")
        cfg = S2AttnConfig.from_dict(stored)
    elif isinstance(cfg, Mapping):
        cfg = S2AttnConfig.from_dict(dict(cfg))
    setattr(base.config, CONFIG_KEY, cfg.to_dict())
    if cfg.pattern == "full":
        _set_implementation(base, "sdpa")
    else:
        register_s2_attention()
        _set_implementation(base, S2_ATTN_NAME)
    return model


def use_full_attention(model: nn.Module) -> nn.Module:
    """Switch to full causal SDPA (evaluation and generation, §3.2), keeping ``config.s2_attn`` for restoring."""
    _set_implementation(_base_model(model), "sdpa")
    return model
