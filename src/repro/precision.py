"""Mixed precision without frozen updates: fp32 master weights for what trains, bf16 for what does not.

The reference trains through DeepSpeed, whose bf16 mode keeps an fp32 master copy of every trainable
weight. Updating bf16 weights in place instead loses most small steps: an update below half a bf16 ulp
(2^-8 relative) rounds back to the old value, so at lr 2e-5 LoRA+'s norms and embeddings barely move
and LoRA+ degenerates into plain LoRA. Here trainable parameters are held in fp32 (autocast computes in
bf16 under ``bf16-mixed``), frozen base weights may stay bf16, and LoRA is merged in fp32 before the
merged model is cast to the dtype it is saved in.
"""

from __future__ import annotations

import torch


def upcast_trainable(model: torch.nn.Module) -> int:
    """Cast every trainable parameter to fp32 in place (frozen ones keep their dtype); returns how many moved."""
    moved = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
            moved += 1
    return moved


def check_trainable_fp32(model: torch.nn.Module) -> None:
    """Raise when a trainable parameter is not fp32 (its optimizer updates would be rounded away)."""
    bad = [n for n, p in model.named_parameters() if p.requires_grad and p.dtype != torch.float32]
    if bad:
        raise TypeError(f"trainable parameters must be fp32 master weights; {len(bad)} are not, e.g. {bad[:3]}")


def merge_in_fp32(model: torch.nn.Module, save_dtype: torch.dtype) -> torch.nn.Module:
    """Merge LoRA into the base weights in fp32, then cast the plain model to ``save_dtype``.

    Merging straight into bf16 weights rounds the (small) LoRA delta ``B·A·alpha/r`` to the weight's bf16
    grid; merging in fp32 keeps it exactly up to the single final cast.
    """
    model = model.float()
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    return merged.to(save_dtype)
