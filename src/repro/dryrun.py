"""Dry runs of the train stages: the real model shape on the meta device, the batch layout, a memory estimate.

``python -m pipeline.train run.dry_run=true profile=paper`` (or ``-S run.dry_run=true`` under DVC) composes
the profile, builds the model with its adapter on the ``meta`` device (no weights are read or allocated, so
Llama-2-7B takes a second on a laptop), and prints what an 8-GPU job would run: parameters, per-device
batch, accumulation, tokens per optimizer step, strategy and an estimate of memory per GPU. Every
mismatch a dry run can see (batch that does not divide, unknown strategy, attention group that does not
divide the context) fails here, before any data or weights are touched.

The memory estimate counts weights (frozen in ``longlora.model.dtype``, trainable as fp32 master weights),
gradients and AdamW's two fp32 moments, divided as the strategy shards them (ZeRO-2: gradients and optimizer
state; FSDP / ZeRO-3: everything), plus activations per micro batch: for a checkpointed layer
(``longlora.train.activation_checkpointing``: every layer for ``full``, every other for ``alternate``) one bf16
hidden state, plus one layer's working set; for the others ~34·h bytes per token and layer
(Korthikanti et al., 2022, flash attention, no T² scores); and the fp32 logits and their gradient.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
from omegaconf import DictConfig

# Published configs of the hub encoders the SimCSE configs name (their config.json on the hub), so a dry
# run needs no download.
HUB_ENCODERS: dict[str, dict[str, int]] = {
    "bert-base-uncased": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2),
    "bert-large-uncased": dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096, max_position_embeddings=512, type_vocab_size=2),
    "roberta-base": dict(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1),
    "roberta-large": dict(vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096, max_position_embeddings=514, type_vocab_size=1),
}
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Plan:
    """What one train stage would run."""

    stage: str
    model: str
    total_params: int
    trainable_params: int
    world_size: int
    per_device_batch: int
    accumulation: int
    tokens_per_step: int
    strategy: str
    precision: str
    mem_gib_per_gpu: float

    def table(self) -> str:
        rows = [("stage", self.stage), ("model", self.model), ("total params", f"{self.total_params:,}"),
                ("trainable params", f"{self.trainable_params:,} ({100 * self.trainable_params / self.total_params:.2f}%)"),
                ("devices × nodes", self.world_size), ("per-device batch", self.per_device_batch),
                ("accumulation", self.accumulation), ("tokens / optimizer step", f"{self.tokens_per_step:,}"),
                ("strategy", self.strategy), ("precision", self.precision),
                ("memory / GPU (estimate)", f"{self.mem_gib_per_gpu:.1f} GiB")]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"| {k:<{width}} | {v} |" for k, v in rows)


def _memory_bytes(frozen: int, trainable: int, weight_bytes: int, strategy: str, world: int, act: float) -> float:
    w_frozen, w_train, grads, optim = frozen * weight_bytes, trainable * 4, trainable * 4, trainable * 8
    if strategy in ("fsdp", "deepspeed_stage_3"):
        w_frozen, w_train, grads, optim = (x / world for x in (w_frozen, w_train, grads, optim))
    elif strategy == "deepspeed_stage_2":
        grads, optim = grads / world, optim / world
    return w_frozen + w_train + grads + optim + act


def _world(cfg: DictConfig) -> int:
    return int(cfg.run.devices) * int(cfg.run.num_nodes)


@lru_cache(maxsize=4)
def _gguf_config(folder: str, gguf_file: str):
    """The architecture config stored in a GGUF file (parsing it takes seconds; read once)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder, gguf_file=gguf_file)


def _llama_meta(cfg: DictConfig):
    from transformers import LlamaConfig, LlamaForCausalLM

    from repro.config import to_dataclass
    from repro.models.longlora import apply_position_interpolation, gguf_folder
    from repro.schemas import ModelConfig

    m = to_dataclass(cfg.longlora.model, ModelConfig)
    if m.source == "gguf":
        config = copy.deepcopy(_gguf_config(str(gguf_folder(m.gguf_package)), m.gguf_file))
    else:
        vocab = 32000 if m.source == "hub" else int(cfg.longlora.data.tokenizer.vocab_size)
        config = LlamaConfig(vocab_size=vocab, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
                             num_attention_heads=m.num_heads, num_key_value_heads=m.num_kv_heads,
                             intermediate_size=m.intermediate_size, max_position_embeddings=m.original_context,
                             rope_parameters={"rope_type": "default", "rope_theta": float(m.rope_theta)},
                             tie_word_embeddings=False)
    apply_position_interpolation(config, int(cfg.longlora.train.context_length), m.original_context)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return model, config, m


def check_derived(cfg: DictConfig) -> None:
    """Fail now, naming the keys, on the problems :func:`repro.check.derived_problems` finds (an S2 group
    size that does not divide the training context, Position Interpolation's contexts)."""
    from repro.check import derived_problems
    from repro.config import ConfigError

    problems = derived_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


def longlora_plan(cfg: DictConfig) -> Plan:
    """The LongLoRA train stage's plan (model built on the meta device with its adapter)."""
    from repro.config import to_dataclass
    from repro.lit.causal_lm import resolve_batch
    from repro.models.longlora import apply_adapter
    from repro.scale import resolve_strategy
    from repro.schemas import AdapterConfig, TrainConfig

    train = resolve_batch(to_dataclass(cfg.longlora.train, TrainConfig), _world(cfg))
    check_derived(cfg)
    model, config, m = _llama_meta(cfg)
    adapter = to_dataclass(cfg.longlora.adapter, AdapterConfig)
    with torch.device("meta"):
        model = apply_adapter(model, adapter)
    params = {id(p): p for p in model.parameters()}.values()  # tied weights once
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    strategy = resolve_strategy(str(cfg.run.strategy), adapter.mode, _world(cfg))
    tokens = train.batch_size * train.context_length
    h, layers = config.hidden_size, config.num_hidden_layers
    # longlora.train.activation_checkpointing: a checkpointed layer keeps its bf16 input, one layer is recomputed
    kept = {"none": 0, "full": layers, "alternate": (layers + 1) // 2}[train.activation_checkpointing]
    act = kept * tokens * h * 2 + (layers - kept) * tokens * 34 * h + (tokens * 34 * h if kept else 0)
    act += tokens * config.vocab_size * 4 * 2  # fp32 logits and their gradient
    mem = _memory_bytes(total - trainable, trainable, _BYTES[m.dtype], strategy, _world(cfg), act)
    return Plan("longlora_train", f"{m.source}:{m.name_or_path or m.gguf_file if m.source != 'tiny' else 'tiny'}"
                f" @ {train.context_length}", total, trainable, _world(cfg), train.batch_size, train.grad_accum,
                train.global_batch_size * train.context_length if train.global_batch_size
                else tokens * train.grad_accum * _world(cfg), strategy, train.precision, mem / 2**30)


def _encoder_config(enc: DictConfig, data: DictConfig) -> dict[str, int]:
    import json

    if enc.source == "hub":
        if enc.name_or_path not in HUB_ENCODERS:
            raise ValueError(f"simcse.encoder.name_or_path={enc.name_or_path!r}: no known shape for a dry run; "
                             f"known: {sorted(HUB_ENCODERS)}")
        return HUB_ENCODERS[enc.name_or_path]
    if enc.source == "package":
        from repro.models.longlora import gguf_folder

        raw = json.loads((gguf_folder(enc.package) / enc.subfolder / "config.json").read_text())
        keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size")
        return {k: int(raw[k]) for k in keys}
    return dict(vocab_size=int(data.get("vocab_size", 2000)), hidden_size=int(enc.hidden_size),
                num_hidden_layers=int(enc.num_layers), num_attention_heads=int(enc.num_heads),
                intermediate_size=int(enc.intermediate_size),
                max_position_embeddings=int(enc.max_position_embeddings), type_vocab_size=2)


def simcse_plan(cfg: DictConfig, run: str) -> Plan:
    """The SimCSE train stage's plan for ``simcse.runs.<run>``: BERT without its pooling layer (as the
    reference builds it) plus the MLP head, every parameter trained, no accumulation."""
    from transformers import BertConfig, BertModel

    from repro.scale import split_global_batch
    from repro.simcse_runs import run_encoder_config, run_train_config

    sc = cfg.simcse
    train = run_train_config(cfg, run)  # simcse.train with the run's diff (as the train stage merges it)
    enc = run_encoder_config(cfg, run)  # simcse.encoder with the run's `encoder:` overrides
    if enc.gguf_file:  # a decoder as encoder (LLM2Vec-style SmolLM2): the GGUF file holds its shape
        from transformers import AutoModel

        from repro.models.longlora import gguf_folder

        config = copy.deepcopy(_gguf_config(str(gguf_folder(enc.package) / (enc.subfolder or "")), enc.gguf_file))
        shape = {"hidden_size": int(config.hidden_size), "num_hidden_layers": int(config.num_hidden_layers)}
        with torch.device("meta"):
            model = AutoModel.from_config(config)  # the base model, no LM head (as the train stage loads it)
    else:
        shape = _encoder_config(enc, sc.data)
        with torch.device("meta"):
            model = BertModel(BertConfig(**shape), add_pooling_layer=False)
    mlp_params = 0
    if str(enc.pooler) == "cls":  # the MLP head exists for the CLS pooler only (SentenceEncoder)
        mlp_params = shape["hidden_size"] * shape["hidden_size"] + shape["hidden_size"]
    total = sum(p.numel() for p in model.parameters()) + mlp_params  # parameters() lists tied weights once
    global_batch = int(train.batch_size)  # global, as the paper states it
    split = split_global_batch(global_batch, _world(cfg), key=f"simcse.runs.{run}.batch_size")
    sentences = 3 if train.mode == "sup" else 2
    tokens = split.per_device * sentences * int(enc.max_length)
    h, layers = shape["hidden_size"], shape["num_hidden_layers"]
    act = layers * tokens * 34 * h
    strategy = "ddp" if _world(cfg) > 1 and str(cfg.run.strategy) == "auto" else str(cfg.run.strategy)
    mem = _memory_bytes(0, total, 4, strategy, _world(cfg), act)
    return Plan(f"simcse_train@{run}", f"{enc.source}:{enc.name_or_path}", total, total, _world(cfg),
                split.per_device, 1, global_batch * sentences * int(enc.max_length), strategy,
                str(train.precision), mem / 2**30)


def print_plan(plan: Plan) -> None:
    print(plan.table(), flush=True)
    print(f"dry run: {asdict(plan)}", flush=True)
