"""The LongLoRA stages: prepare data → base model → fine-tune (PI + S2-Attn + LoRA+); evaluate is in
:mod:`repro.workflows.longlora_eval`.

Each function takes the validated config and a :class:`repro.cli.StageContext` and writes to the
paths ``dvc.yaml`` declares (under DVC) or to the Hydra job folder (in a sweep). The recipe follows
LongLoRA §3–4: Position Interpolation to the target context, S2-Attn during training only, LoRA on
q,k,v,o with trainable embeddings and norms, and evaluation with full attention.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from repro.cli import StageContext
from repro.config import to_dataclass
from repro.fingerprint import fingerprint as content_fingerprint
from repro.resume import code_version, prune_stale_checkpoints, resumable_run_id
from repro.schemas import BaseTrainConfig, LMDataConfig
from repro.stages import STAMP, reuse_or_cache, write_stamp
from repro.tracking import init_run, is_global_zero, make_run_name, record_run, write_csv, write_metrics

log = logging.getLogger(__name__)
PAPER = "longlora"


def _data_identity(data: DictConfig) -> list[dict]:
    """What the data is made of beyond its config: generator version, local files' content digests."""
    from repro.data.text_sources import source_identity

    typed = to_dataclass(data, LMDataConfig)
    return [source_identity(src) for src in (typed.train, *typed.eval_sets.values())]


def _fingerprint(*parts: Any) -> str:
    return content_fingerprint(list(parts), length=12)


def base_data_identity(ll: DictConfig) -> list:
    """What the base model is built from: the training source and tokenizer, never the fine-tuning context.

    The base stands in for the pretrained model LongLoRA starts from (Llama-2 at 4k), which is one model
    for every target context (Table 3); so a variant that only changes ``longlora.train`` reuses it.
    """
    from repro.data.text_sources import source_identity

    return [ll.data.train, ll.data.tokenizer, source_identity(to_dataclass(ll.data, LMDataConfig).train),
            ll.model.source, ll.model.name_or_path]


def base_pretrain_blocks(ll: DictConfig) -> tuple[int, int] | None:
    """``(original_context, max_tokens)`` of the tiny base's pretraining data; ``None`` for a pretrained model.

    At most one pass of ``pretrain_steps x batch_size`` blocks (less when the source is smaller: then epochs).
    """
    if ll.model.source != "tiny":
        return None
    context = int(ll.model.original_context)
    return context, int(ll.base.pretrain_steps) * int(ll.base.batch_size) * context


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes."""

    data: Path
    base: Path
    data_fp: str
    base_fp: str
    run_fp: str
    finetuned: Path
    base_ckpt: Path
    ckpt: Path
    metrics: Path
    plots: Path

    @classmethod
    def of(cls, cfg: DictConfig, ctx: StageContext) -> Paths:
        ll = cfg.longlora
        data_fp = _fingerprint(ll.data, _data_identity(ll.data), ll.train.context_length, ll.model.source,
                               ll.model.name_or_path, base_pretrain_blocks(ll))
        base_fp = _fingerprint(base_data_identity(ll), ll.model, ll.base, cfg.seed)
        run_fp = _fingerprint(base_fp, ll.attention, ll.adapter, ll.train, cfg.seed, code_version(),
                              int(cfg.run.devices) * int(cfg.run.num_nodes))
        data = Path(cfg.run.data_dir) / "longlora"
        base = Path(cfg.run.model_dir) / "longlora" / "base"
        if ctx.sweep:
            # Sweep jobs and ablation variants reuse the pipeline's data and base model when their
            # config fingerprints match, else shared content-addressed caches.
            data = reuse_or_cache(data, ctx.cache_root / f"longlora-data-{data_fp}", data_fp)
            base = reuse_or_cache(base, ctx.cache_root / f"longlora-base-{base_fp}", base_fp)
        out = ctx.out_root
        return cls(
            data=data,
            base=base,
            data_fp=data_fp,
            base_fp=base_fp,
            run_fp=run_fp,
            finetuned=out / cfg.run.model_dir / "longlora" / "finetuned",
            base_ckpt=Path(cfg.run.model_dir if not ctx.sweep else ctx.cache_root) / "longlora-checkpoints"
            / f"base-{_fingerprint(base_fp, code_version())}",
            # Checkpoints are keyed by the run's config: a rerun of the same config resumes, a changed
            # config starts afresh instead of resuming someone else's optimizer state.
            ckpt=out / cfg.run.model_dir / "longlora-checkpoints" / f"finetune-{run_fp}",
            metrics=out / cfg.run.metrics_dir / "longlora",
            plots=out / cfg.run.plots_dir / "longlora",
        )


def run_tags(cfg: DictConfig) -> dict[str, Any]:
    ll = cfg.longlora
    attn = "full" if ll.attention.pattern == "full" else f"s2-{ll.attention.shift}{'-roll' if ll.attention.wrap else ''}"
    tags = {"model": ll.model.source, "attn": attn, "adapter": ll.adapter.mode, "ctx": ll.train.context_length}
    if cfg.ablations.variant:
        tags["variant"] = f"{cfg.ablations.name}/{cfg.ablations.variant}"
    return tags


# --- prepare --------------------------------------------------------------------------------------


def prepare(cfg: DictConfig, ctx: StageContext) -> dict[str, Any]:
    """Tokenise and pack the training data; write evaluation token streams (cached by fingerprint)."""
    from repro.data.lm_data import prepare_lm_data
    from repro.models.longlora import gguf_folder

    ll = cfg.longlora
    paths = Paths.of(cfg, ctx)
    model_path, gguf_file = ll.model.name_or_path, None
    if ll.model.source == "gguf":
        model_path, gguf_file = str(gguf_folder(ll.model.gguf_package)), ll.model.gguf_file
    data_cfg = to_dataclass(ll.data, LMDataConfig)
    if data_cfg.max_train_tokens < 0:  # derived: steps x global batch x context, plus the stated margin
        from repro.data.lm_data import train_token_cap

        global_batch = int(ll.train.get("global_batch_size") or 0) or (
            int(ll.train.batch_size) * int(ll.train.grad_accum) * int(cfg.run.get("devices") or 1))
        data_cfg.max_train_tokens = train_token_cap(ll.train.max_steps, global_batch, ll.train.context_length,
                                                    data_cfg.train_token_margin)
    prepared = prepare_lm_data(
        data_cfg, paths.data, int(ll.train.context_length),
        model_name_or_path=model_path, model_gguf_file=gguf_file, base_blocks=base_pretrain_blocks(ll),
    )
    write_stamp(paths.data, paths.data_fp)
    log.info("prepared LongLoRA data in %s: %s", paths.data, prepared.to_dict())
    return prepared.to_dict()


# --- base model -----------------------------------------------------------------------------------


def build_base(cfg: DictConfig, ctx: StageContext) -> Path:
    """Materialise the base model folder (pretraining the tiny model from scratch when needed)."""
    from transformers import AutoTokenizer

    from repro.data.packed import PackedBlocks
    from repro.lit.causal_lm import CausalLMModule, PackedBlocksDataModule, build_trainer, fit_resumable
    from repro.models.longlora import build_base_model, materialize_base
    from repro.schemas import ModelConfig, TrainConfig

    ll = cfg.longlora
    paths = Paths.of(cfg, ctx)
    model_cfg = to_dataclass(ll.model, ModelConfig)
    if ctx.sweep and (paths.base / STAMP).is_file():
        if model_cfg.source == "tiny":  # a reused base must speak the data's tokens
            ours, theirs = (AutoTokenizer.from_pretrained(p).get_vocab() for p in (paths.data / "tokenizer", paths.base))
            if ours != theirs:
                raise ValueError(f"the base model in {paths.base} has another vocabulary than {paths.data / 'tokenizer'}; "
                                 f"delete {paths.base} and rerun")
        return paths.base
    if model_cfg.source != "tiny":
        materialize_base(model_cfg, paths.base)
        write_stamp(paths.base, paths.base_fp)
        return paths.base

    tokenizer = AutoTokenizer.from_pretrained(paths.data / "tokenizer")
    base_cfg = to_dataclass(ll.base, BaseTrainConfig)
    model = build_base_model(model_cfg, vocab_size=len(tokenizer))
    train_cfg = TrainConfig(
        context_length=model_cfg.original_context, max_steps=base_cfg.pretrain_steps, batch_size=base_cfg.batch_size,
        grad_accum=1, lr=base_cfg.lr, warmup_steps=base_cfg.warmup_steps, seed=int(cfg.seed),
        log_every_n_steps=10, ckpt_every_n_steps=max(base_cfg.pretrain_steps // 4, 1),
        precision=ll.train.precision,
    )
    base_data = paths.data / "pretrain" / "train.npy"
    if not base_data.is_file():
        raise FileNotFoundError(f"no base pretraining data {base_data}; run the longlora_prepare stage first")
    dataset = PackedBlocks(base_data)  # the training source at original_context (base_pretrain_blocks)
    run = init_run(cfg, PAPER, "base", make_run_name(PAPER, "base", cfg.run.profile, {"ctx": train_cfg.context_length}),
                   ctx.group)
    try:
        from lightning.pytorch.loggers import WandbLogger

        module = CausalLMModule(model, train_cfg, {"model": asdict(model_cfg), "base": asdict(base_cfg)})
        trainer = build_trainer(train_cfg, paths.base_ckpt, loggers=[WandbLogger(experiment=run)],
                                accelerator=cfg.run.accelerator)
        fit_resumable(trainer, module, PackedBlocksDataModule(train_cfg, dataset=dataset), paths.base_ckpt)
    except BaseException:
        run.finish(exit_code=1)  # any failure marks the W&B run failed
        raise
    else:
        run.finish()
    paths.base.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(paths.base)
    tokenizer.save_pretrained(paths.base)
    write_stamp(paths.base, paths.base_fp)
    shutil.rmtree(paths.base_ckpt, ignore_errors=True)  # finished: a rerun pretrains afresh
    return paths.base


# --- fine-tune ------------------------------------------------------------------------------------


def _is_sharded(trainer) -> bool:
    """Whether the strategy shards parameters (FSDP, DeepSpeed ZeRO-3), so no rank holds the whole model."""
    name = type(trainer.strategy).__name__
    return name == "FSDPStrategy" or (name == "DeepSpeedStrategy" and trainer.strategy.zero_stage_3)


def _decoder_layer_classes(model: torch.nn.Module) -> tuple[type, ...]:
    """The decoder-layer classes of a model: FSDP's wrapping unit (one shard group per layer)."""
    return tuple({type(m) for m in model.modules() if type(m).__name__.endswith("DecoderLayer")})


def train(cfg: DictConfig, ctx: StageContext, extra_callbacks: list | None = None) -> dict[str, Any]:
    """Fine-tune the base model at the target context (LongLoRA §3, §4.1) and save adapter + merged model.

    ``extra_callbacks`` (Lightning callbacks) are added to the trainer, e.g. periodic evaluation.
    """
    from lightning.pytorch.loggers import WandbLogger
    from transformers import AutoTokenizer

    from repro.data.lm_data import PackedBlocks
    from repro.derived import pi_factor
    from repro.lit.causal_lm import (
        CausalLMModule,
        DivergenceError,
        PackedBlocksDataModule,
        build_trainer,
        fit_resumable,
        resolve_batch,
    )
    from repro.lit.history import HistoryRecorder
    from repro.models.hf_common import torch_dtype
    from repro.models.longlora import build_longlora_model, trainable_parameter_names
    from repro.models.longlora_export import export_merged, save_trained
    from repro.precision import merge_in_fp32, upcast_trainable
    from repro.scale import build_strategy, resolve_strategy
    from repro.schemas import AdapterConfig, ModelConfig, S2AttnConfig, TrainConfig

    ll = cfg.longlora
    paths = Paths.of(cfg, ctx)
    model_cfg = to_dataclass(ll.model, ModelConfig)
    adapter_cfg = to_dataclass(ll.adapter, AdapterConfig)
    attn_cfg = to_dataclass(ll.attention, S2AttnConfig)
    world = int(cfg.run.devices) * int(cfg.run.num_nodes)
    train_cfg = resolve_batch(to_dataclass(ll.train, TrainConfig), world)
    # Verify the prepared blocks first: corrupt data fails here, naming the file, before the model and a W&B run.
    blocks = PackedBlocks(paths.data / "train.npy")
    tokenizer = AutoTokenizer.from_pretrained(paths.data / "tokenizer")
    model = build_longlora_model(model_cfg, adapter_cfg, train_cfg.context_length, base_dir=paths.base,
                                 attention_cfg=attn_cfg)
    for stale in prune_stale_checkpoints(paths.ckpt.parent, paths.ckpt, float(cfg.run.ckpt_keep_days)):
        log.info("removed abandoned checkpoint folder %s (untouched > run.ckpt_keep_days)", stale)
    upcast_trainable(model)  # fp32 master weights for what trains; the frozen base stays in model.dtype
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    name = make_run_name(PAPER, "train", cfg.run.profile, run_tags(cfg))
    run = init_run(cfg, PAPER, "train", name, ctx.group, run_id=resumable_run_id(paths.ckpt) if is_global_zero() else None)
    recorder = HistoryRecorder(("train/loss", "train/lr", "train/tokens_per_s", "train/peak_mem_mb"))
    start = time.perf_counter()
    try:
        config_dicts = {"model": asdict(model_cfg), "adapter": asdict(adapter_cfg), "attention": asdict(attn_cfg)}
        module = CausalLMModule(model, train_cfg, config_dicts)
        datamodule = PackedBlocksDataModule(train_cfg, dataset=blocks)
        trainer = build_trainer(train_cfg, paths.ckpt, loggers=[WandbLogger(experiment=run)],
                                callbacks=[recorder, *(extra_callbacks or [])],
                                accelerator=cfg.run.accelerator, devices=int(cfg.run.devices),
                                num_nodes=int(cfg.run.num_nodes),
                                strategy=build_strategy(resolve_strategy(str(cfg.run.strategy), adapter_cfg.mode, world),
                                                        _decoder_layer_classes(model)))
        try:
            resumed = fit_resumable(trainer, module, datamodule, paths.ckpt)
        except DivergenceError as exc:
            # Stop loudly: keep the checkpoints (the last finite state), mark the run failed everywhere.
            failed = {"status": "failed", "error": str(exc), "train/steps": int(trainer.global_step)}
            run.summary.update(failed)
            write_metrics(paths.metrics / "train.json", failed)
            raise
        rows = recorder.rows
        tps = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r]
        mem = [r["peak_mem_mb"] for r in rows if "peak_mem_mb" in r]
        metrics = {
            "train/final_loss": rows[-1]["loss"] if rows else float("nan"),
            "train/steps": int(trainer.global_step),
            "train/tokens_per_s": float(np.median(tps)) if tps else float("nan"),
            "train/peak_mem_mb": float(max(mem)) if mem else float("nan"),
            "train/trainable_params": int(n_trainable),
            "train/total_params": int(n_total),
            "train/pi_factor": pi_factor(train_cfg.context_length, model_cfg.original_context),
            "train/wall_s": round(time.perf_counter() - start, 2),
            "train/resumed": bool(resumed),
        }
        run.summary.update(metrics)
        record_run(run, paths.metrics / "runs" / "train.json")
        log.info("trainable parameters: %d of %d (%s)", n_trainable, n_total,
                 ", ".join(sorted({n.split(".")[-2] for n in trainable_parameter_names(model)})))
    except BaseException:
        run.finish(exit_code=1)  # any failure marks the W&B run failed
        raise
    else:
        run.finish()
    if _is_sharded(trainer):
        # FSDP / ZeRO-3 hold a shard of every weight per rank: gather the full state (a collective, so every
        # rank takes part), and give it to a fresh copy of the model on rank zero for the export.
        state = trainer.strategy.lightning_module_state_dict()
        if trainer.is_global_zero:
            model = build_longlora_model(model_cfg, adapter_cfg, train_cfg.context_length, base_dir=paths.base,
                                         attention_cfg=attn_cfg)
            upcast_trainable(model)
            missing = model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, strict=False)
            if missing.unexpected_keys:
                raise RuntimeError(f"gathered state has unknown keys: {missing.unexpected_keys[:5]}")
    if not trainer.is_global_zero:  # one export, one metrics file, one cleanup: rank zero's
        return metrics
    metrics["status"] = "ok"
    save_trained(model, paths.finetuned / "adapter")
    export_merged(merge_in_fp32(model, torch_dtype(model_cfg.dtype, "longlora.model.dtype")),
                  paths.finetuned / "merged", tokenizer)
    log.info("exported merged model to %s (world_size=%d, strategy=%s)", paths.finetuned / "merged",
             trainer.world_size, type(trainer.strategy).__name__)
    # Checkpoints exist to survive a failure; once the outputs are saved they go, so that a rerun
    # (e.g. after a code change) trains afresh instead of resuming a finished run.
    shutil.rmtree(paths.ckpt, ignore_errors=True)
    write_stamp(paths.finetuned, paths.run_fp)  # what built it: an ablation variant of the same run reuses it
    write_metrics(paths.metrics / "train.json", metrics)
    if rows:
        write_csv(paths.plots / "train_loss.csv", [{"step": r["step"], "loss": r.get("loss", float("nan")),
                                                    "lr": r.get("lr", float("nan"))} for r in rows])
    return metrics
