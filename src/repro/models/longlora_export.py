"""What a LongLoRA run leaves on disk: the LoRA adapter, the trainable extras and the merged model.

The reference repository stores a LoRA+ run as a peft adapter (``adapter_model.bin`` +
``adapter_config.json``) plus ``trainable_params.bin``: a ``torch.save`` dict of the embedding and norm
weights under their *base-model* names (``get_trainable_weights.py`` strips the 17-character
``base_model.model.`` prefix), which ``merge_lora_weights_and_save_hf_model.py`` and ``eval.py`` load
into the base model with ``load_state_dict(..., strict=False)`` before wrapping it with peft.
:func:`save_trained` writes that layout (and the same extras as safetensors); :func:`load_trained` reads
ours and the reference's released folders alike; :func:`export_merged` writes the plain Hugging Face
folder the released models are (``merge_lora_weights_and_save_hf_model.py``). The model building side is
:mod:`repro.models.longlora`; this module does not import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

EXTRAS_FILE = "trainable_extras.safetensors"
REFERENCE_EXTRAS_FILE = "trainable_params.bin"


def _is_peft(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a peft wrapper."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def save_trained(model: torch.nn.Module, out_dir: str | Path) -> Path:
    """Save what was trained: the LoRA adapter plus the trainable extras, or the full model.

    Mirrors the reference repository, which stores the adapter and a separate file of the trainable embedding and
    norm weights. Extras are written under their base-model parameter names both to
    ``trainable_extras.safetensors`` and, in the reference's layout, to ``trainable_params.bin``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    if not _is_peft(model):
        return out
    extras = {name: p.detach().to("cpu").contiguous()
              for name, p in model.get_base_model().named_parameters() if p.requires_grad and "lora_" not in name}
    if extras:
        save_file(extras, str(out / EXTRAS_FILE))
        torch.save(extras, out / REFERENCE_EXTRAS_FILE)
    return out


def read_extras(folder: Path) -> dict[str, torch.Tensor] | None:
    """The trainable extras of a saved folder: ours (safetensors) or the reference's ``trainable_params.bin``."""
    if (folder / EXTRAS_FILE).is_file():
        return load_file(str(folder / EXTRAS_FILE))
    if (folder / REFERENCE_EXTRAS_FILE).is_file():
        return torch.load(folder / REFERENCE_EXTRAS_FILE, map_location="cpu", weights_only=True)
    return None


def load_trained(base_model: PreTrainedModel, trained_dir: str | Path, is_trainable: bool = False) -> torch.nn.Module:
    """Rebuild a LoRA/LoRA+ model on a fresh base loaded with the same PI factor.

    Reads folders written by :func:`save_trained` and the reference's released layout (adapter +
    ``trainable_params.bin``). The extras are copied into the base first (as eval.py's ``load_state_dict``
    does, but an unknown name is an error here instead of being skipped), then peft loads the adapter;
    ``is_trainable`` keeps both trainable.
    """
    folder = Path(trained_dir)
    if not (folder / "adapter_config.json").is_file():
        raise FileNotFoundError(f"no adapter_config.json in {folder}; a full fine-tune loads with from_pretrained")
    from peft import PeftModel

    extras = read_extras(folder)
    if extras is not None:
        params = dict(base_model.named_parameters())
        missing = sorted(set(extras) - set(params))
        if missing:
            raise KeyError(f"trainable extras in {folder} hold parameters the base model lacks: {missing[:5]}")
        with torch.no_grad():
            for name, value in extras.items():
                params[name].copy_(value.to(params[name].dtype))
    model = PeftModel.from_pretrained(base_model, folder, is_trainable=is_trainable)
    if is_trainable and extras is not None:
        params = dict(model.get_base_model().named_parameters())
        for name in extras:
            params[name].requires_grad_(True)
    return model


def export_merged(model: torch.nn.Module, out_dir: str | Path, tokenizer: Any | None = None) -> Path:
    """Merge LoRA into the weights, restore full attention and save a plain HF folder (PI scaling kept).

    The result loads with ``AutoModelForCausalLM.from_pretrained`` and no peft or S2-Attn code, as the released
    LongLoRA models do (the reference repository's ``merge_lora_weights_and_save_hf_model.py``).
    """
    from repro.models.attention.registry import use_full_attention

    out = Path(out_dir)
    merged = model.merge_and_unload() if _is_peft(model) else model
    use_full_attention(merged)
    merged.config._attn_implementation = "sdpa"
    for key in ("s2_attn", "s2attn"):
        if hasattr(merged.config, key):
            delattr(merged.config, key)
    merged.config.use_cache = True
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
